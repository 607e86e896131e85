"""The dashboard's pages and actions, mounted on the web process at /ui.

The caller was checked by the edge (`worker.ui.auth` through EdgeGuard) before
any of this runs; its name is in the request scope. Every page is rendered on
the server from `worker.ui.queries`; every POST checks its origin and CSRF token
first, then acts through the same functions as the CLI and the API, and writes
an audit row naming the user (`ui_actions`; a cancel's status event names them
too).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from producer import suppressions
from producer.errors import InvalidMessage, StoreUnavailable
from producer.models import utcnow
from producer.settings import get_settings
from worker.ui import auth, charts, queries, rollup, stats
from worker.ui.redact import mask_number, show

log = logging.getLogger("smsq.ui")

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

OUTCOMES = [
    charts.Series("delivered", "delivered"),
    charts.Series("undelivered", "undelivered"),
    charts.Series("expired", "expired"),
    charts.Series("failed", "failed"),
    charts.Series("rejected", "rejected"),
]
SENT = charts.Series("sent", "sent")
P50, P95 = charts.Series("p50", "p50"), charts.Series("p95", "p95")
BALANCE = charts.Series("balance", "balance")
PROJECTION = charts.Series("projection", "projection")
THRESHOLD = charts.Series("threshold", "alert threshold")
EXPIRY = charts.Series("expiry", "credits expire")
NOW = charts.Series("now", "now")

# A page may only show what this dashboard drew: no script or style from elsewhere,
# none inline, and it is never framed (clickjacking the cancel button).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # `same-origin`, not `no-referrer`: under no-referrer a browser posts forms with
    # `Origin: null`, which the origin check must refuse.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def user_of(request: Request) -> str:
    return str(request.scope.get("state", {})[auth.USER_STATE])


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    user = user_of(request)
    answer = templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "csrf": auth.csrf_token(get_settings(), user),
            "now": utcnow(),
            "mask": mask_number,
            "duration": charts.duration,
            **context,
        },
        status_code=status_code,
    )
    answer.headers.update(SECURITY_HEADERS)
    return answer


def refuse_post(request: Request, token: str | None) -> HTMLResponse | None:
    """403 unless the POST comes from the dashboard's own page with a valid token."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not auth.same_origin(headers):
        return _forbidden(request, "this form was posted from another site")
    if not auth.csrf_ok(get_settings(), user_of(request), token):
        return _forbidden(request, "the form's token is missing or stale: reload the page")
    return None


def _forbidden(request: Request, why: str) -> HTMLResponse:
    return page(request, "error.html", status_code=403, title="Refused", error=why)


def _unavailable(request: Request, exc: Exception) -> HTMLResponse:
    return page(request, "error.html", status_code=503, title="Store unavailable", error=str(exc))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return stats.as_utc(value).strftime("%Y-%m-%d %H:%M:%S")


templates.env.filters["when"] = when
templates.env.filters["dur"] = charts.duration


# -- overview -------------------------------------------------------------------------
@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def overview(request: Request, window: str = Query(default="day")) -> Response:
    if window not in queries.WINDOWS:
        window = "day"
    try:
        gateways = queries.window_stats(window)
        waiting = queries.waiting_by_priority()
        uncertain = queries.uncertain_sends()
        freshness = rollup.status()
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    queues = queries.queue_depths()
    breakers = queries.breakers()
    cards = []
    for g in gateways:
        labels = [b.label for b in g.bars]
        cards.append(
            {
                "g": g,
                "outcomes": charts.stacked_bars(
                    f"{g.provider}: messages per bucket",
                    labels,
                    [b.counts for b in g.bars],
                    OUTCOMES,
                    line=SENT,
                ),
                "latency": _latency_chart(g, labels),
            }
        )
    return page(
        request,
        "overview.html",
        title="Overview",
        window=window,
        windows=list(queries.WINDOWS),
        cards=cards,
        gateways=gateways,
        waiting=waiting,
        waiting_statuses=queries.WAITING,
        queues=queues,
        breakers=breakers,
        uncertain=uncertain,
        freshness=freshness,
        outcomes=OUTCOMES,
    )


def _latency_chart(g: queries.GatewayStats, labels: list[str]) -> Any:
    n = len(g.bars)
    p50 = [(i + 0.5, b.p50) for i, b in enumerate(g.bars) if b.p50 is not None]
    p95 = [(i + 0.5, b.p95) for i, b in enumerate(g.bars) if b.p95 is not None]
    step = max(1, -(-n // 6))
    return charts.lines(
        f"{g.provider}: send_sms to delivered, p50 and p95",
        (0.0, float(n)),
        [(P50, p50, False), (P95, p95, True)],  # type: ignore[list-item]
        [(i + 0.5, labels[i]) for i in range(0, n, step)],
        y_fmt=charts.duration,
    )


# -- balances -------------------------------------------------------------------------
@router.get("/balances", response_class=HTMLResponse)
def balances(request: Request) -> Response:
    from worker.balance.alerts import history
    from worker.balance.rules import describe_projection

    try:
        views = queries.balances()
        alerts = history(limit=50)
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    now = utcnow()
    rows = [
        {
            "v": v,
            "chart": _balance_chart(v, now),
            "projection": describe_projection(v.projection_days),
        }
        for v in views
    ]
    return page(request, "balances.html", title="Balances", rows=rows, alerts=alerts)


def _balance_chart(v: queries.BalanceView, now: datetime) -> Any:
    days = get_settings().burn_window_days
    start = now - timedelta(days=days)
    end = now + timedelta(days=days)
    points = [(t.timestamp(), a) for t, a in v.history]
    projection: list[tuple[float, float]] = []
    if v.amount is not None and v.per_day and v.per_day > 0:
        out_at = now + timedelta(days=v.amount / v.per_day)
        if out_at <= end:
            projection = [(now.timestamp(), v.amount), (out_at.timestamp(), 0.0)]
        else:
            left = v.amount - v.per_day * (end - now).total_seconds() / 86400
            projection = [(now.timestamp(), v.amount), (end.timestamp(), left)]
    marks = [(now.timestamp(), NOW)]
    if v.expires_at is not None:
        marks.append((v.expires_at.timestamp(), EXPIRY))
    ticks = [
        (
            (start + timedelta(days=days * k / 4)).timestamp(),
            _day(start + timedelta(days=days * k / 4)),
        )
        for k in range(5)
    ]
    return charts.lines(
        f"{v.provider}: balance ({v.unit or ''}) and projection",
        (start.timestamp(), end.timestamp()),
        [(BALANCE, points, False), (PROJECTION, projection, True)],
        ticks,
        hlines=[(v.threshold, THRESHOLD)] if v.threshold is not None else [],
        vlines=marks,
    )


def _day(at: datetime) -> str:
    return at.strftime("%b %d")


# -- messages -------------------------------------------------------------------------
@router.get("/messages", response_class=HTMLResponse)
def find(
    request: Request,
    q: str = Query(default="", max_length=queries.MAX_QUERY),
    by: str = Query(default="auto"),
    reveal: bool = Query(default=False),
) -> Response:
    try:
        rows, looked = queries.find_messages(q, by if by in queries.WAYS else "auto")
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    return page(
        request,
        "messages.html",
        title="Find a message",
        q=q,
        by=by,
        ways=queries.WAYS,
        rows=rows,
        looked=looked,
        reveal=reveal,
    )


def _cancellable(m: Any) -> bool:
    from producer.api import gateway_schedules

    if m.status in ("queued", "scheduled"):
        return True
    return bool(
        m.status == "sent"
        and m.send_at is not None
        and stats.as_utc(m.send_at) > utcnow()
        and m.provider_message_id
        and gateway_schedules(m.provider)
    )


NOTICES = {
    "cancelled": "Cancelled: the message will not be sent.",
    "added": "The number is suppressed: it gets no more messages.",
    "removed": "The number is no longer suppressed.",
}


@router.get("/messages/{message_id}", response_class=HTMLResponse)
def message_view(
    request: Request,
    message_id: str,
    reveal: bool = Query(default=False),
    notice: str | None = Query(default=None, max_length=20),
) -> Response:
    return message_page(request, message_id, reveal, notice=NOTICES.get(notice or ""))


def message_page(
    request: Request,
    message_id: str,
    reveal: bool = False,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        row, events = queries.message(message_id)
        suppressed = suppressions.is_suppressed(row.to) if row is not None else False
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    except InvalidMessage:
        suppressed = False
    if row is None:
        return page(request, "error.html", 404, title="No such message", error="no such message")
    numbers = (row.to,)
    timeline = [{"e": e, "raw": show(_loads(e.raw), numbers, reveal)} for e in events]
    return page(
        request,
        "message.html",
        status_code=status_code,
        title=f"Message {row.id}",
        m=row,
        timeline=timeline,
        reveal=reveal,
        cancellable=_cancellable(row),
        suppressed=suppressed,
        error=error,
        notice=notice,
    )


def _loads(raw: str | None) -> Any:
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@router.post("/messages/{message_id}/cancel", response_class=HTMLResponse)
def cancel(request: Request, message_id: str, csrf: str = Form(default="")) -> Response:
    refused = refuse_post(request, csrf)
    if refused is not None:
        return refused
    from worker.sending.cancel import cancel_message

    user = user_of(request)
    try:
        cancel_message(message_id, source="ui", note=f"cancelled in the dashboard by {user}")
    except InvalidMessage as exc:
        return message_page(request, message_id, error=str(exc), status_code=409)
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    except Exception as exc:  # a gateway outbox that could not be reached
        log.warning("dashboard cancel of %s failed: %s", message_id, type(exc).__name__)
        return message_page(
            request, message_id, error=f"not cancelled: {type(exc).__name__}", status_code=502
        )
    queries.record_action(user, "cancel", message_id)
    log.info("dashboard: %s cancelled message %s", user, message_id)
    return RedirectResponse(f"/ui/messages/{message_id}?notice=cancelled", status_code=303)


# -- suppressions ---------------------------------------------------------------------
@router.get("/suppressions", response_class=HTMLResponse)
def suppression_list(
    request: Request,
    after: str | None = Query(default=None, max_length=32),
    reveal: bool = Query(default=False),
    notice: str | None = Query(default=None, max_length=20),
) -> Response:
    return _suppression_page(request, after, reveal, notice=NOTICES.get(notice or ""))


def _suppression_page(
    request: Request,
    after: str | None = None,
    reveal: bool = False,
    error: str | None = None,
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    try:
        entries = suppressions.list_suppressions(limit=100, after=after or None)
        actions = queries.recent_actions()
    except InvalidMessage:
        entries, actions = [], queries.recent_actions()
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    following = entries[-1].number if len(entries) == 100 else None
    return page(
        request,
        "suppressions.html",
        status_code=status_code,
        title="Suppressions",
        entries=entries,
        following=following,
        actions=actions,
        reveal=reveal,
        error=error,
        notice=notice,
    )


@router.post("/suppressions", response_class=HTMLResponse)
def suppression_add(
    request: Request,
    number: str = Form(default=""),
    reason: str = Form(default=""),
    scope: str = Form(default="all"),
    csrf: str = Form(default=""),
) -> Response:
    refused = refuse_post(request, csrf)
    if refused is not None:
        return refused
    user = user_of(request)
    try:
        entry = suppressions.suppress(number, reason or None, scope, added_by=_added_by(user))
    except InvalidMessage as exc:
        return _suppression_page(request, error=str(exc), status_code=422)
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    queries.record_action(
        user, "suppress", entry.number, f"scope {entry.scope}; {entry.reason or ''}"
    )
    log.info("dashboard: %s suppressed %s", user, mask_number(entry.number))
    return RedirectResponse("/ui/suppressions?notice=added", status_code=303)


@router.post("/suppressions/remove", response_class=HTMLResponse)
def suppression_remove(
    request: Request, number: str = Form(default=""), csrf: str = Form(default="")
) -> Response:
    refused = refuse_post(request, csrf)
    if refused is not None:
        return refused
    user = user_of(request)
    try:
        removed = suppressions.unsuppress(number)
    except InvalidMessage as exc:
        return _suppression_page(request, error=str(exc), status_code=422)
    except StoreUnavailable as exc:
        return _unavailable(request, exc)
    if not removed:
        return _suppression_page(request, error="that number is not suppressed", status_code=404)
    from producer.validation import normalise_number

    queries.record_action(user, "unsuppress", normalise_number(number, "number"))
    log.info("dashboard: %s removed a suppression", user)
    return RedirectResponse("/ui/suppressions?notice=removed", status_code=303)


def _added_by(user: str) -> str:
    """`ui.<user>` when that is a valid key name (letters, digits, `_ . -`), else `ui`."""
    from producer.validation import check_owner

    try:
        return check_owner(f"ui.{user}", "added_by")
    except InvalidMessage:
        return "ui"


# -- static ---------------------------------------------------------------------------
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}


@router.get("/static/{name}")
def static(name: str) -> Response:
    path = STATIC_FILES.get(name)
    if path is None:
        return Response(status_code=404)
    answer = FileResponse(path)
    answer.headers["X-Content-Type-Options"] = "nosniff"
    answer.headers["Cache-Control"] = "private, max-age=300"
    return answer
