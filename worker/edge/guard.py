"""Check the caller before a body is read, and bound every body.

A pure ASGI middleware, because FastAPI reads and parses a route's body before
its dependencies run: a dependency could not refuse a 10 MB body sent without a
key. The key is compared as bytes, so a credential that is not ASCII is a 401,
never a decoding error.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.settings import Settings, get_settings, parse_api_keys
from worker.ui import auth as ui_auth

API_PREFIX = "/v1/"


class BodyTooLarge(HTTPException):
    """Raised while a body is read once it passes SMSQ_MAX_BODY_BYTES (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes (SMSQ_MAX_BODY_BYTES)")


def configured_keys(settings: Settings) -> list[tuple[str, str]]:
    """(name, key) pairs of SMSQ_API_KEYS (`name:key,...`); empty when the HTTP API is off."""
    return parse_api_keys(settings.api_keys.get_secret_value() if settings.api_keys else "")


def bearer_key(header: bytes | None) -> bytes | None:
    """The key of `Authorization: Bearer <key>`, as the raw bytes the client sent."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return rest.strip() or None


def key_owner(given: bytes | None, keys: Sequence[tuple[str, str]]) -> str | None:
    """The name of the key `given`, or None. Every key is compared, in constant time
    per key, over bytes (any byte value compares, none raises)."""
    if given is None:
        return None
    owner: str | None = None
    for name, key in keys:
        if hmac.compare_digest(given, key.encode()) and owner is None:
            owner = name
    return owner


def key_is_known(given: bytes | None, keys: Sequence[tuple[str, str]]) -> bool:
    return key_owner(given, keys) is not None


def api_caller(keys: Sequence[tuple[str, str]], header: bytes | None) -> tuple[int, str] | str:
    """The caller's key name, or (status, error) when an API request may not go on."""
    if not keys:
        return 404, "the HTTP enqueue API is off (set SMSQ_API_KEYS)"
    owner = key_owner(bearer_key(header), keys)
    if owner is None:
        return 401, "missing or wrong API key"
    return owner


def api_refusal(keys: Sequence[tuple[str, str]], header: bytes | None) -> tuple[int, str] | None:
    """(status, error) when an API request may not go on; None when its key is good."""
    caller = api_caller(keys, header)
    return caller if isinstance(caller, tuple) else None


OWNER_STATE = "smsq_owner"


def request_owner(scope: Scope) -> str:
    """The key name EdgeGuard found for this /v1/ request (routes read it from here)."""
    return str(scope.get("state", {})[OWNER_STATE])


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length the client declared, when it declared a number."""
    for key, value in headers:
        if key.lower() == b"content-length":
            text = bytes(value).strip()
            return int(text) if text.isdigit() else None
    return None


def ui_refusal(status: int, error: str) -> JSONResponse:
    """/ui without its credentials: 401 asking for them; dashboard off: the same 404 as
    any path the API does not have."""
    if status == 404:
        return JSONResponse({"error": error}, status_code=404)
    return JSONResponse(
        {"error": error}, status_code=status, headers={"WWW-Authenticate": ui_auth.REALM}
    )


def too_large_response(limit: int) -> JSONResponse:
    error = BodyTooLarge(limit).detail
    return JSONResponse({"error": error}, status_code=413, headers={"Connection": "close"})


class EdgeGuard:
    """API key first (401/404 before any body byte is read), or for /ui the dashboard's
    basic auth (401/404), then the body size cap (413) wherever a route reads its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        if scope["path"].startswith(API_PREFIX):
            caller = api_caller(configured_keys(settings), header(scope, b"authorization"))
            if isinstance(caller, tuple):
                status, error = caller
                answer = JSONResponse({"error": error}, status_code=status)
                await answer(scope, receive, send)
                return
            scope.setdefault("state", {})[OWNER_STATE] = caller
        elif ui_auth.is_ui_path(scope["path"]):  # the dashboard: basic auth, 404 when off
            user = ui_auth.caller(settings, header(scope, b"authorization"))
            if isinstance(user, tuple):
                await ui_refusal(*user)(scope, receive, send)
                return
            scope.setdefault("state", {})[ui_auth.USER_STATE] = user
        limit = settings.max_body_bytes
        declared = declared_length(scope.get("headers", ()))
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped(receive, limit, declared), tracked)
        except BodyTooLarge:  # a route that let it through: answer if nothing was sent yet
            if started:
                raise
            await too_large_response(limit)(scope, receive, send)


def capped(receive: Receive, limit: int, declared: int | None = None) -> Receive:
    """`receive` that raises BodyTooLarge once more than `limit` body bytes have come,
    or at the first read when the declared Content-Length is over it already.

    The check happens where the body is read, so each route checks its caller
    first (the DLR token lives in the path) and a refused caller gets 401/403."""
    seen = 0

    async def receive_capped() -> Message:
        nonlocal seen
        if declared is not None and declared > limit:
            raise BodyTooLarge(limit)
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_capped
