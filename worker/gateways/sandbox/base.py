"""What every gateway simulator shares: state, outcomes, faults, request log, pushes.

Each simulator (one module per gateway) speaks its gateway's own paths, fields
and answers; this base gives them a message book, a fault queue that tests
fill through `/_control`, a log of every request (to count sends and rates),
and delivery callbacks pushed over real HTTP.

Outcome of a message, decided by the last digit of the number so that demos
and tests can choose it:
  0 -> rejected at send, 9 -> undelivered, 8 -> expired, anything else -> delivered.
A message stays pending for `delivery_seconds` after the send, then is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route


def sandbox_credentials(provider: str) -> dict[str, str]:
    """The credentials `provider`'s simulator accepts, by settings field."""
    from worker.gateways.registry import spec

    return dict(spec(provider).sandbox_credentials)


OUTCOMES = ("delivered", "undelivered", "expired", "rejected")


def outcome_for(to: str) -> str:
    """The fate the sandbox gives a number: see the module docstring."""
    last = to.strip()[-1:] if to else ""
    return {"0": "rejected", "9": "undelivered", "8": "expired"}.get(last, "delivered")


@dataclass
class SimMessage:
    id: str
    to: str
    text: str
    sender: str = ""
    outcome: str = "delivered"
    created: float = field(default_factory=time.time)
    reference: str | None = None
    callback_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fault:
    """One canned failure, served instead of the real answer `times` times."""

    status: int = 503
    body: str = "Service Unavailable"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts, latency)
    times: int = 1
    passthrough: bool = False  # do the work at once, answer normally after the delay


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any sliding `window` seconds (requests per second, as a
    gateway counting its rate limit would see them)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@dataclass
class RequestRecord:
    at: float
    method: str
    path: str
    recipients: int = 0
    status: int = 200
    client: str = ""  # the address it came from (the fault suite's hosts have their own)


# The log record of the request a simulator's handler is serving (one per asyncio task).
_current_request: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "smsq_sim_request", default=None
)
Handler = Callable[[Request], Awaitable[Response]]


class ProviderSim:
    """Base of one gateway simulator. Subclasses set `name` and `build_routes`."""

    name: str = ""

    def __init__(self, delivery_seconds: float = 2.0) -> None:
        self.delivery_seconds = delivery_seconds
        # What the gateway's spec says its simulator accepts; anything else gets the
        # gateway's own auth error.
        self.credentials = dict(sandbox_credentials(self.name))
        self.messages: dict[str, SimMessage] = {}
        self.requests: list[RequestRecord] = []
        self.faults: deque[Fault] = deque()
        self.pushes: list[dict[str, Any]] = []
        self.balance: float = 100000.0
        self.expires_at: datetime | None = None
        self.active: bool = True
        self.callback_url: str | None = None  # account-level DLR URL (dashboard setting)
        # Push one report per part of a long message (where the sim supports it).
        self.per_part_reports: bool = False
        self._ids = itertools.count(100001)
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- to fill in --------------------------------------------------------
    def build_routes(self) -> list[Route]:
        raise NotImplementedError

    # -- message book ------------------------------------------------------
    def new_id(self) -> str:
        with self._lock:
            return str(next(self._ids))

    def add_message(self, msg: SimMessage) -> SimMessage:
        with self._lock:
            self.messages[msg.id] = msg
        return msg

    def is_final(self, msg: SimMessage) -> bool:
        return msg.outcome == "rejected" or time.time() >= msg.created + self.delivery_seconds

    def final_at(self, msg: SimMessage) -> datetime:
        return datetime.fromtimestamp(msg.created + self.delivery_seconds, UTC)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.requests.clear()
            self.faults.clear()
            self.pushes.clear()
            self.balance = 100000.0
            self.expires_at = None
            self.active = True
            self.callback_url = None
            self.per_part_reports = False

    # -- routing with log and faults --------------------------------------
    def routes(self) -> list[Route]:
        return self.build_routes()

    def route(self, path: str, handler: Handler, methods: list[str]) -> Route:
        """A route whose handler is logged and can be replaced by a queued fault."""

        async def endpoint(request: Request) -> Response:
            client = request.client.host if request.client else ""
            record = RequestRecord(time.time(), request.method, request.url.path, client=client)
            _current_request.set(record)  # this request's, whatever others run meanwhile
            with self._lock:
                self.requests.append(record)
            fault = self._take_fault()
            if fault is not None and fault.passthrough:
                # The gateway does the work at once; only its answer is late, or lost
                # when the client has given up by then (the uncertain send).
                response = await handler(request)
                record.status = response.status_code
                await asyncio.sleep(fault.delay)
                return response
            if fault is not None:
                await asyncio.sleep(fault.delay)
                record.status = fault.status
                return PlainTextResponse(
                    fault.body, status_code=fault.status, headers=fault.headers
                )
            response = await handler(request)
            record.status = response.status_code
            return response

        return Route(path, endpoint, methods=methods)

    def count_recipients(self, n: int) -> None:
        """Note on the current request how many recipients it carried (the request this
        handler serves, not the last one logged: requests run concurrently)."""
        record = _current_request.get()
        with self._lock:
            if record is not None:
                record.recipients = n
            elif self.requests:
                self.requests[-1].recipients = n

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.popleft()
            return fault

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def request_count(self, path_suffix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.endswith(path_suffix) and r.status < 400)

    # -- delivery callbacks -----------------------------------------------
    def schedule_push(
        self,
        msg: SimMessage,
        url: str,
        params: dict[str, str],
        method: str = "GET",
        at_fraction: float = 1.0,
    ) -> None:
        """Push `params` to `url` once the message is final (like the real gateway);
        `at_fraction` of the delivery time instead, for per-part reports."""
        delay = (
            0.0
            if msg.outcome == "rejected"
            else max(0.0, msg.created + self.delivery_seconds * at_fraction - time.time())
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self._push_later(delay, url, params, method))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push_later(
        self, delay: float, url: str, params: dict[str, str], method: str
    ) -> None:
        await asyncio.sleep(delay)
        entry: dict[str, Any] = {"url": url, "params": params, "at": time.time()}
        for attempt in range(5):
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    if method == "GET":
                        response = await client.get(url, params=params)
                    else:
                        response = await client.post(url, data=params)
                entry["status"] = response.status_code
                if response.status_code < 500:
                    break
            except httpx.HTTPError as exc:
                entry["status"] = f"error: {type(exc).__name__}"
            await asyncio.sleep(min(2**attempt, 10))
        with self._lock:
            self.pushes.append(entry)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- account state, for /_control --------------------------------------
    def account(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "active": self.active,
            "callback_url": self.callback_url,
            "delivery_seconds": self.delivery_seconds,
            "per_part_reports": self.per_part_reports,
        }

    def update_account(self, data: dict[str, Any]) -> None:
        if "balance" in data:
            self.balance = float(data["balance"])
        if "expires_at" in data:
            value = data["expires_at"]
            self.expires_at = datetime.fromisoformat(value) if value else None
        if "expires_in_days" in data:
            self.expires_at = datetime.now(UTC).replace(tzinfo=None) + timedelta(
                days=float(data["expires_in_days"])
            )
        if "active" in data:
            self.active = bool(data["active"])
        if "callback_url" in data:
            self.callback_url = data["callback_url"] or None
        if "delivery_seconds" in data:
            self.delivery_seconds = float(data["delivery_seconds"])
        if "per_part_reports" in data:
            self.per_part_reports = bool(data["per_part_reports"])

    def charge(self, segments: int) -> bool:
        """Take credit for a send; False when there is not enough."""
        with self._lock:
            if self.balance < segments:
                return False
            self.balance -= segments
            return True
