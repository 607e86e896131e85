"""Keccel (DR Congo) adapter.

API document: tests/fixtures/keccel/keccel-api.txt (Keccel Messaging, v2).
- POST {base}/message.asp  JSON {token, to, from, message} -> {status, messageID, description}
- GET  {base}/delivery.asp {from, token, messageid}        -> {messageid, status}
- GET  {base}/balance.asp  {from, token}                   -> {balance, expiration, status}
- PUSH: GET <callback>?messageID=123456&status=DELIVERED|FAILED (a form or a
  JSON object body with the same fields is read the same way)

The document tables the GETs' parameters without saying where they go, and
says "both requests and responses are transmitted in JSON format"; the seed
SDK (pykeccelsms 0.2) sends them as a JSON body. So the adapter sends them both
as the query string and as a JSON body: either reading finds them.

Keccel answers HTTP 200 with `status: Rejected` and a description for errors,
so the description decides between a bad account (permanent for every
message) and a refused message (this message rejected).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import httpx

from producer.settings import ProviderSettings
from producer.status import Status
from worker.gateways.base import (
    Balance,
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    RetryableProviderError,
    SendResult,
    StatusReport,
    to_float,
)
from worker.gateways.parsing import lower_keys

# Descriptions that mean the account, not the message, is at fault.
_ACCOUNT_ERRORS = ("token", "auth", "credit", "balance", "expired", "inactive", "suspend")
_RETRYABLE_ERRORS = ("try again", "temporar", "maintenance", "busy", "timeout")


def parse_keccel_date(value: Any) -> datetime | None:
    """Keccel writes `31-Dec-2021 06:46:17`; tolerate ISO, a date alone and blanks."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    for fmt in ("%d-%b-%Y %H:%M:%S", "%d-%b-%Y %H:%M", "%d-%b-%Y", "%d/%m/%Y %H:%M:%S"):
        try:
            return datetime.strptime(text.title(), fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=None) if parsed.tzinfo else parsed


def _json_fields(body: bytes) -> dict[str, str]:
    """The fields of a JSON object body, as text; {} for any other body (a form,
    which the web process has already merged into the parameters, or garbage)."""
    if not body.lstrip().startswith(b"{"):
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, a 5000-digit number
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}


class KeccelAdapter(ProviderAdapter):
    name = "keccel"
    status_map: ClassVar[Mapping[str, Status | None]] = {
        "SENT": Status.SENT,
        "SUBMITTED": Status.SENT,
        "DELIVERED": Status.DELIVERED,
        "FAILED": Status.UNDELIVERED,
        "REJECTED": Status.REJECTED,
    }

    def __init__(
        self,
        *,
        token: str,
        sender: str | None = None,
        base_url: str = "https://api.keccel.com/sms/v2",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url=base_url, timeout=timeout, client=client)
        self._token = token
        self.sender = sender or "KECCEL"

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> KeccelAdapter:
        return cls(
            token=settings.secret("token"),
            sender=settings.sender,
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            client=client,
        )

    # -- send -------------------------------------------------------------
    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        return [self._send_one(msg) for msg in batch]

    def _send_one(self, msg: OutgoingMessage) -> SendResult:
        payload = {
            "token": self._token,
            "to": msg.to,
            "from": msg.sender or self.sender,
            "message": msg.text,
        }
        response = self._request("POST", "/message.asp", json=payload)
        self._check_http(response)
        data = lower_keys(self._json(response))
        raw_status = str(data.get("status") or "").strip()
        description = str(data.get("description") or "").strip()
        message_id = data.get("messageid")
        message_id = str(message_id).strip() if message_id not in (None, "") else None
        raw = self._scrub_raw({k: v for k, v in data.items() if k != "token"})
        if raw_status.upper() == "SENT" or (message_id and raw_status.upper() != "REJECTED"):
            if not message_id:
                raise RetryableProviderError("keccel: send accepted without a messageID", raw=raw)
            return SendResult(msg.ref, Status.SENT, message_id, raw=raw)
        self._raise_account_error(description, raw)
        return SendResult(
            msg.ref,
            Status.REJECTED,
            message_id,
            error="keccel rejected the message: "
            + (self._scrub(description) or raw_status or "no reason given"),
            raw=raw,
        )

    # -- status -----------------------------------------------------------
    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        return [self._status_one(pid) for pid in provider_ids]

    def _status_one(self, provider_id: str) -> StatusReport:
        params = {"from": self.sender, "token": self._token, "messageid": provider_id}
        response = self._get("/delivery.asp", params)
        self._check_http(response)
        data = lower_keys(self._json(response))
        raw_status = str(data.get("status") or "").strip()
        description = str(data.get("description") or "")
        if raw_status.upper() in ("ERROR", "REJECTED") or description:
            self._raise_account_error(description, data)
        if raw_status.upper() == "REJECTED":  # a refusal of the request, not a delivery status
            raise PermanentProviderError(
                f"keccel: status request refused: {self._scrub(description) or 'no reason'}"
            )
        return StatusReport(
            provider_message_id=str(data.get("messageid") or provider_id).strip(),
            status=self.map_status(raw_status),
            raw_status=raw_status,
            raw=data,
        )

    # -- balance ----------------------------------------------------------
    def fetch_balance(self) -> Balance:
        params = {"from": self.sender, "token": self._token}
        response = self._get("/balance.asp", params)
        self._check_http(response)
        data = lower_keys(self._json(response))
        if str(data.get("status") or "").strip().upper() in ("ERROR", "REJECTED"):
            self._raise_account_error(str(data.get("description") or "token"), data)
        amount = to_float(data.get("balance"))
        if amount is None:
            raise RetryableProviderError("keccel: balance answer has no balance", raw=data)
        state = str(data.get("status") or "").strip().lower()
        return Balance(
            amount=amount,
            unit="credits",
            expires_at=parse_keccel_date(data.get("expiration")),
            active=None if not state else state == "active",
            raw=data,
        )

    # -- push -------------------------------------------------------------
    def parse_callback(self, params: Mapping[str, str], body: bytes = b"") -> list[StatusReport]:
        """The documented query string; a JSON object body fills in what it lacks."""
        fields = {**_json_fields(body), **{str(k): str(v) for k, v in params.items()}}
        lowered = {k.lower(): v for k, v in fields.items()}
        message_id = lowered.get("messageid", "").strip()
        raw_status = lowered.get("status", "").strip()
        if not message_id or not raw_status:
            raise PermanentProviderError("keccel callback needs messageID and status")
        return [
            StatusReport(
                provider_message_id=message_id,
                status=self.map_status(raw_status),
                raw_status=raw_status,
                raw=fields,
            )
        ]

    # -- plumbing and error mapping (the one place) ---------------------------
    def _get(self, path: str, params: dict[str, str]) -> httpx.Response:
        """A GET with its parameters both as the query string and as a JSON body
        (see the module docstring: the document leaves the place open)."""
        return self._request("GET", path, params=params, json=params)

    def _check_http(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise PermanentProviderError(
                f"keccel: HTTP {response.status_code}: the token was refused",
                code=str(response.status_code),
            )
        if response.status_code >= 400:
            raise PermanentProviderError(
                f"keccel: HTTP {response.status_code}: request refused",
                code=str(response.status_code),
            )

    def _secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def _raise_account_error(self, description: str, raw: Any) -> None:
        lowered = description.lower()
        clean = self._scrub(description)
        safe_raw = self._scrub_raw(raw) if isinstance(raw, dict) else None
        if any(word in lowered for word in _RETRYABLE_ERRORS):
            raise RetryableProviderError(f"keccel: {clean}", raw=safe_raw)
        if any(word in lowered for word in _ACCOUNT_ERRORS):
            raise PermanentProviderError(f"keccel: {clean}", raw=safe_raw)
