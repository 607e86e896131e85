"""TinySMS's simulator, served by the sandbox beside the four real gateways'."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.gateways.sandbox.base import ProviderSim, SimMessage, outcome_for

_FINAL = {"delivered": "DELIVERED", "undelivered": "FAILED", "expired": "FAILED"}


class TinySmsSim(ProviderSim):
    name = "tinysms"

    def build_routes(self) -> list[Route]:
        return [
            self.route("/send", self.send, ["POST"]),
            self.route("/status", self.status, ["GET"]),
            self.route("/balance", self.balance_check, ["GET"]),
        ]

    def _wrong_key(self, key: object) -> bool:
        return key != self.credentials["key"]

    async def send(self, request: Request) -> Response:
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "not JSON"}, status_code=400)
        if not isinstance(data, dict) or self._wrong_key(data.get("key")):
            return JSONResponse({"error": "wrong key"}, status_code=401)
        self.count_recipients(1)
        to = str(data.get("to", ""))
        msg = SimMessage(self.new_id(), to, str(data.get("text", "")), outcome=outcome_for(to))
        self.add_message(msg)
        self.charge(1)
        return JSONResponse({"id": msg.id})

    async def status(self, request: Request) -> Response:
        if self._wrong_key(request.query_params.get("key")):
            return JSONResponse({"error": "wrong key"}, status_code=401)
        msg = self.messages.get(request.query_params.get("id", ""))
        if msg is None:
            return JSONResponse({"error": "unknown id"}, status_code=404)
        state = _FINAL[msg.outcome] if self.is_final(msg) else "QUEUED"
        return JSONResponse({"id": msg.id, "state": state})

    async def balance_check(self, request: Request) -> Response:
        if self._wrong_key(request.query_params.get("key")):
            return JSONResponse({"error": "wrong key"}, status_code=401)
        return JSONResponse({"credits": self.balance})
