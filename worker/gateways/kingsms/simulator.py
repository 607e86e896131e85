"""KING SMS PRO simulator, true to tests/fixtures/kingsms/kingsmspro-api.txt.

Same paths as edok-api.kingsmspro.org/api/v1, all POST, credentials in the `APIKEY` and
`CLIENTID` headers (wrong ones: HTTP 401 JSON error). Parameters are read from a
form-urlencoded body, a multipart body (the document's PHP sample posts an array, which
curl sends as multipart/form-data) or a JSON body.

- /sms/send        -> the documented result object: messageId, sms_count, amount
                      (10 XOF per part), Currency "XOF", status ACT; INV for a number ending
                      in 0, LEN beyond the declared parts, NSF when the balance is short.
- /sms/trace       -> ACT then DLG while pending, then DLV / ERD / EXP by outcome digit.
- /sms/reports     -> the undocumented answer, chosen here: a JSON list of
                      {messageId, destination, status, sender, message, created_at} sent
                      within the days (created_at `YYYY-mm-dd HH:MM:SS`, Lomé time = UTC).
- /account/details -> {"balance": "<number as string>", "currency": "XOF", "client_id"}.
- PUSH: with dlr=yes (or 1) and a url, the final status is sent once known as
  GET <url>?messageId=...&status=DLV|ERD|EXP&destination=...
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from email import policy
from email.parser import BytesParser
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from producer.encoding import analyse
from producer.limits import limits_for
from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

PRICE_PER_PART = 10  # XOF
ROUTE = "TG(TOGOCEL)"
_FINAL = {"delivered": "DLV", "undelivered": "ERD", "expired": "EXP"}
_YES = ("yes", "1", "true", "oui")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": "error", "message": message}, status_code=status)


def parse_params(content_type: str, body: bytes) -> dict[str, str] | None:
    """Form-urlencoded, multipart or JSON parameters as strings; None when unreadable."""
    ctype = content_type.lower()
    try:
        if "multipart/form-data" in ctype:
            return _parse_multipart(content_type, body)
        text = body.decode("utf-8")
        if "json" in ctype or text.lstrip()[:1] == "{":
            data = json.loads(text) if text.strip() else {}
            if not isinstance(data, dict):
                return None
            return {str(k): "" if v is None else str(v) for k, v in data.items()}
        return dict(parse_qsl(text, keep_blank_values=True))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        return None


def _parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    """multipart/form-data with the standard library (python-multipart is not installed)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload.decode("utf-8")
    return fields


def _lome_day(timestamp: float) -> date:
    """The calendar day of a timestamp in Lomé (UTC all year)."""
    return datetime.fromtimestamp(timestamp, UTC).date()


class KingSmsSim(ProviderSim):
    name = "kingsms"

    def build_routes(self) -> list[Route]:
        return [
            self.route("/sms/send", self.send, ["POST"]),
            self.route("/sms/trace", self.trace, ["POST"]),
            self.route("/sms/reports", self.reports, ["POST"]),
            self.route("/account/details", self.details, ["POST"]),
        ]

    # -- shared checks -----------------------------------------------------
    async def _read(self, request: Request) -> dict[str, str] | Response:
        """Check the headers and read the parameters, or answer the error."""
        api_key = request.headers.get("apikey", "").strip()
        client_id = request.headers.get("clientid", "").strip()
        if api_key != self.credentials["api_key"] or client_id != self.credentials["client_id"]:
            return _error(401, "Invalid API key or client id")
        if not self.active:
            return _error(403, "Account disabled")
        params = parse_params(request.headers.get("content-type", ""), await request.body())
        if params is None:
            return _error(400, "Invalid request body")
        return {k.strip(): v for k, v in params.items()}

    # -- /sms/send -----------------------------------------------------------
    async def send(self, request: Request) -> Response:
        params = await self._read(request)
        if isinstance(params, Response):
            return params
        for field in ("from", "to", "message"):
            if not params.get(field, "").strip():
                return _error(400, f"Missing parameter: {field}")
        sender, to = params["from"].strip(), params["to"].strip()
        if len(sender) > limits_for(self.name).max_sender:
            return _error(400, "The sender (from) is limited to 11 characters")
        kind = params.get("type", "0").strip() or "0"
        if kind not in ("0", "1"):
            return _error(400, "Invalid type: 0 (text) or 1 (flash)")
        self.count_recipients(1)
        text = params["message"]
        sms_count = analyse(text).segments
        code = self._send_code(to, sms_count)
        result = {
            "sender": sender,
            "to": to,
            "message": text,
            "route": ROUTE,
            "type": kind,
            "drl": "1" if params.get("dlr", "").strip().lower() in _YES else "0",
            "sms_count": sms_count,
            "amount": sms_count * PRICE_PER_PART if code == "ACT" else 0,
            "Currency": "XOF",
            "status": code,
        }
        if code == "NSF":  # refused before it got an id
            return JSONResponse({"result": result})
        msg = self._record(params, sender, to, text, code)
        return JSONResponse({"result": {"messageId": msg.id, **result}})

    def _send_code(self, to: str, sms_count: int) -> str:
        """The status a send gets: INV (bad/0 number), LEN, NSF or ACT."""
        if not to.isdigit() or outcome_for(to) == "rejected":
            return "INV"
        if sms_count > limits_for(self.name).max_segments:
            return "LEN"
        if not self.charge(sms_count * PRICE_PER_PART):
            return "NSF"
        return "ACT"

    def _record(
        self, params: dict[str, str], sender: str, to: str, text: str, code: str
    ) -> SimMessage:
        accepted = code == "ACT"
        wants_dlr = params.get("dlr", "").strip().lower() in _YES
        url = (params.get("url", "").strip() or self.callback_url) if wants_dlr else None
        msg = self.add_message(
            SimMessage(
                id=self.new_id(),
                to=to,
                text=text,
                sender=sender,
                outcome=outcome_for(to) if accepted else "rejected",
                callback_url=url,
                extra={"code": code, "type": params.get("type", "0")},
            )
        )
        if accepted and url:
            final = _FINAL[msg.outcome]
            parts = analyse(text).segments
            if self.per_part_reports and parts > 1:
                # One report per part, spread over the delivery time; the last part
                # carries the message's fate, the others arrive delivered.
                for part in range(1, parts + 1):
                    status = final if part == parts else _FINAL["delivered"]
                    fields = {"messageId": msg.id, "status": status, "destination": to}
                    fields.update({"part": str(part), "parts": str(parts)})
                    self.schedule_push(msg, url, fields, at_fraction=part / parts)
            else:
                fields = {"messageId": msg.id, "status": final, "destination": to}
                self.schedule_push(msg, url, fields)
        return msg

    # -- /sms/trace ----------------------------------------------------------
    def status_of(self, msg: SimMessage) -> str:
        """ACT, then DLG half-way, then the final code; a refused message keeps its code."""
        if msg.outcome == "rejected":
            return str(msg.extra.get("code") or "INV")
        if self.is_final(msg):
            return _FINAL[msg.outcome]
        halfway = msg.created + self.delivery_seconds / 2
        return "DLG" if time.time() >= halfway else "ACT"

    async def trace(self, request: Request) -> Response:
        params = await self._read(request)
        if isinstance(params, Response):
            return params
        message_id = (params.get("messageId") or params.get("messageid") or "").strip()
        if not message_id:
            return _error(400, "Missing parameter: messageId")
        msg = self.messages.get(message_id)
        if msg is None:
            return _error(404, "Message not found")
        return JSONResponse(
            {
                "result": {
                    "messageId": msg.id,
                    "sender": msg.sender,
                    "destination": msg.to,
                    "route": ROUTE,
                    "status": self.status_of(msg),
                }
            }
        )

    # -- /sms/reports --------------------------------------------------------
    async def reports(self, request: Request) -> Response:
        params = await self._read(request)
        if isinstance(params, Response):
            return params
        try:
            start = date.fromisoformat(params.get("date_start", "").strip())
            end = date.fromisoformat(params.get("date_end", "").strip())
        except ValueError:
            return _error(400, "date_start and date_end are required (YYYY-mm-dd)")
        if end < start:
            return _error(400, "date_end is before date_start")
        kind = params.get("type", "2").strip() or "2"
        if kind not in ("1", "2"):
            return _error(400, "Invalid type: 1 (platform) or 2 (API)")
        if kind == "1":  # every message here came through the API
            return JSONResponse([])
        records = [
            {
                "messageId": m.id,
                "destination": m.to,
                "status": self.status_of(m),
                "sender": m.sender,
                "message": m.text,
                "created_at": f"{datetime.fromtimestamp(m.created, UTC):%Y-%m-%d %H:%M:%S}",
            }
            for m in list(self.messages.values())
            if start <= _lome_day(m.created) <= end
        ]
        return JSONResponse(records)

    # -- /account/details ----------------------------------------------------
    async def details(self, request: Request) -> Response:
        params = await self._read(request)
        if isinstance(params, Response):
            return params
        return JSONResponse(
            {
                "balance": f"{self.balance:.2f}",
                "currency": "XOF",
                "client_id": self.credentials["client_id"],
            }
        )
