"""One ASGI app serving every gateway simulator under `/<provider>`, plus `/_control`.

`/_control` is the tests' and the demo's handle on the simulators: queue
faults, read the request log, set balance/expiry/state and the account-level
callback URL, reset.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from worker.gateways import registry
from worker.gateways.sandbox.base import Fault, ProviderSim


def _simulators() -> dict[str, type[ProviderSim]]:
    """Every registered gateway's simulator (`GatewaySpec.simulator`)."""
    found: dict[str, type[ProviderSim]] = {}
    for spec in registry.specs():
        cls = spec.simulator_class()
        if cls is not None:
            found[spec.name] = cls
    return found


class Sandbox:
    """The simulators of all gateways, with their shared control API."""

    def __init__(self, delivery_seconds: float = 2.0) -> None:
        self.sims: dict[str, ProviderSim] = {}
        for name, cls in _simulators().items():
            self.sims[name] = cls(delivery_seconds=delivery_seconds)
        self.app = Starlette(routes=self._routes(), lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self._close()

    async def _close(self) -> None:
        for sim in self.sims.values():
            await sim.close()

    def _sim(self, request: Request) -> ProviderSim | None:
        return self.sims.get(request.path_params["provider"])

    def _routes(self) -> list[Any]:
        async def stats(request: Request) -> JSONResponse:
            sim = self._sim(request)
            if sim is None:
                return JSONResponse({"error": "unknown provider"}, status_code=404)
            return JSONResponse(
                {
                    "requests": [r.__dict__ for r in sim.requests],
                    "messages": len(sim.messages),
                    "pushes": sim.pushes,
                    "account": sim.account(),
                }
            )

        async def faults(request: Request) -> JSONResponse:
            sim = self._sim(request)
            if sim is None:
                return JSONResponse({"error": "unknown provider"}, status_code=404)
            data = await request.json()
            sim.add_fault(Fault(**data))
            return JSONResponse({"queued": len(sim.faults)})

        async def account(request: Request) -> JSONResponse:
            sim = self._sim(request)
            if sim is None:
                return JSONResponse({"error": "unknown provider"}, status_code=404)
            if request.method == "POST":
                sim.update_account(await request.json())
            return JSONResponse(sim.account())

        async def messages(request: Request) -> JSONResponse:
            sim = self._sim(request)
            if sim is None:
                return JSONResponse({"error": "unknown provider"}, status_code=404)
            return JSONResponse(
                [
                    {
                        "id": m.id,
                        "to": m.to,
                        "text": m.text,
                        "sender": m.sender,
                        "outcome": m.outcome,
                        "reference": m.reference,
                    }
                    for m in sim.messages.values()
                ]
            )

        async def reset(request: Request) -> JSONResponse:
            for sim in self.sims.values():
                sim.reset()
            return JSONResponse({"reset": list(self.sims)})

        routes: list[Any] = [
            Route("/_control/reset", reset, methods=["POST"]),
            Route("/_control/{provider}/stats", stats, methods=["GET"]),
            Route("/_control/{provider}/faults", faults, methods=["POST"]),
            Route("/_control/{provider}/account", account, methods=["GET", "POST"]),
            Route("/_control/{provider}/messages", messages, methods=["GET"]),
        ]
        for name, sim in self.sims.items():
            routes.append(Mount(f"/{name}", routes=sim.routes()))
        return routes


def create_app(delivery_seconds: float = 2.0) -> Starlette:
    return Sandbox(delivery_seconds=delivery_seconds).app
