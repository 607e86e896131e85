"""SMSClub (Ukraine) adapter, JSON API.

API document: tests/fixtures/smsclub/smsclub-json-api.txt (SMSClub "API SMS integration", JSON).
Every call is a POST with `Authorization: Bearer <token>` to {base} (https://im.smsclub.mobi):
- /sms/send       {phone: [...<=100], message, src_addr}
                  -> {success_request: {info: {id: phone}, add_info: {phone: error}}}
- /sms/status     {id_sms: [...<=100]}   -> {success_request: {info: {id: STATUS}}}
- /sms/originator (no body)              -> {success_request: {info: [alpha names]}}
- /sms/balance    (no body)              -> {success_request: {info: {money, currency}}}
HTTP 400 input validation, 401 authentication, 429 throttled, 453 the same
message again within 2 minutes (already sent: not a failure), 5xx unavailable.
No delivery callbacks: statuses are pulled.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
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
from worker.gateways.parsing import digits, lower_keys

DUPLICATE_NOTE = "smsclub: duplicate within 2 minutes, already sent"
_ERROR_KEYS = ("error", "message", "error_request", "errors", "description", "info", "detail")
_MAX_ERROR_TEXT = 200
# The balance example of the document is not JSON (`"info": ["money": "8111.1700", ...]`).
_MONEY_RE = re.compile(r'"?money"?\s*:\s*"?\s*(-?[0-9]+(?:[.,][0-9]+)?)', re.IGNORECASE)
_CURRENCY_RE = re.compile(r'"?currency"?\s*:\s*"?\s*([A-Za-z]{3})', re.IGNORECASE)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    size = max(1, size)
    return [items[i : i + size] for i in range(0, len(items), size)]


def _first_text(value: Any, depth: int = 0) -> str:
    """The first human-readable string in an error body of any shape."""
    if depth > 4 or value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        lowered = lower_keys(value)
        for key in _ERROR_KEYS:
            text = _first_text(lowered.get(key), depth + 1)
            if text:
                return text
        for item in lowered.values():
            text = _first_text(item, depth + 1)
            if text:
                return text
        return ""
    if isinstance(value, list):
        return "; ".join(t for t in (_first_text(v, depth + 1) for v in value[:5]) if t)
    return ""


def _pairs(info: Any) -> dict[str, Any]:
    """`info` as one lowercase dict: a dict, a list of dicts, or "key: value" strings."""
    if isinstance(info, dict):
        return lower_keys(info)
    merged: dict[str, Any] = {}
    if isinstance(info, list):
        for item in info:
            if isinstance(item, dict):
                merged.update(lower_keys(item))
            elif isinstance(item, str) and ":" in item:
                key, _, value = item.partition(":")
                merged[key.strip().strip("\"'").lower()] = value.strip().strip("\"'")
    return merged


def _as_dict(value: Any) -> dict[Any, Any] | None:
    """A dict, a list of dicts (merged) or of bare strings (keys); None for other shapes."""
    if value in (None, "", []):
        return {}
    if isinstance(value, dict):
        return value
    if not isinstance(value, list):
        return None
    merged: dict[Any, Any] = {}
    for item in value:
        if isinstance(item, dict):
            merged.update(item)
        elif isinstance(item, str | int) and not isinstance(item, bool):
            merged[str(item)] = ""
    return merged


class SmsClubAdapter(ProviderAdapter):
    name = "smsclub"
    duplicate_window_seconds: ClassVar[float | None] = 120.0  # 453: duplicate within 2 min
    status_map: ClassVar[Mapping[str, Status | None]] = {
        "ENROUTE": Status.SENT,
        "DELIVRD": Status.DELIVERED,
        "EXPIRED": Status.EXPIRED,
        "UNDELIV": Status.UNDELIVERED,
        "REJECTD": Status.REJECTED,
    }

    def __init__(
        self,
        *,
        token: str,
        sender: str | None = None,
        base_url: str = "https://im.smsclub.mobi",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url=base_url, timeout=timeout, client=client)
        self._token = token
        self.sender = sender

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> SmsClubAdapter:
        return cls(
            token=settings.secret("token"),
            sender=settings.sender,
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            client=client,
        )

    # -- send -------------------------------------------------------------
    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """One request per (text, sender) group of at most `max_batch` numbers.

        If a later request of a split batch fails, the error propagates and the
        whole batch is retried; the already sent group then comes back as 453
        (duplicate) and is reported as sent, not sent twice.
        """
        results: list[SendResult | None] = [None] * len(batch)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, msg in enumerate(batch):
            groups.setdefault((msg.text, self._sender_for(msg)), []).append(index)
        for (text, sender), indexes in groups.items():
            for chunk in _chunks(indexes, self.max_batch):
                chunk_msgs = [batch[i] for i in chunk]
                for i, result in zip(
                    chunk, self._send_group(chunk_msgs, text, sender), strict=True
                ):
                    results[i] = result
        return [r for r in results if r is not None]

    def _sender_for(self, msg: OutgoingMessage) -> str:
        sender = (msg.sender or self.sender or "").strip()
        if not sender:
            raise PermanentProviderError("smsclub: no sender (src_addr) configured")
        return sender

    def _send_group(
        self, msgs: Sequence[OutgoingMessage], text: str, sender: str
    ) -> list[SendResult]:
        payload = {"phone": [m.to for m in msgs], "message": text, "src_addr": sender}
        response = self._request("POST", "/sms/send", json=payload, headers=self._headers())
        if response.status_code == 453:
            raw = self._safe_body(response)
            return [
                SendResult(m.ref, Status.SENT, None, error=DUPLICATE_NOTE, raw=raw, duplicate=True)
                for m in msgs
            ]
        self._check_http(response)
        info, add_info = self._send_answer(self._json(response))
        return self._match(msgs, info, add_info)

    def _send_answer(self, data: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """Ids by number (in id order) and errors by number, from the send answer."""
        success = self._success(data)
        raw_info = _as_dict(success.get("info"))
        raw_add = _as_dict(success.get("add_info"))
        if raw_info is None or raw_add is None:
            raise RetryableProviderError("smsclub: send answer of an unexpected shape", raw=data)
        pairs = [(str(k).strip(), digits(v)) for k, v in raw_info.items()]
        if all(pid.isdecimal() for pid, _ in pairs):
            pairs.sort(key=lambda pair: int(pair[0]))
        ids: dict[str, deque[str]] = {}
        for pid, phone in pairs:
            if pid:
                ids.setdefault(phone, deque()).append(pid)
        errors = {digits(k): _first_text(v) or "refused" for k, v in raw_add.items()}
        return ids, errors

    def _match(
        self,
        msgs: Sequence[OutgoingMessage],
        ids: dict[str, deque[str]],
        errors: dict[str, str],
    ) -> list[SendResult]:
        results = []
        for msg in msgs:
            phone = digits(msg.to)
            queue = ids.get(phone)
            if queue:
                pid = queue.popleft()
                raw = {"id": pid, "phone": msg.to}
                results.append(SendResult(msg.ref, Status.SENT, pid, raw=raw))
                continue
            reason = errors.get(phone) or "no message id returned for this number"
            results.append(
                SendResult(
                    msg.ref,
                    Status.REJECTED,
                    None,
                    error=f"smsclub rejected the number: {reason}"[:_MAX_ERROR_TEXT],
                    raw={"phone": msg.to, "error": reason},
                )
            )
        return results

    # -- status -----------------------------------------------------------
    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        """Reports for the ids the gateway knows; an id absent from its answer gives none."""
        wanted = list(dict.fromkeys(str(pid).strip() for pid in provider_ids if str(pid).strip()))
        reports: list[StatusReport] = []
        for chunk in _chunks(wanted, self.max_status_batch):
            reports.extend(self._status_chunk(chunk))
        return reports

    def _status_chunk(self, ids: Sequence[str]) -> list[StatusReport]:
        response = self._request(
            "POST", "/sms/status", json={"id_sms": list(ids)}, headers=self._headers()
        )
        self._check_http(response)
        data = self._json(response)
        info = _as_dict(self._success(data).get("info"))
        if info is None:
            raise RetryableProviderError("smsclub: status answer of an unexpected shape", raw=data)
        statuses = {str(k).strip(): v for k, v in info.items()}
        reports = []
        for pid in ids:
            if pid not in statuses:
                continue
            value = statuses[pid]
            if isinstance(value, dict):
                value = lower_keys(value).get("status")
            raw_status = "" if value is None else str(value).strip()
            reports.append(
                StatusReport(
                    provider_message_id=pid,
                    status=self.map_status(raw_status) if raw_status else None,
                    raw_status=raw_status,
                    raw={"id": pid, "status": statuses[pid]},
                )
            )
        return reports

    # -- balance and senders ------------------------------------------------
    def fetch_balance(self) -> Balance:
        response = self._request("POST", "/sms/balance", headers=self._headers())
        self._check_http(response)
        try:
            data = self._json(response)
        except RetryableProviderError:
            return self._balance_from_text(response.text)
        info = _pairs(self._success(data).get("info"))
        amount = to_float(info.get("money"))
        if amount is None:
            raise RetryableProviderError("smsclub: balance answer has no money", raw=data)
        currency = str(info.get("currency") or "").strip().upper() or "UAH"
        return Balance(amount=amount, unit=currency, raw=data)

    def _balance_from_text(self, text: str) -> Balance:
        """Read the document's literal (non-JSON) balance example; else retryable."""
        money = _MONEY_RE.search(text or "")
        amount = to_float(money.group(1)) if money else None
        if amount is None:
            snippet = self._scrub((text or "")[:80].replace("\n", " "))
            raise RetryableProviderError(f"smsclub: balance answer is not JSON: {snippet!r}")
        currency = _CURRENCY_RE.search(text)
        unit = currency.group(1).upper() if currency else "UAH"
        return Balance(amount=amount, unit=unit, raw={"text": self._scrub(text[:500])})

    def fetch_senders(self) -> list[str]:
        """The account's active alpha names (src_addr values the gateway accepts)."""
        response = self._request("POST", "/sms/originator", headers=self._headers())
        self._check_http(response)
        data = self._json(response)
        info = self._success(data).get("info")
        if isinstance(info, str):
            info = [info]
        elif isinstance(info, dict):
            info = list(info.values())
        elif info is None:
            info = []
        if not isinstance(info, list):
            raise RetryableProviderError("smsclub: sender answer of an unexpected shape", raw=data)
        names = (str(item).strip() for item in info if isinstance(item, str | int))
        return [name for name in names if name]

    # -- plumbing ---------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

    def _success(self, data: Any) -> dict[str, Any]:
        """The `success_request` object (or a bare body with `info`); else retryable."""
        body = lower_keys(data)
        success = lower_keys(body.get("success_request"))
        if success:
            return success
        if "info" in body:
            return body
        reason = self._scrub(_first_text(data))[:_MAX_ERROR_TEXT]
        raise RetryableProviderError(
            f"smsclub: answer without success_request{': ' + reason if reason else ''}",
            raw=data if isinstance(data, dict | list) else None,
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def _safe_body(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError):
            return {"text": self._scrub(response.text[:200])}

    def _error_text(self, response: httpx.Response) -> str:
        body = self._safe_body(response)
        text = _first_text(body) or response.text.strip()
        return self._scrub(" ".join(text.split()))[:_MAX_ERROR_TEXT]

    # -- error mapping (the one place) --------------------------------------
    def _check_http(self, response: httpx.Response) -> None:
        """400 validation and 401/403 auth are permanent; 429 and 5xx are the base's."""
        code = response.status_code
        if code < 400:
            return
        reason = self._error_text(response)
        suffix = f": {reason}" if reason else ""
        if code in (401, 403):
            raise PermanentProviderError(
                f"smsclub: HTTP {code}: the token was refused{suffix}", code=str(code)
            )
        if code == 400:
            raise PermanentProviderError(
                f"smsclub: HTTP 400: input validation error{suffix}", code="400"
            )
        raise PermanentProviderError(
            f"smsclub: HTTP {code}: request refused{suffix}", code=str(code)
        )
