"""What each dashboard page reads: indexed lookups and the summary table, never a scan.

- Overview: `ui_stats` rows of the window (at most 12 x 5 min or 168 x 1 h per
  gateway and status), the waiting messages by priority (the `status` index:
  only queued, scheduled and sending rows are read), the broker's queue lengths,
  the breakers and rate-limit windows (Redis), and uncertain sends (the
  `status` index again).
- Balances: the snapshots of the burn window per gateway, the segments sent from
  `ui_stats`, the alert history by id.
- Messages: one lookup per way of finding one (id, number, idempotency key,
  gateway id), each on its own index, 50 rows at most.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from producer import db
from producer.errors import InvalidMessage
from producer.models import (
    ACTIVE,
    BalanceSnapshot,
    Message,
    MessageEvent,
    UiAction,
    UiStat,
    status_is,
    utcnow,
)
from producer.queues import TASK_ROUTES, WORKER_QUEUES
from producer.settings import get_settings, provider_names, provider_settings
from producer.status import Status
from worker.ui import stats

log = logging.getLogger("smsq.ui")

WINDOWS: dict[str, tuple[int, int, int]] = {
    # name: (bucket width in s, buckets, buckets per bar)
    "hour": (stats.FINE, 12, 1),
    "day": (stats.COARSE, 24, 1),
    "week": (stats.COARSE, 168, 6),
}
WAITING = (Status.SCHEDULED.value, Status.QUEUED.value, Status.SENDING.value)
STALE_CLAIM = timedelta(seconds=45)
PRIORITIES = ("high", "normal", "bulk")  # a claim this old without an answer: uncertain
LIST_LIMIT = 50


def known_providers() -> list[str]:
    """Configured gateways first, then any other gateway smsq knows."""
    configured = get_settings().configured_providers()
    return configured + [p for p in provider_names() if p not in configured]


# -- overview ------------------------------------------------------------------------
@dataclass
class Bar:
    label: str
    start: int
    counts: dict[str, int] = field(default_factory=dict)
    hist: list[int] = field(default_factory=stats.empty_hist)

    @property
    def p50(self) -> float | None:
        return stats.percentile(self.hist, 0.5)

    @property
    def p95(self) -> float | None:
        return stats.percentile(self.hist, 0.95)


@dataclass
class GatewayStats:
    provider: str
    totals: dict[str, int]
    hist: list[int]
    bars: list[Bar]

    @property
    def finals(self) -> int:
        return sum(self.totals.get(s, 0) for s in stats.FINAL)

    @property
    def ratio(self) -> float | None:
        """Delivered over every message that became final in the window."""
        return self.totals.get("delivered", 0) / self.finals if self.finals else None

    @property
    def p50(self) -> float | None:
        return stats.percentile(self.hist, 0.5)

    @property
    def p95(self) -> float | None:
        return stats.percentile(self.hist, 0.95)


def _label(start: int, width: int, window: str) -> str:
    at = datetime.fromtimestamp(start, tz=utcnow().tzinfo)
    if window == "week":
        return at.strftime("%a %Hh")
    return at.strftime("%H:%M")


def window_stats(window: str, now: datetime | None = None) -> list[GatewayStats]:
    """Per gateway: totals, merged latency histogram and the bars of `window`."""
    width, count, group = WINDOWS[window]
    moment = (now or utcnow()).timestamp()
    span = width * group
    last = stats.floor(moment, span)
    starts = [last - span * i for i in range(count // group - 1, -1, -1)]
    with db.session() as s:
        rows = s.exec(
            select(UiStat.bucket, UiStat.provider, UiStat.status, UiStat.count, UiStat.hist).where(
                col(UiStat.width) == width, col(UiStat.bucket) >= starts[0]
            )
        ).all()
    providers = known_providers()
    seen = {r[1] for r in rows}
    providers += sorted(p for p in seen if p not in providers)
    out: dict[str, GatewayStats] = {
        p: GatewayStats(
            p,
            {k: 0 for k in stats.ALL},
            stats.empty_hist(),
            [Bar(_label(st, width, window), st) for st in starts],
        )
        for p in providers
    }
    index = {st: i for i, st in enumerate(starts)}
    for bucket, provider, status, n, hist in rows:
        g = out[provider]
        bar = g.bars[index.get(stats.floor(bucket, span), 0)] if bucket >= starts[0] else None
        g.totals[status] = g.totals.get(status, 0) + n
        if bar is not None:
            bar.counts[status] = bar.counts.get(status, 0) + n
        if hist:
            h = stats.load_hist(hist)
            stats.merge_hist(g.hist, h)
            if bar is not None:
                stats.merge_hist(bar.hist, h)
    configured = set(get_settings().configured_providers())
    return [g for g in out.values() if g.provider in configured or any(g.totals.values())]


def waiting_by_priority() -> list[dict[str, Any]]:
    """Messages not yet handed to a gateway, by provider, priority and status."""
    with db.session() as s:
        rows = s.exec(
            select(Message.provider, Message.priority, Message.status, func.count())
            # the active rows' partial index (migration 0010): literal statuses, and the
            # index's own IN, which SQLite needs to see to use it
            .where(status_is(*ACTIVE), status_is(*WAITING))
            .group_by(Message.provider, Message.priority, Message.status)
        ).all()
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for provider, priority, status, n in rows:
        row = table.setdefault(
            (provider, priority),
            {"provider": provider, "priority": priority, **dict.fromkeys(WAITING, 0)},
        )
        row[status] = n
    order = {"high": 0, "normal": 1, "bulk": 2}
    return sorted(table.values(), key=lambda r: (r["provider"], order.get(r["priority"], 9)))


def queue_names() -> list[str]:
    names = {route["queue"] for route in TASK_ROUTES.values()} | set(WORKER_QUEUES.split(","))
    return sorted(n for n in names if n)


# kombu's Redis transport keeps a queue's priority levels in lists `<queue>\x06\x16<n>`.
PRIORITY_SEP = "\x06\x16"


def queue_depths() -> dict[str, Any]:
    """Length of each broker queue (and of any priority level list), and the tasks
    that workers hold unacknowledged; `error` when Redis cannot be read."""
    from worker import redis_client

    names = queue_names()
    keys = [(q, 0, q) for q in names] + [
        (q, n, f"{q}{PRIORITY_SEP}{n}") for q in names for n in range(1, 10)
    ]
    try:
        pipe = redis_client.shared().pipeline(transaction=False)
        for _, _, key in keys:
            pipe.llen(key)
        pipe.hlen("unacked")
        answers = pipe.execute()
    except Exception as exc:  # the page shows the broker as unreachable, never a 500
        return {"queues": [], "unacked": None, "error": type(exc).__name__}
    from producer import queues as queue_module

    # Per-priority send queues, where the deployment has them (`SEND_QUEUES`).
    priority_of = {q: p for p, q in getattr(queue_module, "SEND_QUEUES", {}).items()}
    depths: dict[str, dict[str, Any]] = {
        q: {"queue": q, "priority": priority_of.get(q), "depth": 0, "levels": {}} for q in names
    }
    for (queue, level, _), n in zip(keys, answers[:-1], strict=True):
        depths[queue]["depth"] += int(n)
        if level and n:
            depths[queue]["levels"][level] = int(n)
    return {"queues": list(depths.values()), "unacked": int(answers[-1]), "error": None}


def breakers() -> list[dict[str, Any]]:
    """Each configured gateway's breaker and rate-limit window, from Redis."""
    from worker import redis_client
    from worker.resilience import ratelimit
    from worker.resilience.breaker import Breaker
    from worker.resilience.ratelimit import WINDOW_SECONDS

    ranks = int(getattr(ratelimit, "RANKS", 0))  # priority waiters, where the limiter has them

    out = []
    try:
        client = redis_client.shared()
        seconds, micros = client.time()
        now_us = int(seconds) * 1_000_000 + int(micros)
    except Exception as exc:
        return [{"provider": p, "error": type(exc).__name__} for p in known_providers()]
    for provider in get_settings().configured_providers():
        snap = Breaker(provider).snapshot()
        rate = provider_settings(provider).rate_limit
        used = None
        waiting: dict[str, int] = {}
        if rate:
            key = f"smsq:rate:{provider}"
            try:
                used = int(client.zcount(key, now_us - int(WINDOW_SECONDS * 1_000_000), "+inf"))
                for rank, name in enumerate(PRIORITIES[:ranks]):
                    waiting[name] = int(client.zcount(f"{key}:waiting:{rank}", now_us, "+inf"))
            except Exception:
                used = None
        limit = max(1, int(rate * WINDOW_SECONDS)) if rate else None
        out.append(
            {
                "provider": provider,
                "state": snap.state,
                "failures": snap.failures,
                "wait": snap.wait,
                "rate": rate,
                "used": used,
                "limit": limit,
                "use": (used / limit) if used is not None and limit else None,
                "waiting": waiting,
                "error": None,
            }
        )
    return out


def uncertain_sends(now: datetime | None = None) -> list[dict[str, Any]]:
    """Sends not yet settled whose answer was lost, or whose claim has gone stale."""
    moment = now or utcnow()
    with db.session() as s:
        rows = s.exec(
            select(Message)
            .where(status_is(*ACTIVE), status_is(Status.SENDING.value))  # see above
            .order_by(col(Message.claimed_at))
            .limit(200)
        ).all()
    out = []
    for m in rows:
        claimed = stats.as_utc(m.claimed_at) if m.claimed_at else None
        stale = claimed is not None and moment - claimed > STALE_CLAIM
        if m.maybe_sent_at is None and not stale:
            continue
        out.append(
            {
                "id": m.id,
                "provider": m.provider,
                "claimed_at": claimed,
                "claimed_by": m.claimed_by,
                "maybe_sent_at": m.maybe_sent_at,
                "attempts": m.attempts,
                "why": "answer lost" if m.maybe_sent_at else "claim stale (worker gone?)",
            }
        )
    return out[:LIST_LIMIT]


# -- balances ------------------------------------------------------------------------
@dataclass
class BalanceView:
    provider: str
    amount: float | None
    unit: str | None
    expires_at: datetime | None
    state: str
    error: str | None
    checked_at: datetime | None
    threshold: float | None
    expiry_warn_days: float
    history: list[tuple[datetime, float]]
    per_day: float | None
    basis: str
    projection_days: float | None


def _segments_sent(provider: str, since: datetime) -> tuple[int, datetime | None]:
    """Segments smsq handed to `provider` since `since` (hourly buckets) and the first."""
    with db.session() as s:
        total, first = s.exec(
            select(func.coalesce(func.sum(UiStat.segments), 0), func.min(UiStat.bucket)).where(
                col(UiStat.width) == stats.COARSE,
                col(UiStat.provider) == provider,
                col(UiStat.status) == "sent",
                col(UiStat.bucket) >= int(since.timestamp()) // stats.COARSE * stats.COARSE,
            )
        ).one()
    start = datetime.fromtimestamp(first, tz=since.tzinfo) if first is not None else None
    return int(total or 0), start


def balances(now: datetime | None = None) -> list[BalanceView]:
    """Per configured gateway: its latest check, the burn window's history and the
    projection (`worker.balance.rules.burn_rate`: the same rule as `smsq balance`)."""
    from worker.balance.rules import burn_rate

    moment = now or utcnow()
    settings = get_settings()
    since = moment - timedelta(days=settings.burn_window_days)
    views = []
    for provider in settings.configured_providers():
        with db.session() as s:
            latest = s.exec(
                select(BalanceSnapshot)
                .where(col(BalanceSnapshot.provider) == provider)
                .order_by(col(BalanceSnapshot.created_at).desc())
                .limit(1)
            ).first()
            unit = latest.unit if latest else None
            history = [
                (stats.as_utc(t), float(a))
                for t, a in s.exec(
                    select(BalanceSnapshot.created_at, BalanceSnapshot.amount)
                    .where(
                        col(BalanceSnapshot.provider) == provider,
                        col(BalanceSnapshot.unit) == unit,
                        col(BalanceSnapshot.amount).is_not(None),
                        col(BalanceSnapshot.created_at) >= since,
                        col(BalanceSnapshot.created_at) <= moment,
                    )
                    .order_by(col(BalanceSnapshot.created_at), col(BalanceSnapshot.id))
                ).all()
            ]
        segments, first = _segments_sent(provider, since)
        span = moment - first if first is not None else timedelta(0)
        burn = burn_rate(unit, history, segments, span)
        ps = provider_settings(provider)
        amount = latest.amount if latest else None
        views.append(
            BalanceView(
                provider=provider,
                amount=amount,
                unit=unit,
                expires_at=stats.as_utc(latest.expires_at)
                if latest and latest.expires_at
                else None,
                state=latest.state if latest else "not checked yet",
                error=latest.error if latest else None,
                checked_at=stats.as_utc(latest.created_at) if latest else None,
                threshold=ps.low_balance,
                expiry_warn_days=float(ps.expiry_warn_days),
                history=history,
                per_day=burn.per_day,
                basis=burn.basis,
                projection_days=burn.projection_days(amount),
            )
        )
    return views


# -- messages ------------------------------------------------------------------------
WAYS = ("auto", "id", "number", "key", "gateway")
_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_QUERY = 200


def find_messages(query: str, way: str = "auto") -> tuple[list[Message], list[str]]:
    """Messages matching `query` (newest first, 50 at most) and the ways looked up."""
    from producer.validation import normalise_number

    q = query.strip()
    if not q or len(q) > MAX_QUERY or "\x00" in q or way not in WAYS:
        return [], []
    looked: list[str] = []
    found: dict[str, Message] = {}
    with db.session() as s:

        def take(rows: Sequence[Message]) -> None:
            for m in rows:
                found.setdefault(m.id, m)

        if way in ("auto", "id") and (way == "id" or _ID.match(q)):
            looked.append("id")
            row = s.get(Message, q)
            take([row] if row else [])
        if way in ("auto", "number"):
            try:
                number = normalise_number(q, "number")
            except InvalidMessage:
                number = None
            if number is not None:
                looked.append("number")
                take(_newest(s, col(Message.to) == number))
        if way in ("auto", "key"):
            looked.append("idempotency key")
            take(_newest(s, col(Message.idempotency_key) == q))
        if way in ("auto", "gateway"):
            looked.append("gateway id")
            take(_newest(s, col(Message.provider_message_id) == q))
    rows = sorted(found.values(), key=lambda m: m.created_at, reverse=True)
    return rows[:LIST_LIMIT], looked


def _newest(s: Any, condition: Any) -> Sequence[Message]:
    return s.exec(
        select(Message).where(condition).order_by(col(Message.created_at).desc()).limit(LIST_LIMIT)
    ).all()


def message(message_id: str) -> tuple[Message | None, list[MessageEvent]]:
    if not message_id or len(message_id) > 64 or "\x00" in message_id:
        return None, []
    with db.session() as s:
        row = s.get(Message, message_id)
        if row is None:
            return None, []
        events = s.exec(
            select(MessageEvent)
            .where(col(MessageEvent.message_id) == message_id)
            .order_by(col(MessageEvent.id))
        ).all()
    return row, list(events)


def recent_actions(limit: int = 20) -> list[UiAction]:
    with db.session() as s:
        return list(s.exec(select(UiAction).order_by(col(UiAction.id).desc()).limit(limit)).all())


def record_action(user: str, action: str, target: str, detail: str | None = None) -> None:
    """An operator's act in the dashboard, with their name (the audit trail)."""
    with db.session() as s:
        s.add(UiAction(username=user[:100], action=action, target=target[:64], detail=detail))
        s.commit()
