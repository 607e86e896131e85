"""1601SMS (Netherlands) adapter.

API document: tests/fixtures/sms1601/sms1601-gateway-api.txt (1601SMS Gateway API).
Every call to gateway.php is a POST form (never a query string, so the
password stays out of URLs and access logs); answers are plain text.
- POST {base}/gateway.php  klantuser, klantpwd, naar=n1,n2, bericht, afzender, delivery=ja
  [type=long] [referentie] [test=ja] [datum=yyyymmddhhii&outboxid=ja&emailen=nee]
  -> "OK 1234567" (one line per number, or ids separated by commas) | "ERROR 104"
- POST {base}/gateway.php  action=credits                  -> "476"
- POST {base}/gateway.php  action=rapport&aantal=100       -> report lines (format undocumented)
- POST {base}/gateway.php  action=verwijderbericht&id=ID   -> "OK" | "ERROR 122"
- POST {base}/gateway.php  action=verwijderoutbox          -> "OK" | "ERROR 122"
- GET  {base}/gatewayrapport.php ?smsid=ID&datum=ja        -> "DELIVERED 01/02/2012 10:23:10"
- PUSH: GET <account URL>?smsid&datum=yyyymmddHHMMSS&status&referentie

Gateway dates are Amsterdam local time; smsq keeps naive UTC. Errors are
"ERROR <code>" with HTTP 200; `SMS1601_ERRORS` is the one table that decides
what each code means (retry, reject the request's messages, or stop).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

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
from worker.gateways.parsing import digits, naive_utc

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
DEFAULT_BASE_URL = "http://217.19.227.48/module"
DEFAULT_SENDER = "SMSQ"
SINGLE_TEXT = 160  # above this, type=long
LONG_TEXT = 459  # type=long carries at most 3 parts of 153
MAX_REFERENCE = 75
REPORT_LOOKBACK = 500  # messages the group report is asked for when looking one up

# Kinds of error code: what the caller should do about it.
RETRYABLE = "retryable"  # the gateway's own trouble: try again later
MESSAGE = "message"  # this request's messages are refused: REJECTED
ACCOUNT = "account"  # credentials, credit, sender or account state: stop
ACTION = "action"  # only answered to outbox/report actions

# Every error code of the document, with its English explanation.
SMS1601_ERRORS: dict[int, tuple[str, str]] = {
    100: ("username is empty", ACCOUNT),
    101: ("password is empty", ACCOUNT),
    102: ("the message has no content", MESSAGE),
    103: ("the mobile number has no content", MESSAGE),
    104: ("no valid username and password combination", ACCOUNT),
    105: ("the message is longer than 160 characters (type=long not given)", MESSAGE),
    106: ("no valid mobile number (country code followed by the number)", MESSAGE),
    107: ("no valid country code: sending to this country is not possible", MESSAGE),
    108: ("not enough credits left", ACCOUNT),
    109: ("the sender name is empty", ACCOUNT),
    110: ("a sender number must start with the + sign", ACCOUNT),
    111: ("the sender name is not valid (too long)", ACCOUNT),
    112: ("not a valid country code", MESSAGE),
    113: ("the sender name contains characters not allowed on all networks", ACCOUNT),
    114: ("no valid country code (country not permitted)", MESSAGE),
    115: ("account blocked: payment not received (yet)", ACCOUNT),
    116: ("account blocked; contact 1601SMS", ACCOUNT),
    117: ("this sender name is not allowed", ACCOUNT),
    118: ("a long message may have at most 459 characters (3 parts of 153)", MESSAGE),
    119: ("long messages (over 160 characters) are not offered for this country", MESSAGE),
    120: ("a problem with the gateway", RETRYABLE),
    121: ("the scheduled date is in the past or not correct", MESSAGE),
    122: ("no matching message found in the outbox", ACTION),
    123: ("report requested without a number", ACTION),
    124: ("report requested without a valid number", ACTION),
    125: ("group not found in the phone list", ACCOUNT),
    126: ("the group is empty", ACCOUNT),
    150: ("the gateway is down for maintenance", RETRYABLE),
}

_ERROR_CODED = re.compile(r"^\s*(?:ERROR|FOUT)\s*[:#=-]?\s*(\d{1,4})\b\s*(.*)$", re.I | re.S)
_ERROR_BARE = re.compile(r"^\s*(?:ERROR|FOUT)\b\s*[:#=-]?\s*(.*)$", re.I | re.S)
_OK = re.compile(r"^\s*OK\b[\s:,;=-]*(.*)$", re.I | re.S)
_STATUS = re.compile(
    r"^\s*(NOT[\s_-]*DELIVERED|UNDELIVERED|DELIVERED|BUFFERED|SUBMITTED|REJECTED|EXPIRED|NONE)\b"
    r"\s*(.*)$",
    re.I | re.S,
)
_DATE_DMY = re.compile(
    r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?"
)
_DATE_COMPACT = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?!\d)")
_DATE_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[ T]+(\d{2}):(\d{2})(?::(\d{2}))?)?")


# -- dates -----------------------------------------------------------------
def to_gateway_datum(when: datetime) -> str:
    """`send_at` (aware, or naive UTC) as yyyymmddhhii in Amsterdam time.

    Rounded up to the next whole minute, so a message is never sent early.
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.second or when.microsecond:
        when = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return when.astimezone(AMSTERDAM).strftime("%Y%m%d%H%M")


def _amsterdam_to_utc(parts: Sequence[str | None]) -> datetime | None:
    try:
        year, month, day, hour, minute, second = (int(p or 0) for p in parts)
        local = datetime(year, month, day, hour, minute, second, tzinfo=AMSTERDAM)
        return local.astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError):
        return None


def parse_sms1601_date(value: Any) -> datetime | None:
    """A gateway date (Amsterdam time) as naive UTC; None when absent or unreadable.

    Reads `01/02/2012 10:23:10` (dd/mm/yyyy), `20120201102310` (the callback's
    yyyymmddHHMMSS), `201202011023` and ISO `2012-02-01 10:23:10`.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    match = _DATE_ISO.search(text)
    if match:
        return _amsterdam_to_utc(match.groups())
    match = _DATE_DMY.search(text)
    if match:
        day, month, year, hour, minute, second = match.groups()
        return _amsterdam_to_utc((year, month, day, hour, minute, second))
    match = _DATE_COMPACT.search(text)
    if match:
        return _amsterdam_to_utc(match.groups())
    return None


# -- answers -----------------------------------------------------------------
@dataclass
class _Line:
    """One line of a gateway answer: OK with ids, or an error with its code."""

    ok: bool
    ids: list[str] = field(default_factory=list)
    code: int | None = None
    detail: str = ""


def _parse_line(line: str) -> _Line | None:
    match = _OK.match(line)
    if match:
        tokens = re.split(r"[\s,;]+", match.group(1).strip())
        ids = [t for t in tokens if re.fullmatch(r"[A-Za-z0-9_-]+", t) and re.search(r"\d", t)]
        return _Line(ok=True, ids=ids)
    match = _ERROR_CODED.match(line)
    if match:
        return _Line(ok=False, code=int(match.group(1)), detail=match.group(2).strip())
    match = _ERROR_BARE.match(line)
    if match:
        return _Line(ok=False, detail=match.group(1).strip())
    return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def error_kind(code: int | None) -> str:
    """The kind of an error code; unknown codes refuse the request's messages."""
    if code is None or code not in SMS1601_ERRORS:
        return MESSAGE
    return SMS1601_ERRORS[code][1]


def error_text(code: int | None, detail: str = "") -> str:
    """`sms1601 error N: <explanation>`, the text every error carries."""
    if code is None:
        return f"sms1601 error: {detail or 'no code given'}"
    if code in SMS1601_ERRORS:
        return f"sms1601 error {code}: {SMS1601_ERRORS[code][0]}"
    return f"sms1601 error {code}: unknown error code" + (f" ({detail})" if detail else "")


class Sms1601Adapter(ProviderAdapter):
    name = "sms1601"
    status_map: ClassVar[Mapping[str, Status | None]] = {
        "DELIVERED": Status.DELIVERED,
        "NOT DELIVERED": Status.UNDELIVERED,
        "BUFFERED": Status.SENT,
        "SUBMITTED": Status.SENT,
        "REJECTED": Status.REJECTED,
        "NONE": Status.SENT,  # no report available (yet): not a failure
        # Not in the document; tolerated in the (undocumented) group report.
        "UNDELIVERED": Status.UNDELIVERED,
        "EXPIRED": Status.EXPIRED,
    }

    def __init__(
        self,
        *,
        username: str,
        password: str,
        password_sha1: bool = False,
        test_mode: bool = False,
        sender: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url=base_url, timeout=timeout, client=client)
        self._username = username
        self._password = password
        self._password_hash = hashlib.sha1(password.encode("utf-8")).hexdigest()
        self.password_sha1 = password_sha1
        self.test_mode = test_mode
        self.sender = sender or DEFAULT_SENDER

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, client: httpx.Client | None = None
    ) -> Sms1601Adapter:
        return cls(
            username=settings.secret("username"),
            password=settings.secret("password"),
            password_sha1=bool(getattr(settings, "password_sha1", False)),
            test_mode=bool(getattr(settings, "test_mode", False)),
            sender=settings.sender,
            base_url=settings.base_url or DEFAULT_BASE_URL,
            timeout=settings.timeout_seconds,
            client=client,
        )

    def map_status(self, raw: str | None) -> Status | None:
        """Like the base, but `not_delivered` / `Not  Delivered` read as NOT DELIVERED."""
        if raw is None:
            return None
        return self.status_map.get(re.sub(r"[\s_-]+", " ", str(raw).strip().upper()))

    # -- send -------------------------------------------------------------
    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send; messages sharing text, sender and schedule go in one request."""
        for msg in batch:
            if len(msg.text) > LONG_TEXT:
                raise ValueError(
                    f"sms1601: message {msg.ref} has {len(msg.text)} characters; "
                    f"the gateway takes at most {LONG_TEXT}"
                )
        now = datetime.now(UTC)
        groups: dict[tuple[str, str, str | None], list[int]] = {}
        for index, msg in enumerate(batch):
            key = (msg.text, msg.sender or self.sender, self._datum(msg, now))
            groups.setdefault(key, []).append(index)
        results: dict[int, SendResult] = {}
        for (text, sender, datum), indexes in groups.items():
            for start in range(0, len(indexes), self.max_batch):
                chunk = indexes[start : start + self.max_batch]
                messages = [batch[i] for i in chunk]
                for i, result in zip(
                    chunk, self._send_request(messages, text, sender, datum), strict=True
                ):
                    results[i] = result
        return [results[i] for i in range(len(batch))]

    @staticmethod
    def _datum(msg: OutgoingMessage, now: datetime) -> str | None:
        """The outbox date for a future `send_at`; None (send now) when it is due."""
        if msg.send_at is None:
            return None
        when = msg.send_at if msg.send_at.tzinfo else msg.send_at.replace(tzinfo=UTC)
        return to_gateway_datum(when) if when > now else None

    def _send_request(
        self, messages: Sequence[OutgoingMessage], text: str, sender: str, datum: str | None
    ) -> list[SendResult]:
        form = {
            **self._auth(),
            "naar": ",".join(m.to for m in messages),
            "bericht": text,
            "afzender": sender,
            "delivery": "ja",
        }
        if len(text) > SINGLE_TEXT:
            form["type"] = "long"
        if len(messages) == 1:
            form["referentie"] = messages[0].ref[:MAX_REFERENCE]
        if self.test_mode:
            form["test"] = "ja"
        if datum:
            form.update({"datum": datum, "outboxid": "ja", "emailen": "nee"})
        answer = self._post(form)
        return self._read_send_answer(messages, answer, scheduled=datum is not None)

    def _read_send_answer(
        self, messages: Sequence[OutgoingMessage], answer: str, *, scheduled: bool
    ) -> list[SendResult]:
        if answer.lstrip().startswith("<"):  # an HTML error page, not the gateway's answer
            raise RetryableProviderError(
                f"sms1601: answer is an HTML page, not OK/ERROR: {self._snippet(answer)!r}"
            )
        parsed = [p for p in (_parse_line(line) for line in _lines(answer)) if p is not None]
        if not parsed:
            raise RetryableProviderError(
                f"sms1601: unexpected send answer: {self._snippet(answer)!r}"
            )
        raw_answer = self._scrub(answer)[:500]
        oks = [p for p in parsed if p.ok]
        if not oks:
            first = parsed[0]
            error = self._raise_unless_message_error(first, raw_answer)
            raw = {"answer": raw_answer, "code": first.code}
            return [SendResult(m.ref, Status.REJECTED, error=error, raw=raw) for m in messages]
        if len(messages) > 1 and len(parsed) == len(messages) and len(oks) < len(parsed):
            return [
                self._line_result(m, p, raw_answer, scheduled)
                for m, p in zip(messages, parsed, strict=True)
            ]
        ids = [i for p in oks for i in p.ids]
        if len(ids) == len(messages):
            pairs = list(zip(messages, ids, strict=True))
        elif len(ids) == 1:
            pairs = [(m, ids[0]) for m in messages]
        else:  # no id, or a count we cannot pair: accepted, ids unknown
            pairs = [(m, None) for m in messages]
        return [self._accepted(m, pid, raw_answer, scheduled, ids) for m, pid in pairs]

    def _line_result(
        self, msg: OutgoingMessage, line: _Line, raw_answer: str, scheduled: bool
    ) -> SendResult:
        """One line per number, some refused: the others were accepted, so never raise."""
        if line.ok:
            pid = line.ids[0] if len(line.ids) == 1 else None
            return self._accepted(msg, pid, raw_answer, scheduled, line.ids)
        kind = error_kind(line.code)
        status = Status.REJECTED if kind == MESSAGE else Status.FAILED
        raw = {"answer": raw_answer, "code": line.code}
        return SendResult(
            msg.ref, status, error=error_text(line.code, self._scrub(line.detail)), raw=raw
        )

    @staticmethod
    def _accepted(
        msg: OutgoingMessage, pid: str | None, raw_answer: str, scheduled: bool, ids: list[str]
    ) -> SendResult:
        raw: dict[str, Any] = {"answer": raw_answer}
        if pid is None and ids:
            raw["ids"] = ids
        if scheduled and pid is not None:
            raw["outbox_id"] = pid
        return SendResult(msg.ref, Status.SENT, pid, raw=raw)

    # -- outbox ------------------------------------------------------------
    def cancel_scheduled(self, outbox_id: str) -> bool:
        """Remove one scheduled message from the outbox; False when it is not there."""
        return self._outbox_action({"action": "verwijderbericht", "id": str(outbox_id)})

    def cancel_scheduled_to(self, number: str) -> bool:
        """Remove the scheduled message(s) to `number`; False when none is there."""
        return self._outbox_action({"action": "verwijderbericht", "naar": str(number)})

    def clear_outbox(self) -> bool:
        """Empty the whole outbox; False when it was already empty."""
        return self._outbox_action({"action": "verwijderoutbox"})

    def _outbox_action(self, params: dict[str, str]) -> bool:
        answer = self._post({**self._auth(), **params})
        line = self._first_line(answer)
        if line is not None and line.ok:
            return True
        if line is not None and line.code == 122:
            return False
        self._raise_action_error(line, answer)
        return False  # unreachable: _raise_action_error always raises

    # -- status -----------------------------------------------------------
    def fetch_status(self, provider_ids: Sequence[str]) -> list[StatusReport]:
        return [self._status_one(pid) for pid in provider_ids]

    def _status_one(self, provider_id: str) -> StatusReport:
        # The document's report URL carries no credentials; GET, as documented.
        response = self._request(
            "GET", "/gatewayrapport.php", params={"smsid": provider_id, "datum": "ja"}
        )
        self._check_http(response)
        answer = response.text.strip()
        if not answer or answer.startswith("<"):
            raise RetryableProviderError(
                f"sms1601: unexpected status answer: {self._snippet(answer)!r}"
            )
        match = _STATUS.match(answer)
        if match is None:
            line = self._first_line(answer)
            if line is not None and not line.ok:
                self._raise_action_error(line, answer)
            raw_status = answer.split()[0].upper()[:40]
            return StatusReport(provider_id, None, raw_status, raw={"answer": self._scrub(answer)})
        raw_status = re.sub(r"[\s_-]+", " ", match.group(1).upper())
        return StatusReport(
            provider_message_id=str(provider_id),
            status=self.map_status(raw_status),
            raw_status=raw_status,
            raw={"answer": self._scrub(answer)[:200]},
            occurred_at=parse_sms1601_date(match.group(2)),
        )

    def fetch_report(self, count: int = 100) -> list[StatusReport]:
        """The gateway's group report of the last `count` messages.

        The document does not show its format: lines of
        `smsid;status;datum;referentie` and `smsid status [date] [ref]` are read,
        anything else is skipped.
        """
        if count < 1:
            raise ValueError("sms1601: the report needs a count of at least 1")
        answer = self._post({**self._auth(), "action": "rapport", "aantal": str(int(count))})
        line = self._first_line(answer)
        if line is not None and not line.ok:
            self._raise_action_error(line, answer)
        reports = []
        for text in _lines(answer):
            report = self._report_line(text)
            if report is not None:
                reports.append(report)
        return reports

    def find_sent(self, ref: str, to: str, text: str, since: datetime) -> LookupResult:
        """Look a possibly-sent message up in the group report by `referentie` (our id).

        Found when a line carries our reference. Confirmed not found only when
        the report reaches back past `since` (fewer lines than asked, or a line
        older than it) and no line since then could be ours (a batch send has
        no reference: a line without one, to our number or to an unknown one,
        makes the answer `unknown`). The report's order and format are not
        documented; a line's date is its last status change, never before its send.
        """
        reports = self.fetch_report(REPORT_LOOKBACK)
        raw = {"lines": len(reports), "asked": REPORT_LOOKBACK}
        wanted = ref[:MAX_REFERENCE]
        for report in reports:
            if report.ref == wanted:
                return LookupResult(
                    "found",
                    report.provider_message_id,
                    detail=f"sms1601 report lists smsid {report.provider_message_id} "
                    f"with our reference ({report.raw_status})",
                    raw={**raw, "line": report.raw},
                )
        cutoff = naive_utc(since)
        reaches_back = len(reports) < REPORT_LOOKBACK or any(
            r.occurred_at is not None and r.occurred_at < cutoff for r in reports
        )
        if not reaches_back:
            return LookupResult(
                "unknown",
                detail=f"the sms1601 report of the last {REPORT_LOOKBACK} messages "
                "does not reach back to the send",
                raw=raw,
            )
        wanted = digits(to)
        maybe = [
            r
            for r in reports
            if not r.ref
            and (r.to is None or digits(r.to) == wanted)
            and (r.occurred_at is None or r.occurred_at >= cutoff)
        ]
        if maybe:
            return LookupResult(
                "unknown",
                detail=f"{len(maybe)} sms1601 report line(s) since the send carry no "
                "reference and could be this message",
                raw=raw,
            )
        return LookupResult(
            "not_found",
            detail="the sms1601 report has no message with our reference since the send",
            raw=raw,
        )

    def _report_line(self, text: str) -> StatusReport | None:
        if ";" in text:
            return self._report_fields([f.strip() for f in text.split(";")], text)
        tokens = text.split()
        if len(tokens) < 2 or not self._looks_like_id(tokens[0]):
            return None
        for skip in (1, 2):  # "smsid status ..." or "smsid number status ..."
            match = _STATUS.match(" ".join(tokens[skip:]))
            if match is None:
                continue
            raw_status = re.sub(r"[\s_-]+", " ", match.group(1).upper())
            rest = match.group(2)
            date_match = _DATE_DMY.search(rest) or _DATE_COMPACT.search(rest)
            occurred_at = parse_sms1601_date(date_match.group(0)) if date_match else None
            ref = (rest[date_match.end() :] if date_match else rest).strip() or None
            to = tokens[1] if skip == 2 and tokens[1].isdigit() else None
            return StatusReport(
                tokens[0],
                self.map_status(raw_status),
                raw_status,
                raw={"line": text},
                occurred_at=occurred_at,
                ref=ref,
                to=to,
            )
        return None

    def _report_fields(self, fields: list[str], text: str) -> StatusReport | None:
        if len(fields) < 2 or not self._looks_like_id(fields[0]):
            return None
        for index in (1, 2):
            if index >= len(fields):
                break
            raw_status = re.sub(r"[\s_-]+", " ", fields[index].upper())
            status = self.map_status(raw_status)
            if status is None:
                continue
            after = fields[index + 1 :]
            occurred_at = parse_sms1601_date(after[0]) if after else None
            ref = after[1] if len(after) > 1 and after[1] else None
            to = fields[1] if index == 2 and fields[1].isdigit() else None
            return StatusReport(
                fields[0],
                status,
                raw_status,
                raw={"line": text},
                occurred_at=occurred_at,
                ref=ref,
                to=to,
            )
        return None

    @staticmethod
    def _looks_like_id(value: str) -> bool:
        return bool(re.fullmatch(r"[A-Za-z0-9_-]+", value)) and any(c.isdigit() for c in value)

    # -- balance ----------------------------------------------------------
    def fetch_balance(self) -> Balance:
        answer = self._post({**self._auth(), "action": "credits"})
        line = self._first_line(answer)
        if line is not None and not line.ok:
            self._raise_action_error(line, answer)
        first = answer.strip().split()[0] if answer.strip() else ""
        amount = to_float(first)
        if amount is None:
            raise RetryableProviderError(
                f"sms1601: credits answer is not a number: {self._snippet(answer)!r}"
            )
        return Balance(amount=amount, unit="credits", raw={"answer": self._scrub(answer)[:100]})

    # -- push -------------------------------------------------------------
    def parse_callback(self, params: Mapping[str, str], body: bytes = b"") -> list[StatusReport]:
        """The account-level notification: GET smsid, datum, status, referentie."""
        lowered = {str(k).lower(): str(v) for k, v in params.items()}
        message_id = lowered.get("smsid", "").strip()
        raw_status = re.sub(r"[\s_-]+", " ", lowered.get("status", "").strip().upper())
        if not message_id or not raw_status:
            raise PermanentProviderError("sms1601 callback needs smsid and status")
        return [
            StatusReport(
                provider_message_id=message_id,
                status=self.map_status(raw_status),
                raw_status=raw_status,
                raw=dict(params),
                occurred_at=parse_sms1601_date(lowered.get("datum")),
                ref=lowered.get("referentie", "").strip() or None,
            )
        ]

    # -- plumbing ----------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        password = self._password_hash if self.password_sha1 else self._password
        return {"klantuser": self._username, "klantpwd": password}

    def _post(self, form: dict[str, str]) -> str:
        """POST a form to gateway.php (the body, never the URL, carries the password)."""
        response = self._request("POST", "/gateway.php", data=form)
        self._check_http(response)
        return response.text

    def _first_line(self, answer: str) -> _Line | None:
        lines = _lines(answer)
        return _parse_line(lines[0]) if lines else None

    def _secrets(self) -> tuple[str, ...]:
        return (self._password, self._password_hash, self._username)

    def _snippet(self, text: str) -> str:
        return self._scrub(text[:80].replace("\n", " "))

    # -- error mapping (the one place) --------------------------------------
    def _check_http(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise PermanentProviderError(
                f"sms1601: HTTP {response.status_code}: access refused",
                code=str(response.status_code),
            )
        if response.status_code >= 400:
            raise PermanentProviderError(
                f"sms1601: HTTP {response.status_code}: request refused (check base_url)",
                code=str(response.status_code),
            )

    def _raise_unless_message_error(self, line: _Line, raw_answer: str) -> str:
        """Raise for retryable and account errors; return the text of a message error."""
        kind = error_kind(line.code)
        message = error_text(line.code, self._scrub(line.detail))
        code = str(line.code) if line.code is not None else None
        if kind == RETRYABLE:
            raise RetryableProviderError(message, code=code, raw={"answer": raw_answer})
        if kind in (ACCOUNT, ACTION):
            raise PermanentProviderError(message, code=code, raw={"answer": raw_answer})
        return message

    def _raise_action_error(self, line: _Line | None, answer: str) -> None:
        """Outbox, report and balance actions: every error stops the call."""
        if line is None or line.ok:
            raise RetryableProviderError(f"sms1601: unexpected answer: {self._snippet(answer)!r}")
        raw_answer = self._scrub(answer)[:500]
        code = str(line.code) if line.code is not None else None
        message = error_text(line.code, self._scrub(line.detail))
        if error_kind(line.code) == RETRYABLE:
            raise RetryableProviderError(message, code=code, raw={"answer": raw_answer})
        raise PermanentProviderError(message, code=code, raw={"answer": raw_answer})
