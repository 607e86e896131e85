"""The web process (`worker.web:app`): delivery callbacks, health, metrics, HTTP enqueue API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, text
from sqlmodel import select
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from producer import db, suppressions
from producer.api import get_status, send_bulk, send_sms
from producer.errors import EnqueueError, InvalidMessage, MessageRefused, StoreUnavailable
from producer.limits import limits_for
from producer.models import ACTIVE, Message, status_is
from producer.quotas import KEY_SCOPE, LimitsUnavailable, parse_limit, take, too_big
from producer.settings import get_settings, provider_names, provider_settings
from producer.validation import NOT_BLANK_PATTERN
from worker import redis_client
from worker.edge.api_schema import (
    API_ERRORS,
    BODY_ERRORS,
    CREATE_ERRORS,
    PHONE_NUMBER,
    PROMETHEUS_TEXT,
    Created,
    CreatedBulk,
    Health,
    MessageIn,
    MessageOut,
    SuppressionIn,
    SuppressionOut,
    SuppressionPage,
    runtime_schema,
)
from worker.edge.guard import BodyTooLarge, EdgeGuard, request_owner, too_large_response
from worker.gateways.base import ProviderError
from worker.gateways.registry import get_adapter
from worker.ops import metrics
from worker.ops.logs import install as install_logging
from worker.ops.startup_checks import warn_once
from worker.tracking.callback_urls import token_is_valid
from worker.tracking.dlr import apply_push
from worker.ui.routes import router as ui_router

log = logging.getLogger("smsq.web")

# Redaction (and JSON lines with SMSQ_LOG_JSON) for this process's own logs and
# uvicorn's: access lines would otherwise show the secret of callback paths.
for _name in ("", "uvicorn.error", "uvicorn.access"):
    install_logging(logging.getLogger(_name))


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    warn_once()  # plain-http gateways with credentials
    yield


app = FastAPI(
    lifespan=_lifespan,
    title="smsq",
    version="0.1.0",
    description="Delivery callbacks, health, metrics and the HTTP enqueue API of smsq.",
)


app.add_middleware(EdgeGuard)
app.include_router(ui_router)  # the operator's dashboard at /ui (worker/ui), not in OpenAPI


def _openapi() -> dict[str, Any]:
    """FastAPI's document, with the rules this deployment's settings decide (built per
    request: tests and `smsq dev` change the settings under a running process)."""
    global _base_schema
    if _base_schema is None:
        _base_schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
    return runtime_schema(_base_schema, get_settings())


_base_schema: dict[str, Any] | None = None
app.openapi = _openapi  # type: ignore[method-assign]


def validation_problem(errors: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A 422 body naming the field and the rule, never echoing the input."""
    problems = [{"field": _field_of(e), "rule": _rule_of(e)} for e in errors[:10]]
    first = problems[0] if problems else {"field": "body", "rule": "is not valid"}
    return {"error": f"{first['field']}: {first['rule']}", **first, "errors": problems}


def _field_of(error: Mapping[str, Any]) -> str:
    """`to`, `to[1]` or `body` from pydantic's location (union member names left out)."""
    loc = [p for p in error.get("loc", ()) if p != "body"]
    if error.get("type") == "json_invalid" or not loc or not isinstance(loc[0], str):
        return "body"
    index = next((p for p in loc[1:] if isinstance(p, int)), None)
    return loc[0] if index is None else f"{loc[0]}[{index}]"


def _rule_of(error: Mapping[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "is not valid JSON"
    # A model's own check (`raise ValueError`) reads "Value error, <rule>": keep the rule.
    return str(error.get("msg", "is not valid")).removeprefix("Value error, ")


@app.exception_handler(RequestValidationError)
async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_problem(exc.errors()), status_code=422)


@app.exception_handler(BodyTooLarge)
async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return too_large_response(get_settings().max_body_bytes)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """Starlette's own answers (unknown path, wrong method, unreadable body) in the
    API's error shape, `{"error": ...}`."""
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeError):
        # A body that is not UTF-8 is not JSON: the 422 of any other broken JSON.
        return JSONResponse(validation_problem([{"type": "json_invalid"}]), status_code=422)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path: Starlette's own Allow names only
    the first route that matched the path (GET and POST /v1/suppressions are two)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match in (Match.FULL, Match.PARTIAL):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


_registry = CollectorRegistry()
_registry.register(metrics.SharedCollector())


@app.get(
    "/healthz",
    operation_id="health",
    response_model=None,
    responses={
        200: {"model": Health, "description": "Store and broker reachable"},
        503: {"model": Health, "description": "The store or the broker is unreachable"},
    },
)
def healthz() -> JSONResponse:
    """Liveness and what this process can reach."""
    checks: dict[str, Any] = {}
    try:
        with db.session() as s:
            s.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:  # report, never crash the health check
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        redis_client.shared().ping()
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503
    )


@app.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        }
    },
)
def prometheus_metrics() -> Response:
    """Counters from every worker (kept in Redis) and the messages still moving, from
    the store. Final messages are counted by `smsq_messages_total{provider,status}`
    (every change, as it happens), not here: a scrape reads the active rows' index
    only, however long the history (a GROUP BY over the whole table grew with it)."""
    body = generate_latest(_registry).decode()
    try:
        with db.session() as s:
            rows = s.exec(
                select(Message.provider, Message.priority, Message.status, func.count())
                .where(status_is(*ACTIVE))
                .group_by(Message.status, Message.provider, Message.priority)
            ).all()
        lines = active_gauges(
            [(p, pr, st, n) for p, pr, st, n in rows], get_settings().configured_providers()
        )
    except Exception:
        log.warning("metrics: store unavailable", exc_info=True)
        lines = []
    return PlainTextResponse(body + "\n".join(lines) + "\n", media_type=CONTENT_TYPE_LATEST)


def active_gauges(
    rows: Sequence[tuple[str, str, str, int]], providers: Sequence[str] = ()
) -> list[str]:
    """`smsq_messages_by_status` and `smsq_messages_by_priority` from (provider,
    priority, status, count) rows of the active statuses; every status of each of
    `providers` (the configured ones) is shown, 0 when empty, so a drained queue
    reads 0 rather than vanishing."""
    by_status: dict[tuple[str, str], int] = {}
    by_priority: dict[tuple[str, str, str], int] = {}
    for provider, priority, status, count in rows:
        by_status[(provider, status)] = by_status.get((provider, status), 0) + count
        by_priority[(provider, priority, status)] = count
    for provider in {p for p, _s in by_status} | set(providers):
        for status in ACTIVE:
            by_status.setdefault((provider, status), 0)
    lines = [
        "# HELP smsq_messages_by_status Messages not final yet, by provider and status"
        " (final ones: smsq_messages_total)",
        "# TYPE smsq_messages_by_status gauge",
    ]
    for (provider, status), count in sorted(by_status.items()):
        lines.append(f'smsq_messages_by_status{{provider="{provider}",status="{status}"}} {count}')
    lines += [
        "# HELP smsq_messages_by_priority Messages not final yet, by provider, priority, status",
        "# TYPE smsq_messages_by_priority gauge",
    ]
    for (provider, priority, status), count in sorted(by_priority.items()):
        labels = f'provider="{provider}",priority="{priority}",status="{status}"'
        lines.append(f"smsq_messages_by_priority{{{labels}}} {count}")
    return lines


async def _dlr(provider: str, token: str, request: Request) -> Response:
    """A gateway's delivery report. Forged: 403; malformed: 400; unknown id: kept, 200.

    The work (secret check in Redis, parse, store) runs in the thread pool so a
    slow store never stalls the event loop, and a duplicate report is harmless:
    the state machine keeps it as an event and changes nothing.
    """
    if provider not in provider_names() or not limits_for(provider).supports_push:
        return JSONResponse({"error": "no delivery callbacks for this provider"}, status_code=404)
    if provider_settings(provider).dlr_mode == "pull":
        # Reports of a provider that smsq polls are not taken: they would race the polls.
        error = f"delivery callbacks for {provider} are off (SMSQ_{provider.upper()}_DLR_MODE=pull)"
        return JSONResponse({"error": error}, status_code=404)
    try:
        valid = await run_in_threadpool(token_is_valid, provider, token)
    except Exception:
        log.warning("callback secret unavailable", exc_info=True)
        return JSONResponse({"error": "callback secret unavailable"}, status_code=503)
    if not valid:
        metrics.CALLBACKS.labels(provider, "forged").inc()
        return JSONResponse({"error": "forbidden"}, status_code=403)
    params: dict[str, str] = dict(request.query_params)
    try:
        body = await request.body()
        if request.method == "POST" and "form" in (request.headers.get("content-type") or ""):
            # A form's fields count as query parameters (python-multipart parses
            # it); a file part is no report field. Broken forms: 400 below.
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    except BodyTooLarge:
        metrics.CALLBACKS.labels(provider, "malformed").inc()
        return too_large_response(get_settings().max_body_bytes)
    except Exception:
        metrics.CALLBACKS.labels(provider, "malformed").inc()
        return JSONResponse({"error": "malformed callback: unreadable body"}, status_code=400)
    try:
        reports = get_adapter(provider).parse_callback(params, body)
    except ProviderError as exc:
        metrics.CALLBACKS.labels(provider, "malformed").inc()
        return JSONResponse({"error": f"malformed callback: {exc}"}, status_code=400)
    except Exception:
        metrics.CALLBACKS.labels(provider, "malformed").inc()
        return JSONResponse({"error": "malformed callback"}, status_code=400)
    try:
        counts = await run_in_threadpool(apply_push, provider, reports)
    except Exception:
        log.exception("could not store a %s delivery callback", provider)
        metrics.CALLBACKS.labels(provider, "error").inc()
        # 503 makes the gateway retry later instead of losing the report.
        return JSONResponse({"error": "store unavailable, retry later"}, status_code=503)
    metrics.CALLBACKS.labels(provider, "accepted").inc()
    return JSONResponse({"ok": True, **counts})


app.add_api_route("/dlr/{provider}/{token}", _dlr, methods=["GET", "POST"], include_in_schema=False)


@app.post(
    "/v1/messages",
    operation_id="createMessage",
    status_code=201,
    response_model=None,
    responses={
        201: {
            "model": Created | CreatedBulk,
            "description": "Queued: `id`, or `ids` (one per number) for a list",
            "links": {
                "readMessage": {
                    "operationId": "readMessage",
                    "parameters": {"message_id": "$response.body#/id"},
                    "description": "The message just queued (one number)",
                }
            },
        },
        **CREATE_ERRORS,
    },
)
def create_message(body: MessageIn, request: Request) -> Any:
    """Queue a message (or a bulk send when `to` is a list). Same rules as `send_sms`.

    The API key was checked by EdgeGuard before the body was read."""
    limit = get_settings().http_max_bulk
    if isinstance(body.to, list) and len(body.to) > limit:
        rule = f"has {len(body.to)} numbers; at most {limit} per request (SMSQ_HTTP_MAX_BULK)"
        return JSONResponse({"error": f"to: {rule}", "field": "to", "rule": rule}, status_code=422)
    owner = request_owner(request.scope)
    refused = _key_limit_refusal(owner, len(body.to) if isinstance(body.to, list) else 1)
    if refused is not None:
        return refused
    kwargs = body.model_dump(exclude={"to"})
    if kwargs["priority"] is None:  # each call's own default: normal, or bulk for a list
        del kwargs["priority"]
    kwargs.update(owner=owner, strict_limits=True)
    try:
        if isinstance(body.to, list):
            ids = send_bulk(body.to, **kwargs)
            return JSONResponse({"ids": ids}, status_code=201)
        mid = send_sms(body.to, **kwargs)
    except InvalidMessage as exc:
        return JSONResponse(
            {"error": str(exc), "field": exc.field, "rule": exc.rule}, status_code=422
        )
    except MessageRefused as exc:
        return _too_many(exc.reason, exc.retry_after, field="to", numbers=exc.numbers)
    except EnqueueError as exc:  # broker, store or limit counters: nothing taken, try again
        return _unavailable(str(exc))
    return JSONResponse({"id": mid}, status_code=201)


def _key_limit_refusal(owner: str, recipients: int) -> JSONResponse | None:
    """SMSQ_API_KEY_LIMIT, counted in recipients per key name: 429 past it, 422 when
    one request is over a limit by itself, 503 when the counters are unreachable
    (fail closed: an unmetered key is what the limit is there to stop)."""
    items = parse_limit(get_settings().api_key_limit, "SMSQ_API_KEY_LIMIT")
    if not items:
        return None
    big = too_big(items, recipients)
    if big is not None:
        rule = f"has {recipients} numbers; the API key limit allows {big} (SMSQ_API_KEY_LIMIT)"
        return JSONResponse({"error": f"to: {rule}", "field": "to", "rule": rule}, status_code=422)
    try:
        refusal = take(items, owner, recipients, KEY_SCOPE)
    except LimitsUnavailable as exc:
        return _unavailable(str(exc))
    if refusal is None:
        return None
    error = (
        f"the API key {owner!r} reached its limit ({refusal.limit} recipients, "
        f"SMSQ_API_KEY_LIMIT); nothing was stored; retry after {refusal.retry_after} s"
    )
    return _too_many(error, refusal.retry_after)


def _too_many(error: str, retry_after: int, **extra: Any) -> JSONResponse:
    body = {"error": error, "retry_after": retry_after, **extra}
    return JSONResponse(body, status_code=429, headers={"Retry-After": str(retry_after)})


def _unavailable(error: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": "5"})


@app.get(
    "/v1/messages/{message_id}",
    operation_id="readMessage",
    response_model=None,
    responses={200: {"model": MessageOut, "description": "The message"}, **API_ERRORS},
)
def read_message(
    request: Request,
    message_id: str = Path(
        json_schema_extra={"pattern": NOT_BLANK_PATTERN}, description="An id from POST"
    ),
) -> Any:
    """One message's status, for the key's owner only: another owner's is 404, like
    an unknown id (the API key was checked by EdgeGuard)."""
    try:
        status = get_status(message_id)
    except InvalidMessage as exc:
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=422)
    except StoreUnavailable as exc:
        return _unavailable(str(exc))
    if status is None or status.owner != request_owner(request.scope):
        return JSONResponse({"error": "no such message"}, status_code=404)
    return status.to_dict()


def _invalid(exc: InvalidMessage) -> JSONResponse:
    return JSONResponse({"error": str(exc), "field": exc.field, "rule": exc.rule}, status_code=422)


@app.post(
    "/v1/suppressions",
    operation_id="addSuppression",
    status_code=201,
    response_model=None,
    responses={
        201: {
            "model": SuppressionOut,
            "description": "On the list (added, or its reason and scope updated)",
            "links": {
                "removeSuppression": {
                    "operationId": "removeSuppression",
                    # The normalised number: every spelling of it names this one entry.
                    "parameters": {"number": "$response.body#/number"},
                }
            },
        },
        **BODY_ERRORS,
    },
)
def add_suppression(body: SuppressionIn, request: Request) -> Any:
    """Suppress a number for every owner (one global list); any key may add."""
    try:
        entry = suppressions.suppress(
            body.number, body.reason, body.scope, added_by=request_owner(request.scope)
        )
    except InvalidMessage as exc:
        return _invalid(exc)
    except StoreUnavailable as exc:
        return _unavailable(str(exc))
    return JSONResponse(entry.to_dict(), status_code=201)


@app.delete(
    "/v1/suppressions/{number}",
    operation_id="removeSuppression",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Taken off the list"}, **API_ERRORS},
)
def remove_suppression(number: str = Path(json_schema_extra=PHONE_NUMBER)) -> Response:
    """Take a number off the list: 204, or 404 when it was not on it."""
    try:
        removed = suppressions.unsuppress(number)
    except InvalidMessage as exc:
        return _invalid(exc)
    except StoreUnavailable as exc:
        return _unavailable(str(exc))
    if not removed:
        return JSONResponse({"error": "the number is not suppressed"}, status_code=404)
    return Response(status_code=204)


@app.get(
    "/v1/suppressions",
    operation_id="listSuppressions",
    response_model=None,
    responses={200: {"model": SuppressionPage, "description": "One page"}, **API_ERRORS},
)
def read_suppressions(
    limit: int = Query(default=100, ge=1, le=suppressions.MAX_PAGE),
    after: str | None = Query(
        default=None,
        json_schema_extra={"format": PHONE_NUMBER["format"]},
        description="the last number of the previous page",
    ),
) -> Any:
    """Suppressed numbers in number order, a page at a time (`next`: the next `after`)."""
    try:
        entries = suppressions.list_suppressions(limit=limit, after=after)
    except InvalidMessage as exc:
        return _invalid(exc)
    except StoreUnavailable as exc:
        return _unavailable(str(exc))
    following = entries[-1].number if len(entries) == limit else None
    return {"suppressions": [e.to_dict() for e in entries], "next": following}
