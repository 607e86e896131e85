"""Keccel simulator, true to tests/fixtures/keccel/keccel-api.txt.

Same paths and fields as api.keccel.com/sms/v2; errors come back as HTTP 200
with `status: Rejected` (send) or `status: Error` (delivery, balance) and a
description, as the real service does. Balance numbers come back as strings
to keep clients tolerant. PUSH: when the account callback URL is set (the
dashboard setting; `/_control/keccel/account`), each final status is pushed
as `GET <url>?messageID=...&status=DELIVERED|FAILED`.
"""

from __future__ import annotations

import json
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

_FINAL = {"delivered": "DELIVERED", "undelivered": "FAILED", "expired": "FAILED"}


class KeccelSim(ProviderSim):
    name = "keccel"

    def build_routes(self) -> list[Route]:
        return [
            self.route("/message.asp", self.message, ["POST"]),
            self.route("/delivery.asp", self.delivery, ["GET"]),
            self.route("/balance.asp", self.balance_check, ["GET"]),
        ]

    def _account_problem(self) -> str | None:
        if not self.active:
            return "Account inactive"
        if self.expires_at is not None and self.expires_at <= datetime.utcnow():
            return "Account expired"
        return None

    async def message(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"status": "Rejected", "description": "Invalid JSON"})
        if not isinstance(data, dict):
            return JSONResponse({"status": "Rejected", "description": "Invalid JSON"})
        for field in ("token", "to", "from", "message"):
            if not str(data.get(field) or "").strip():
                return JSONResponse(
                    {"status": "Rejected", "description": f"Missing parameter: {field}"}
                )
        if data["token"] != self.credentials["token"]:
            return JSONResponse({"status": "Rejected", "description": "Invalid token"})
        problem = self._account_problem()
        if problem:
            return JSONResponse({"status": "Rejected", "description": problem})
        to = str(data["to"]).strip()
        self.count_recipients(1)
        if not to.isdigit() or not to.startswith("243"):
            return JSONResponse({"status": "Rejected", "description": "Invalid destination number"})
        outcome = outcome_for(to)
        if outcome == "rejected":
            return JSONResponse(
                {"status": "Rejected", "description": "Destination rejected by the network"}
            )
        if not self.charge(1):
            return JSONResponse({"status": "Rejected", "description": "Insufficient credit"})
        msg = self.add_message(
            SimMessage(
                id=self.new_id(),
                to=to,
                text=str(data["message"]),
                sender=str(data["from"]),
                outcome=outcome,
            )
        )
        if self.callback_url:
            self.schedule_push(
                msg, self.callback_url, {"messageID": msg.id, "status": _FINAL[outcome]}
            )
        return JSONResponse(
            {
                "status": "SENT",
                "messageID": msg.id,
                "description": "Message submitted to the network",
            }
        )

    async def delivery(self, request: Request) -> Response:
        q = request.query_params
        if q.get("token") != self.credentials["token"]:
            return JSONResponse({"status": "Error", "description": "Invalid token"})
        message_id = (q.get("messageid") or q.get("messageID") or "").strip()
        if not message_id:
            return JSONResponse({"status": "Error", "description": "Missing parameter: messageid"})
        msg = self.messages.get(message_id)
        if msg is None:
            return JSONResponse(
                {"messageid": message_id, "status": "Error", "description": "Unknown message"}
            )
        status = _FINAL[msg.outcome] if self.is_final(msg) else "SENT"
        return JSONResponse({"messageid": message_id, "status": status})

    async def balance_check(self, request: Request) -> Response:
        q = request.query_params
        if q.get("token") != self.credentials["token"]:
            return JSONResponse({"status": "Error", "description": "Invalid token"})
        expiration = self.expires_at.strftime("%d-%b-%Y %H:%M:%S") if self.expires_at else ""
        return JSONResponse(
            {
                "balance": f"{self.balance:g}",
                "expiration": expiration,
                "status": "Active" if self.active else "inactive",
            }
        )
