"""Keccel simulator, true to tests/fixtures/keccel/keccel-api.txt.

Same paths and fields as api.keccel.com/sms/v2; errors come back as HTTP 200
with `status: Rejected` (send) or `status: Error` (delivery, balance) and a
description, as the real service does. Balance numbers come back as strings
to keep clients tolerant. PUSH: when the account callback URL is set (the
dashboard setting; `/_control/keccel/account`), each final status is pushed
as `GET <url>?messageID=...&status=DELIVERED|FAILED`.

Parameters are read from the query string and from a JSON object body, on
every path: the document says "both requests and responses are transmitted in
JSON format" and tables the GETs' parameters without saying where they go, the
seed SDK `pykeccelsms` sends them as a JSON body even on its GETs, and smsq's
adapter sends them both ways. A body that is not a JSON object is refused.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

_FINAL = {"delivered": "DELIVERED", "undelivered": "FAILED", "expired": "FAILED"}
_SEND_FIELDS = ("token", "to", "from", "message")


def _text(value: Any) -> str:
    """A JSON value as the text a query string would carry (numbers too)."""
    return "" if value is None else str(value)


async def request_params(request: Request) -> dict[str, str] | None:
    """The query string, with a JSON object body's fields over it; None for a body
    that is not a JSON object. Names are lower-cased: the document writes both
    `messageID` and `messageid`."""
    params = {k.lower(): v for k, v in request.query_params.items()}
    body = await request.body()
    if not body.strip():
        return params
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, too deep
        return None
    if not isinstance(data, dict):
        return None
    params.update({str(k).lower(): _text(v) for k, v in data.items()})
    return params


def _rejected(description: str) -> JSONResponse:
    return JSONResponse({"status": "Rejected", "description": description})


def _error(description: str, **fields: str) -> JSONResponse:
    return JSONResponse({**fields, "status": "Error", "description": description})


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
        params = await request_params(request)
        if params is None:
            return _rejected("Invalid JSON")
        missing = next((f for f in _SEND_FIELDS if not params.get(f, "").strip()), None)
        if missing:
            return _rejected(f"Missing parameter: {missing}")
        if params["token"] != self.credentials["token"]:
            return _rejected("Invalid token")
        problem = self._account_problem()
        if problem:
            return _rejected(problem)
        to = params["to"].strip()
        self.count_recipients(1)
        if not to.isdigit() or not to.startswith("243"):
            return _rejected("Invalid destination number")
        outcome = outcome_for(to)
        if outcome == "rejected":
            return _rejected("Destination rejected by the network")
        if not self.charge(1):
            return _rejected("Insufficient credit")
        msg = self.add_message(
            SimMessage(
                id=self.new_id(),
                to=to,
                text=params["message"],
                sender=params["from"],
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
        params = await request_params(request)
        if params is None:
            return _error("Invalid JSON")
        if params.get("token") != self.credentials["token"]:
            return _error("Invalid token")
        message_id = params.get("messageid", "").strip()
        if not message_id:
            return _error("Missing parameter: messageid")
        msg = self.messages.get(message_id)
        if msg is None:
            return _error("Unknown message", messageid=message_id)
        status = _FINAL[msg.outcome] if self.is_final(msg) else "SENT"
        return JSONResponse({"messageid": message_id, "status": status})

    async def balance_check(self, request: Request) -> Response:
        params = await request_params(request)
        if params is None:
            return _error("Invalid JSON")
        if params.get("token") != self.credentials["token"]:
            return _error("Invalid token")
        expiration = self.expires_at.strftime("%d-%b-%Y %H:%M:%S") if self.expires_at else ""
        return JSONResponse(
            {
                "balance": f"{self.balance:g}",
                "expiration": expiration,
                "status": "Active" if self.active else "inactive",
            }
        )
