"""1601SMS simulator, true to tests/fixtures/sms1601/sms1601-gateway-api.txt.

- /gateway.php (GET query or POST form; form fields win): send, or `action=`
  credits | rapport&aantal=N | verwijderbericht&id=ID (or &naar=NUMBER) | verwijderoutbox.
- /gatewayrapport.php?smsid=ID[&datum=ja]: SUBMITTED, then BUFFERED, while pending;
  DELIVERED or NOT DELIVERED (undelivered and expired) when final; NONE for an
  unknown id. No credentials, as in the document's example URL.

Answers are plain text with HTTP 200; errors are `ERROR <code>` for the
document's codes. Choices the document leaves open:
- klantpwd is the plain password or the SHA-1 hex of it.
- Sender: empty -> 109; digits only (a number without "+") -> 110; more than
  11 characters -> 111 (the document says 12; the networks' limit and
  limits_for("sms1601").max_sender are 11); anything but letters, digits and
  spaces -> 113; a name in `blocked_senders` -> 117.
- Numbers: not digits or under 8 / over 15 digits -> 106, a prefix in
  `blocked_prefixes` -> 107, last digit 0 (the sandbox's "rejected") -> 106.
  The gateway errors per request, so `ERROR <code>` comes back only when every
  number is refused; otherwise the valid ones are accepted and, with
  delivery=ja, the answer has one line per number in order: `OK <id>`, or
  `ERROR <code>` for a refused one. Without delivery=ja the answer is `OK`.
- Credit: one per number per part (153 characters a part for type=long) -> 108.
- test=ja runs the checks (credit included) and stores and charges nothing;
  `OK <id>` lines with delivery=ja (ids unknown to the report page).
- datum=yyyymmddhhii (Amsterdam time; past or malformed -> 121) puts the message
  in `self.outbox` (no charge) and answers `OK <outboxid>` with outboxid=ja;
  outbox messages are never sent.
- naar=groep&groep=NAME uses `self.groups`: unknown -> 125, empty -> 126.
- `self.active` False or `expires_at` past -> 115; `self.maintenance` -> 150.
- action=rapport: the last N messages sent, oldest first, as
  `smsid;number;STATUS;dd/mm/yyyy HH:MM:SS;referentie` (the date of the last status).
PUSH: with the account callback URL set, each final status is pushed as
`GET <url>?smsid&datum=yyyymmddHHMMSS&status&referentie` (Amsterdam time).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_FINAL = {"delivered": "DELIVERED", "undelivered": "NOT DELIVERED", "expired": "NOT DELIVERED"}
MAX_SENDER = 11


def _text(body: str) -> Response:
    return PlainTextResponse(body)


def _error(code: int) -> Response:
    return PlainTextResponse(f"ERROR {code}")


def _local(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC).astimezone(AMSTERDAM)


class Sms1601Sim(ProviderSim):
    name = "sms1601"

    def __init__(self, delivery_seconds: float = 2.0) -> None:
        super().__init__(delivery_seconds=delivery_seconds)
        self.outbox: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, list[str]] = {}
        self.blocked_senders: set[str] = set()
        self.blocked_prefixes: tuple[str, ...] = ("999",)
        self.maintenance = False
        self._outbox_ids = itertools.count(500001)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.outbox.clear()
            self.groups.clear()
            self.blocked_senders.clear()
            self.maintenance = False

    def build_routes(self) -> list[Route]:
        return [
            self.route("/gateway.php", self.gateway, ["GET", "POST"]),
            self.route("/gatewayrapport.php", self.report_page, ["GET", "POST"]),
        ]

    # -- request reading ----------------------------------------------------
    @staticmethod
    async def _params(request: Request) -> dict[str, str]:
        """Query and form fields, keys in lower case; the form wins."""
        params = {k.lower(): v for k, v in request.query_params.items()}
        if request.method == "POST":
            body = (await request.body()).decode("utf-8", errors="replace")
            params.update({k.lower(): v for k, v in parse_qsl(body, keep_blank_values=True)})
        return params

    def _login_error(self, p: dict[str, str]) -> int | None:
        user, password = p.get("klantuser", "").strip(), p.get("klantpwd", "").strip()
        if not user:
            return 100
        if not password:
            return 101
        plain = self.credentials["password"]
        hashed = hashlib.sha1(plain.encode("utf-8")).hexdigest()
        if user != self.credentials["username"] or (
            password != plain and password.lower() != hashed
        ):
            return 104
        if self.maintenance:
            return 150
        if not self.active or (
            self.expires_at is not None
            and self.expires_at <= datetime.now(UTC).replace(tzinfo=None)
        ):
            return 115
        return None

    # -- gateway.php --------------------------------------------------------
    async def gateway(self, request: Request) -> Response:
        p = await self._params(request)
        error = self._login_error(p)
        if error is not None:
            return _error(error)
        action = p.get("action", "").strip().lower()
        if not action:
            return self._send(p)
        handlers = {
            "credits": self._credits,
            "rapport": self._rapport,
            "verwijderbericht": self._remove_one,
            "verwijderoutbox": self._remove_all,
        }
        handler = handlers.get(action)
        if handler is None:
            return PlainTextResponse("unknown action", status_code=400)
        return handler(p)

    def _credits(self, p: dict[str, str]) -> Response:
        return _text(str(int(self.balance)))

    def _rapport(self, p: dict[str, str]) -> Response:
        count = p.get("aantal", "").strip()
        if not count:
            return _error(123)
        if not count.isdigit() or int(count) < 1:
            return _error(124)
        with self._lock:
            last = list(self.messages.values())[-int(count) :]
        lines = []
        for msg in last:
            status, at = self._state(msg)
            lines.append(f"{msg.id};{msg.to};{status};{at:%d/%m/%Y %H:%M:%S};{msg.reference or ''}")
        return _text("\n".join(lines))

    def _remove_one(self, p: dict[str, str]) -> Response:
        outbox_id, number = p.get("id", "").strip(), p.get("naar", "").strip()
        with self._lock:
            if outbox_id:
                found = self.outbox.pop(outbox_id, None) is not None
            elif number:
                matching = [k for k, v in self.outbox.items() if number in v["numbers"]]
                for key in matching:
                    del self.outbox[key]
                found = bool(matching)
            else:
                found = False
        return _text("OK") if found else _error(122)

    def _remove_all(self, p: dict[str, str]) -> Response:
        with self._lock:
            if not self.outbox:
                return _error(122)
            self.outbox.clear()
        return _text("OK")

    # -- sending --------------------------------------------------------------
    def _send(self, p: dict[str, str]) -> Response:
        text = p.get("bericht", "")
        if not text.strip():
            return _error(102)
        numbers, error = self._numbers(p)
        if error is not None:
            return _error(error)
        self.count_recipients(len(numbers))
        error = self._sender_error(p.get("afzender", "").strip())
        if error is not None:
            return _error(error)
        parts, error = self._parts(text, p.get("type", "").strip().lower() == "long")
        if error is not None:
            return _error(error)
        refused = {n: self._number_error(n) for n in numbers}
        valid = [n for n in numbers if refused[n] is None]
        if not valid:
            return _error(refused[numbers[0]] or 106)
        delivery = p.get("delivery", "").strip().lower() in ("ja", "yes")
        datum = p.get("datum", "").strip()
        if datum:
            return self._schedule(p, text, valid, datum, parts)
        if p.get("test", "").strip().lower() in ("ja", "yes"):
            if self.balance < parts * len(valid):
                return _error(108)
            ids = {n: self.new_id() for n in valid}
            return self._answer(numbers, refused, ids, delivery)
        if not self.charge(parts * len(valid)):
            return _error(108)
        ids = {n: self._store(p, text, n, parts).id for n in valid}
        return self._answer(numbers, refused, ids, delivery)

    def _numbers(self, p: dict[str, str]) -> tuple[list[str], int | None]:
        naar = p.get("naar", "").strip()
        if naar.lower() == "groep":
            group = p.get("groep", "").strip()
            if group not in self.groups:
                return [], 125
            if not self.groups[group]:
                return [], 126
            return list(self.groups[group]), None
        numbers = [n.strip() for n in naar.split(",") if n.strip()]
        return (numbers, None) if numbers else ([], 103)

    def _sender_error(self, sender: str) -> int | None:
        if not sender:
            return 109
        if sender.startswith("+"):
            return None if sender[1:].isdigit() and len(sender) <= 17 else 113
        if sender.isdigit():
            return 110
        if len(sender) > MAX_SENDER:
            return 111
        if not re.fullmatch(r"[A-Za-z0-9 ]+", sender):
            return 113
        if sender in self.blocked_senders:
            return 117
        return None

    @staticmethod
    def _parts(text: str, long: bool) -> tuple[int, int | None]:
        if len(text) <= 160:
            return 1, None
        if not long:
            return 0, 105
        if len(text) > 459:
            return 0, 118
        return math.ceil(len(text) / 153), None

    def _number_error(self, number: str) -> int | None:
        if not number.isdigit() or not 8 <= len(number) <= 15:
            return 106
        if number.startswith(self.blocked_prefixes):
            return 107
        if outcome_for(number) == "rejected":
            return 106
        return None

    def _store(self, p: dict[str, str], text: str, number: str, parts: int) -> SimMessage:
        msg = self.add_message(
            SimMessage(
                id=self.new_id(),
                to=number,
                text=text,
                sender=p.get("afzender", "").strip(),
                outcome=outcome_for(number),
                reference=p.get("referentie") or None,
                extra={"parts": parts, "long": p.get("type", "").lower() == "long"},
            )
        )
        if self.callback_url:
            self.schedule_push(
                msg,
                self.callback_url,
                {
                    "smsid": msg.id,
                    "datum": f"{_local(msg.created + self.delivery_seconds):%Y%m%d%H%M%S}",
                    "status": _FINAL[msg.outcome],
                    "referentie": msg.reference or "",
                },
            )
        return msg

    @staticmethod
    def _answer(
        numbers: list[str], refused: dict[str, int | None], ids: dict[str, str], delivery: bool
    ) -> Response:
        if not delivery:
            return _text("OK")
        return _text(
            "\n".join(f"OK {ids[n]}" if n in ids else f"ERROR {refused[n]}" for n in numbers)
        )

    def _schedule(
        self, p: dict[str, str], text: str, numbers: list[str], datum: str, parts: int
    ) -> Response:
        try:
            when = datetime.strptime(datum, "%Y%m%d%H%M").replace(tzinfo=AMSTERDAM)
        except ValueError:
            return _error(121)
        if len(datum) != 12 or when <= datetime.now(AMSTERDAM):
            return _error(121)
        if self.balance < parts * len(numbers):
            return _error(108)
        outbox_id = str(next(self._outbox_ids))
        if p.get("test", "").strip().lower() not in ("ja", "yes"):
            with self._lock:
                self.outbox[outbox_id] = {
                    "numbers": numbers,
                    "text": text,
                    "sender": p.get("afzender", "").strip(),
                    "datum": datum,
                    "reference": p.get("referentie") or None,
                    "email": p.get("emailen", "ja").lower() != "nee",
                }
        outbox = p.get("outboxid", "").strip().lower() in ("ja", "yes")
        return _text(f"OK {outbox_id}" if outbox else "OK")

    # -- gatewayrapport.php -------------------------------------------------
    async def report_page(self, request: Request) -> Response:
        p = await self._params(request)
        msg = self.messages.get(p.get("smsid", "").strip())
        if msg is None:
            return _text("NONE")
        status, at = self._state(msg)
        if p.get("datum", "").strip().lower() in ("ja", "yes"):
            return _text(f"{status} {at:%d/%m/%Y %H:%M:%S}")
        return _text(status)

    def _state(self, msg: SimMessage) -> tuple[str, datetime]:
        """Current status code and its time (Amsterdam) of a stored message."""
        if self.is_final(msg):
            return _FINAL[msg.outcome], _local(msg.created + self.delivery_seconds)
        half = msg.created + self.delivery_seconds / 2
        if time.time() < half:
            return "SUBMITTED", _local(msg.created)
        return "BUFFERED", _local(half)
