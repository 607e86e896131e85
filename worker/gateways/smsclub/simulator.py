"""SMSClub simulator, true to tests/fixtures/smsclub/smsclub-json-api.txt.

Same paths as im.smsclub.mobi, all POST with `Authorization: Bearer <token>`:
/sms/send, /sms/status, /sms/originator, /sms/balance. Answers are wrapped in
`success_request.info`; errors use the documented HTTP codes with a JSON
`{"error": ...}` body: 400 input validation (also unknown alpha name and no
credit), 401 authentication, 453 the same message again within 2 minutes.
Numbers the gateway will not take (not 380 + 9 digits, or outcome "rejected")
come back in `add_info` without an id. No delivery callbacks: statuses are
pulled (ENROUTE until final, then DELIVRD / UNDELIV / EXPIRED).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

DEFAULT_SENDERS = ("SMSQ", "VashZakaz", "SMSClub")
DUPLICATE_WINDOW = 120.0  # seconds
MAX_PHONES = 100
MAX_IDS = 100
_FINAL = {"delivered": "DELIVRD", "undelivered": "UNDELIV", "expired": "EXPIRED"}

DuplicateKey = tuple[tuple[str, ...], str, str]


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _invalid(what: str) -> JSONResponse:
    return _error(400, f"Input validation error: {what}")


def _success(info: Any, **extra: Any) -> JSONResponse:
    return JSONResponse({"success_request": {"info": info, **extra}})


class SmsClubSim(ProviderSim):
    name = "smsclub"

    def __init__(self, delivery_seconds: float = 2.0) -> None:
        super().__init__(delivery_seconds=delivery_seconds)
        self.senders: list[str] = list(DEFAULT_SENDERS)
        self._recent: dict[DuplicateKey, float] = {}

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._recent.clear()
            self.senders = list(DEFAULT_SENDERS)

    def build_routes(self) -> list[Route]:
        return [
            self.route("/sms/send", self.send, ["POST"]),
            self.route("/sms/status", self.status, ["POST"]),
            self.route("/sms/originator", self.originator, ["POST"]),
            self.route("/sms/balance", self.balance_check, ["POST"]),
        ]

    # -- shared checks -----------------------------------------------------
    def _auth_error(self, request: Request) -> Response | None:
        """401 unless the Bearer token matches and the account is usable."""
        scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.credentials["token"]:
            return _error(401, "User authentication error")
        if not self.active:
            return _error(401, "User authentication error: account blocked")
        if self.expires_at is not None and self.expires_at <= datetime.utcnow():
            return _error(401, "User authentication error: account expired")
        return None

    async def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _invalid("malformed JSON")
        if not isinstance(data, dict):
            return _invalid("malformed JSON: an object is expected")
        return data

    # -- send --------------------------------------------------------------
    async def send(self, request: Request) -> Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        data = await self._body(request)
        if isinstance(data, Response):
            return data
        problem = self._send_problem(data)
        if problem is not None:
            return problem
        phones = [str(p).strip() for p in data["phone"]]
        message, sender = str(data["message"]), str(data["src_addr"]).strip()
        self.count_recipients(len(phones))
        key: DuplicateKey = (tuple(sorted(phones)), message, sender)
        if self._is_duplicate(key):
            return _error(453, "Duplicate message")
        accepted = [p for p in phones if self._number_error(p) is None]
        if accepted and not self.charge(len(accepted)):
            return _invalid(
                f"insufficient funds: {len(accepted)} UAH needed, {self.balance:.4f} UAH left"
            )
        info: dict[str, str] = {}
        add_info: dict[str, str] = {}
        for phone in phones:
            error = self._number_error(phone)
            if error is not None:
                add_info[phone] = error
                continue
            msg = self.add_message(
                SimMessage(
                    id=self.new_id(),
                    to=phone,
                    text=message,
                    sender=sender,
                    outcome=outcome_for(phone),
                )
            )
            info[msg.id] = phone
        with self._lock:
            self._recent[key] = time.time()
        return _success(info, **({"add_info": add_info} if add_info else {}))

    def _send_problem(self, data: dict[str, Any]) -> Response | None:
        phones = data.get("phone")
        if phones is None:
            return _invalid("phone is required")
        if not isinstance(phones, list):
            return _invalid("phone must be an array")
        if not phones:
            return _invalid("phone is empty")
        if len(phones) > MAX_PHONES:
            return _invalid(f"too many numbers ({len(phones)} > {MAX_PHONES})")
        if not all(isinstance(p, str | int) and str(p).strip() for p in phones):
            return _invalid("phone must hold numbers")
        if not str(data.get("message") or "").strip():
            return _invalid("message is required")
        sender = str(data.get("src_addr") or "").strip()
        if not sender:
            return _invalid("src_addr is required")
        if sender not in self.senders:
            return _invalid(f"unknown src_addr {sender!r}")
        return None

    def _number_error(self, phone: str) -> str | None:
        if not phone.isdigit() or not phone.startswith("380") or len(phone) != 12:
            return "invalid number"
        if outcome_for(phone) == "rejected":
            return "rejected by operator"
        return None

    def _is_duplicate(self, key: DuplicateKey) -> bool:
        now = time.time()
        with self._lock:
            for old, at in list(self._recent.items()):
                if now - at >= DUPLICATE_WINDOW:
                    del self._recent[old]
            return key in self._recent

    # -- status ------------------------------------------------------------
    async def status(self, request: Request) -> Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        data = await self._body(request)
        if isinstance(data, Response):
            return data
        ids = data.get("id_sms")
        if ids is None:
            return _invalid("id_sms is required")
        if not isinstance(ids, list) or not ids:
            return _invalid("id_sms must be a non-empty array")
        if len(ids) > MAX_IDS:
            return _invalid(f"too many ids ({len(ids)} > {MAX_IDS})")
        self.count_recipients(len(ids))
        info: dict[str, str] = {}
        for raw_id in ids:
            msg = self.messages.get(str(raw_id).strip())
            if msg is not None:
                info[msg.id] = _FINAL[msg.outcome] if self.is_final(msg) else "ENROUTE"
        return _success(info)

    # -- account -----------------------------------------------------------
    async def originator(self, request: Request) -> Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        return _success(list(self.senders))

    async def balance_check(self, request: Request) -> Response:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        return _success({"money": f"{self.balance:.4f}", "currency": "UAH"})
