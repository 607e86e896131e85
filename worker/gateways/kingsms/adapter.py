"""KING SMS PRO (Togo) adapter.

API document: tests/fixtures/kingsms/kingsmspro-api.txt (KING SMS PRO RESTful API, v1, French).
Every call is a POST with the headers `APIKEY` and `CLIENTID` and form-encoded parameters:
- POST {base}/sms/send        from, to, type (0 text, 1 flash), message, dlr (yes|no), url
                              -> {messageId, sender, to, route, sms_count, amount, Currency, status}
- POST {base}/sms/trace       messageId -> {messageId, sender, destination, route, status}
- POST {base}/sms/reports     date_start, date_end (YYYY-mm-dd), type (1 platform, 2 API)
- POST {base}/account/details -> the account's balance (answer not documented)
- PUSH: when dlr=yes, the gateway calls `url` with the message's final status (format not
  documented: query, form or JSON with messageId and status are all read).

Answers may come bare or wrapped as {"result": {...}} (the document prints `result: {...}`).
Statuses are the three- or four-letter codes of the document's Appendix A; a send answered
with a refusal code is either a refused message (BLO, INV, LEN, DUP) or an account problem
that would refuse every message (NSF, IPV, INF, NCR, NPZ: permanent; MAX, MAP: the daily
cap, retryable after the next midnight in Lomé, which is UTC).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qsl

import httpx

from producer.settings import ProviderSettings
from producer.status import Status
from worker.gateways.base import (
    Balance,
    LookupResult,
    OutgoingMessage,
    PermanentProviderError,
    ProviderAdapter,
    RetryableProviderError,
    SendResult,
    StatusReport,
    to_float,
)
from worker.gateways.parsing import digits, lower_keys, naive_utc

DEFAULT_SENDER = "KING SMS"
MAX_SENDER = 11

# Appendix A, word for word (typos of the document fixed).
STATUS_DESCRIPTIONS: dict[str, str] = {
    "ABS": "Absent subscriber",
    "ACT": "Message accepted into KING SMS PRO server",
    "BLO": "Destination mobile number blocked by Telecom or by KING SMS PRO on client request",
    "BUF": "Message has been queued at the gateway for delivery at a later time",
    "DLA": "Delivered by Alert App",
    "DLG": "Message received by gateway",
    "DLV": "Confirmation of receipt on the handset of the recipient",
    "DUP": "Duplicate message received from client",
    "ERD": "An error occurred delivering the message to the handset",
    "EXP": "Message has expired, could not be delivered",
    "INF": "Affiliate is not configured in the client's profile",
    "INV": "Network is unknown or can not be reached",
    "IPR": "In process at KING SMS PRO",
    "IPV": "Remote IP is not registered",
    "ITM": "Intermediate",
    "LEN": "Message too long",
    "MAP": "Daily maximum reached at provider",
    "MAX": "Daily maximum reached",
    "NCR": "The client did not subscribe to this network",
    "NPZ": "Network price not configured",
    "NRC": "No receipt confirmation from telecom",
    "NSF": "Not enough funds in the account; please buy credits",
    "PACT": "Notification accepted into the system",
    "PAPP": "Delivered to the KingAlert mobile notification system",
}

# Refusal codes at send time that concern the account, so every other message would fail
# the same way: raise instead of rejecting one message.
_ACCOUNT_CODES = frozenset({"NSF", "IPV", "INF", "NCR", "NPZ"})
# The daily cap lifts at the day change: the message is fine, only too early.
_DAILY_CAP_CODES = frozenset({"MAX", "MAP"})
# Every other refusal code (BLO, INV, LEN, DUP) concerns this message only: REJECTED.

# An undocumented error answer: `{"status": "error", "message": ...}`.
_ERROR_STATUSES = frozenset({"ERROR", "ERREUR", "FAILED", "FAIL", "KO", "FALSE"})
_MESSAGE_KEYS = ("message", "error", "description", "msg", "errors")
# Words of an error text that point at the account, not at one message.
_ACCOUNT_WORDS = (
    "api key",
    "apikey",
    "client id",
    "clientid",
    "unauthor",
    "credential",
    "auth",
    "balance",
    "solde",
    "credit",
    "fund",
    "account",
    "compte",
    "ip address",
    "adresse ip",
    "remote ip",
)
_RETRYABLE_WORDS = ("try again", "temporar", "maintenance", "busy", "timeout", "réessayer")

# Keys never copied into `raw` (the gateway could echo them back).
_SECRET_KEYS = frozenset({"apikey", "api_key", "clientid", "client_id", "token", "password"})

_ID_KEYS = ("messageid", "message_id", "msgid", "msg_id", "id", "smsid", "sms_id")
_STATUS_KEYS = ("status", "dlr_status", "statut", "state")
_TO_KEYS = ("destination", "to", "phone", "msisdn", "recipient", "numero")
_DATE_KEYS = ("done_date", "delivered_at", "date_delivery", "updated_at", "date", "created_at")
_WRAPPERS = ("result", "data", "reports", "records", "messages", "sms")
_TEXT_KEYS = ("message", "text", "sms", "content", "body")
_SENT_KEYS = ("created_at", "date_send", "send_date", "sent_at", "submit_date", "date")
# Report times and our clock may disagree a little: a record this much older still counts.
LOOKUP_SLACK = timedelta(seconds=120)
_BALANCE_KEYS = ("balance", "solde", "credit", "credits", "amount", "sms_balance")
_CURRENCY_KEYS = ("currency", "devise", "unit")


def _first(data: Mapping[str, Any], keys: Iterable[str]) -> Any:
    """The first non-blank value among `keys` (already lower-cased)."""
    for key in keys:
        value = data.get(key)
        if value is not None and str(value).strip() != "":
            return value
    return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _unwrap(data: Any, wanted: Iterable[str] = ()) -> Any:
    """Peel `{"result": ...}` / `{"data": ...}` envelopes (nested ones too).

    A dict that already holds one of the `wanted` keys is the payload itself.
    """
    wanted = tuple(wanted)
    for _ in range(3):
        lowered = lower_keys(data)
        if not lowered or any(lowered.get(k) not in (None, "") for k in wanted):
            return data
        inner = next(
            (lowered[k] for k in _WRAPPERS if isinstance(lowered.get(k), dict | list)), None
        )
        if inner is None:
            return data
        data = inner
    return data


def parse_kingsms_date(value: Any) -> datetime | None:
    """Dates are not documented: read `2024-05-01 10:00:00`, ISO and `01/05/2024 10:00`."""
    text = _text(value)
    if not text:
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if not parsed.tzinfo:
        return parsed
    try:
        return parsed.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        return None


def seconds_to_lome_midnight(now: datetime | None = None) -> float:
    """When the daily cap lifts: Lomé keeps UTC all year, so the next UTC midnight."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - now).total_seconds())


def _part_number(value: Any) -> int | None:
    """A part index or count from a callback, or None when absent or not a small number."""
    number = to_float(value)
    if number is None or number != int(number) or not 1 <= number <= 255:
        return None
    return int(number)


class KingSmsAdapter(ProviderAdapter):
    name = "kingsms"
    status_map: ClassVar[Mapping[str, Status | None]] = {
        # On the way: accepted, queued, at the gateway, in process, intermediate.
        "ACT": Status.SENT,
        "BUF": Status.SENT,
        "DLG": Status.SENT,
        "IPR": Status.SENT,
        "ITM": Status.SENT,
        "PACT": Status.SENT,
        # No receipt from the telecom is not a proof of failure: still on the way.
        "NRC": Status.SENT,
        # Delivered: on the handset, by the Alert app, to the KingAlert system.
        "DLV": Status.DELIVERED,
        "DLA": Status.DELIVERED,
        "PAPP": Status.DELIVERED,
        # Reached the network, not the handset.
        "ABS": Status.UNDELIVERED,
        "ERD": Status.UNDELIVERED,
        "EXP": Status.EXPIRED,
        # Refused by KING SMS PRO: the message never left.
        "BLO": Status.REJECTED,
        "DUP": Status.REJECTED,
        "INF": Status.REJECTED,
        "INV": Status.REJECTED,
        "IPV": Status.REJECTED,
        "LEN": Status.REJECTED,
        "NCR": Status.REJECTED,
        "NPZ": Status.REJECTED,
        "MAX": Status.REJECTED,
        "MAP": Status.REJECTED,
        # Not sent for want of credit: an account failure, not the recipient's.
        "NSF": Status.FAILED,
    }

    def __init__(
        self,
        *,
        api_key: str,
        client_id: str,
        sender: str | None = None,
        base_url: str = "https://edok-api.kingsmspro.org/api/v1",
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url=base_url, timeout=timeout, client=client)
        self._api_key = api_key
        self._client_id = str(client_id)
        self.sender = sender or DEFAULT_SENDER

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> KingSmsAdapter:
        return cls(
            api_key=settings.secret("api_key"),
            client_id=settings.secret("client_id"),
            sender=settings.sender,
            base_url=settings.base_url,
            timeout=settings.timeout_seconds,
            client=client,
        )

    @staticmethod
    def describe(code: str | None) -> str:
        """The English description of a status code (Appendix A), or the code itself."""
        key = _text(code).upper()
        return STATUS_DESCRIPTIONS.get(key, key or "no status given")

    # -- send -------------------------------------------------------------
    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        return [self._send_one(msg) for msg in batch]

    def _send_one(self, msg: OutgoingMessage) -> SendResult:
        sender = msg.sender or self.sender
        if len(sender) > MAX_SENDER:
            return SendResult(
                msg.ref,
                Status.REJECTED,
                error=f"kingsms: sender {sender!r} is longer than {MAX_SENDER} characters",
            )
        form = {
            "from": sender,
            "to": msg.to.strip().lstrip("+"),
            "type": "1" if msg.flash else "0",
            "message": msg.text,
            "dlr": "yes" if msg.dlr_url else "no",
        }
        if msg.dlr_url:
            form["url"] = msg.dlr_url
        data = self._post("/sms/send", form)
        return self._read_send(msg, data)

    def _read_send(self, msg: OutgoingMessage, answer: Any) -> SendResult:
        data = lower_keys(_unwrap(answer, _ID_KEYS))
        raw = self._clean(data)
        if not data:
            raise RetryableProviderError("kingsms: send answer has an unexpected shape", raw=raw)
        message_id = _text(_first(data, _ID_KEYS)) or None
        code = _text(data.get("status")).upper()
        self._raise_for_code(code, raw)
        status = self.map_status(code)
        if status is None and message_id and code not in _ERROR_STATUSES:
            return SendResult(msg.ref, Status.SENT, message_id, raw=raw)  # id, no refusal
        if status is None:
            # No documented code: an error text decides between account and message.
            message = self._send_refusal(data)
            return SendResult(
                msg.ref, Status.REJECTED, message_id, error=f"kingsms: {message}", raw=raw
            )
        if status in (Status.SENT, Status.DELIVERED):
            if not message_id:
                raise RetryableProviderError("kingsms: send accepted without a messageId", raw=raw)
            return SendResult(msg.ref, status, message_id, raw=raw)
        return SendResult(
            msg.ref,
            status,
            message_id,
            error=f"kingsms {code}: {self.describe(code)}",
            raw=raw,
            duplicate=code == "DUP",
        )

    # -- status -----------------------------------------------------------
    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        return [self._trace_one(pid) for pid in provider_ids]

    def _trace_one(self, provider_id: str) -> StatusReport:
        answer = self._post("/sms/trace", {"messageId": provider_id})
        data = lower_keys(_unwrap(answer, _ID_KEYS))
        report = self._report(data, default_id=provider_id)
        if report is None:
            self._raise_error(data)
        return report

    def fetch_reports(self, date_start: date, date_end: date, type: int = 2) -> list[StatusReport]:
        """The statuses of the messages sent between two days (1: platform, 2: API)."""
        if date_end < date_start:
            raise ValueError("kingsms: date_end is before date_start")
        if type not in (1, 2):
            raise ValueError("kingsms: report type is 1 (platform) or 2 (API)")
        form = {
            "date_start": date_start.strftime("%Y-%m-%d"),
            "date_end": date_end.strftime("%Y-%m-%d"),
            "type": str(type),
        }
        answer = _unwrap(self._post("/sms/reports", form), _ID_KEYS)
        if isinstance(answer, dict):
            data = lower_keys(answer)
            if not data:
                return []
            single = self._report(data)
            if single is not None:
                return [single]
            self._raise_error(data)
        if not isinstance(answer, list):
            raise RetryableProviderError("kingsms: reports answer has an unexpected shape")
        reports = (self._report(lower_keys(item)) for item in answer)
        return [r for r in reports if r is not None]

    def find_sent(self, ref: str, to: str, text: str, since: datetime) -> LookupResult:
        """Look a possibly-sent message up in the API reports of the days since `since`.

        KING SMS PRO keeps no reference of ours, so a record matches by destination,
        text and send time (at most LOOKUP_SLACK before `since`). One match: found.
        Several, or records to our number that lack the text or the time: unknown.
        None: not found.
        """
        start = naive_utc(since) - LOOKUP_SLACK
        today = datetime.now(UTC).date()
        reports = self.fetch_reports(min(start.date(), today), today, type=2)
        wanted = digits(to)
        matches: list[StatusReport] = []
        unclear = 0
        for report in reports:
            record = lower_keys(report.raw)
            if report.to is None:
                unclear += 1
                continue
            if digits(report.to) != wanted:
                continue
            sent_text = _first(record, _TEXT_KEYS)
            sent_at = parse_kingsms_date(_first(record, _SENT_KEYS)) or report.occurred_at
            if (sent_text is not None and str(sent_text) != text) or (
                sent_at is not None and sent_at < start
            ):
                continue
            if sent_text is None or sent_at is None:
                unclear += 1
                continue
            matches.append(report)
        raw = {"records": len(reports), "matches": [m.provider_message_id for m in matches]}
        if len(matches) == 1 and not unclear:
            found = matches[0]
            return LookupResult(
                "found",
                found.provider_message_id,
                detail=f"kingsms reports list messageId {found.provider_message_id} to this "
                f"number with this text since the send ({found.raw_status})",
                raw=raw,
            )
        if matches or unclear:
            return LookupResult(
                "unknown",
                detail=f"kingsms reports hold {len(matches)} matching and {unclear} unclear "
                "record(s) since the send",
                raw=raw,
            )
        return LookupResult(
            "not_found",
            detail="kingsms reports have no message to this number with this text since the send",
            raw=raw,
        )

    def _report(self, data: dict[str, Any], default_id: str | None = None) -> StatusReport | None:
        """One record (trace, report or callback) as a StatusReport; None if it is not one."""
        raw_status = _text(_first(data, _STATUS_KEYS))
        message_id = _text(_first(data, _ID_KEYS)) or (default_id or "")
        if not raw_status or not message_id or raw_status.upper() in _ERROR_STATUSES:
            return None
        return StatusReport(
            provider_message_id=message_id,
            status=self.map_status(raw_status),
            raw_status=raw_status,
            raw=self._clean(data),
            occurred_at=parse_kingsms_date(_first(data, _DATE_KEYS)),
            ref=_text(data.get("ref")) or None,
            to=_text(_first(data, _TO_KEYS)) or None,
            part=_part_number(data.get("part")),
            parts=_part_number(data.get("parts")),
        )

    # -- balance ----------------------------------------------------------
    def fetch_balance(self) -> Balance:
        answer = self._post("/account/details", {})
        data = lower_keys(_unwrap(answer, _BALANCE_KEYS))
        raw = self._clean(data)
        amount = to_float(_first(data, _BALANCE_KEYS))
        if amount is None:
            self._raise_error(data)
        extra = {
            k: v
            for k, v in raw.items()
            if k not in _BALANCE_KEYS and k not in _CURRENCY_KEYS and not isinstance(v, dict | list)
        }
        return Balance(
            amount=amount,
            unit=_text(_first(data, _CURRENCY_KEYS)).upper() or "XOF",
            active=_active(_first(data, ("active", "is_active", "account_status", "state"))),
            raw=raw,
            extra=extra,
        )

    # -- push -------------------------------------------------------------
    def parse_callback(self, params: Mapping[str, str], body: bytes = b"") -> list[StatusReport]:
        """The per-message DLR callback: query, form or JSON (one record or a list)."""
        query = lower_keys(dict(params))
        parsed = _unwrap(_parse_body(body), _ID_KEYS)
        if isinstance(parsed, list):
            records = [{**query, **lower_keys(item)} for item in parsed]
        else:
            records = [{**query, **lower_keys(parsed)}]
        reports = [self._report(record) for record in records]
        if not reports or any(r is None for r in reports):
            raise PermanentProviderError("kingsms callback needs a messageId and a status")
        return [r for r in reports if r is not None]

    # -- plumbing and error mapping (the one place) ---------------------------
    def _post(self, path: str, form: Mapping[str, str]) -> Any:
        headers = {"APIKEY": self._api_key, "CLIENTID": self._client_id}
        response = self._request("POST", path, data=dict(form), headers=headers)
        self._check_http(response, path)
        return self._json(response)

    def _check_http(self, response: httpx.Response, path: str) -> None:
        status = response.status_code
        if status in (401, 403):
            raise PermanentProviderError(
                f"kingsms: HTTP {status}: the API key or client id was refused",
                code=str(status),
            )
        if status >= 400:
            raise PermanentProviderError(
                f"kingsms {path}: HTTP {status}: {self._error_text(response)}",
                code=str(status),
            )

    def _raise_for_code(self, code: str, raw: Any) -> None:
        """Refusal codes about the account stop every message: raise for them at send."""
        text = f"kingsms {code}: {self.describe(code)}"
        if code in _DAILY_CAP_CODES:
            raise RetryableProviderError(
                text, code=code, raw=raw, retry_after=seconds_to_lome_midnight(), throttled=True
            )
        if code in _ACCOUNT_CODES:
            raise PermanentProviderError(text, code=code, raw=raw)

    def _raise_error(self, data: dict[str, Any]) -> NoReturn:
        """An answer that is not what was asked: an error text, or a shape we do not know.

        Temporary words -> retryable; any other error text -> permanent (bad key, no
        credit, unknown message...); no text at all -> an unexpected shape -> retryable.
        """
        raw = self._clean(data)
        message = self._error_reason(data)
        if not message:
            raise RetryableProviderError("kingsms: answer has an unexpected shape", raw=raw)
        if any(word in message.lower() for word in _RETRYABLE_WORDS):
            raise RetryableProviderError(f"kingsms: {message}", raw=raw)
        raise PermanentProviderError(f"kingsms: {message}", raw=raw)

    def _send_refusal(self, data: dict[str, Any]) -> str:
        """Why a send without a documented code failed; raise when the account is at fault."""
        message = self._error_reason(data)
        lowered = message.lower()
        if not message or any(word in lowered for word in (*_RETRYABLE_WORDS, *_ACCOUNT_WORDS)):
            self._raise_error(data)
        return message

    def _error_reason(self, data: dict[str, Any]) -> str:
        return self._scrub(_text(_first(data, _MESSAGE_KEYS)))[:200]

    def _error_text(self, response: httpx.Response) -> str:
        """The body's own message, short and without secrets."""
        try:
            data = lower_keys(_unwrap(response.json(), _MESSAGE_KEYS))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError):
            data = {}
        text = _text(_first(data, (*_MESSAGE_KEYS, "status")))
        if not text:
            text = response.text.replace("\n", " ").strip() if response.content else ""
        return self._scrub(text)[:200] or "request refused"

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key, self._client_id)

    def _clean(self, data: Any) -> Any:
        """A copy of an answer without credential keys or values, fit for `raw`."""
        if isinstance(data, dict):
            return {
                k: self._clean(v) for k, v in data.items() if str(k).lower() not in _SECRET_KEYS
            }
        if isinstance(data, list):
            return [self._clean(v) for v in data]
        return self._scrub(data) if isinstance(data, str) else data


def _active(value: Any) -> bool | None:
    """An account state flag, when the answer has one."""
    state = _text(value).lower()
    if state in ("1", "true", "active", "actif", "enabled", "yes"):
        return True
    if state in ("0", "false", "inactive", "inactif", "disabled", "suspended", "no"):
        return False
    return None


def _parse_body(body: bytes) -> Any:
    """A callback body: JSON when it looks like JSON, else form-encoded; None when empty."""
    if not body or not body.strip():
        return None
    text = body.decode("utf-8", errors="replace").strip()
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # also a 5000-digit number, a deep nesting
            return None
    return dict(parse_qsl(text, keep_blank_values=True))
