"""The dashboard on a big store: every page's response time with N messages stored.

    .venv/bin/python bench/ui.py [--messages 1000000] [--keep DIR]

Loads N messages over the last eight days (four gateways, the usual mix of
outcomes, three events each: queued, sent, final; 1 % still scheduled), hourly
balance snapshots for 90 days and a few alerts, straight into a fresh SQLite
store (executemany in large batches, the schema made by the migrations). Then
rolls the events up into `ui_stats` with the real roll-up (timed), starts an
embedded Redis (queue lengths, breakers, rate limits are read from it) and the
real web process (uvicorn), and times each dashboard page over HTTP: the best
and the worst of five requests after one warm-up. Exits 1 when a page takes
more than the limit (300 ms).

`tests/unit/ui/test_ui_speed.py` runs the same loader and pages with 20,000
messages in `make test`.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIMIT_MS = 300.0
PROVIDERS = ("keccel", "smsclub", "kingsms", "sms1601")
PREFIX = {"keccel": "24385", "smsclub": "38098", "kingsms": "22890", "sms1601": "31612"}
OUTCOMES = (  # final status, share
    ("delivered", 0.90),
    ("undelivered", 0.03),
    ("expired", 0.02),
    ("failed", 0.02),
    ("rejected", 0.02),
)
SCHEDULED_SHARE = 0.01
NUMBERS_PER_PROVIDER = 5000
USER, PASSWORD = "bench", "bench-ui-password"


@dataclass
class Loaded:
    messages: int
    events: int
    seconds: float
    sample_id: str
    sample_number: str
    sample_key: str
    sample_gateway_id: str


def _outcome(r: float) -> str:
    acc = 0.0
    for status, share in OUTCOMES:
        acc += share
        if r < acc:
            return status
    return "delivered"


def _rows(n: int, now: datetime, seed: int = 19) -> Iterator[tuple[dict, list[dict]]]:
    """(message row, its events), oldest first, spread over the last eight days."""
    rng = random.Random(seed)
    span = 8 * 86400
    for i in range(n):
        provider = PROVIDERS[i % len(PROVIDERS)]
        created = now - timedelta(seconds=span * (n - i) / n)
        number = f"{PREFIX[provider]}{rng.randrange(NUMBERS_PER_PROVIDER):07d}"
        mid = f"{i:032x}"
        base = {
            "id": mid,
            "owner": "",
            "idempotency_key": f"order-{i}",
            "to": number,
            "text": "Your code is 4711",
            "sender": "SMSQ",
            "provider": provider,
            "fallbacks": "",
            "encoding": "gsm7",
            "segments": 1 + (i % 7 == 0),
            "flash": False,
            "attempts": 1,
            "created_at": created,
            "updated_at": created,
            "poll_count": 0,
            "poll_failures": 0,
            "priority": ("high", "normal", "normal", "bulk")[i % 4],
            "provider_message_id": None,
            "sent_at": None,
            "send_at": None,
            "error": None,
        }
        events = [_event(mid, provider, "producer", None, "queued", created)]
        if rng.random() < SCHEDULED_SHARE:
            base.update(status="scheduled", send_at=now + timedelta(hours=rng.randrange(1, 48)))
            events[0]["new_status"] = "scheduled"
            yield base, events
            continue
        status = _outcome(rng.random())
        if status == "rejected":
            base.update(status=status, error="suppressed: the number opted out", attempts=0)
            events.append(_event(mid, provider, "producer", "queued", status, created))
            yield base, events
            continue
        sent = created + timedelta(seconds=rng.uniform(0.05, 2.0))
        final = sent + timedelta(seconds=rng.lognormvariate(2.0, 1.0))
        if final > now:
            final = now
        base.update(
            status=status,
            sent_at=sent,
            updated_at=final,
            provider_message_id=f"{provider[:2]}-{i}",
            error=None if status == "delivered" else f"{status} by the network",
        )
        events.append(_event(mid, provider, "worker", "sending", "sent", sent))
        events.append(_event(mid, provider, "poll", "sent", status, final, raw={"status": status}))
        yield base, events


def _event(mid, provider, source, old, new, at, raw=None):  # type: ignore[no-untyped-def]
    import json

    return {
        "message_id": mid,
        "provider": provider,
        "provider_message_id": None,
        "source": source,
        "kind": "status",
        "old_status": old,
        "new_status": new,
        "applied": True,
        "note": None,
        "raw": json.dumps(raw) if raw else None,
        "created_at": at,
    }


def load_store(n: int, now: datetime | None = None, chunk: int = 20000) -> Loaded:
    """N messages and their events into the store of this process's settings (which
    must be empty and migrated: `db.get_engine()` does it)."""
    from sqlalchemy import insert

    from producer import db
    from producer.models import Alert, AlertDelivery, BalanceSnapshot, Message, MessageEvent

    now = now or datetime.now(UTC)
    engine = db.get_engine()
    started = time.perf_counter()
    messages: list[dict] = []
    events: list[dict] = []
    total_events = 0
    first: dict | None = None
    with engine.begin() as conn:
        for row, evs in _rows(n, now):
            if first is None and row["provider_message_id"]:
                first = row
            messages.append(row)
            events.extend(evs)
            if len(messages) >= chunk:
                conn.execute(insert(Message.__table__), messages)  # type: ignore[attr-defined]
                conn.execute(insert(MessageEvent.__table__), events)  # type: ignore[attr-defined]
                total_events += len(events)
                messages, events = [], []
        if messages:
            conn.execute(insert(Message.__table__), messages)  # type: ignore[attr-defined]
            conn.execute(insert(MessageEvent.__table__), events)  # type: ignore[attr-defined]
            total_events += len(events)
        snapshots = []
        for provider in PROVIDERS:
            unit = {"keccel": "credits", "smsclub": "UAH", "kingsms": "XOF", "sms1601": "credits"}
            for hour in range(90 * 24, 0, -1):
                snapshots.append(
                    {
                        "provider": provider,
                        "amount": 5000.0 + hour * 3.0,
                        "unit": unit[provider],
                        "expires_at": None,
                        "active": True,
                        "state": "active",
                        "error": None,
                        "created_at": now - timedelta(hours=hour),
                    }
                )
        conn.execute(insert(BalanceSnapshot.__table__), snapshots)  # type: ignore[attr-defined]
        for k in range(20):
            result = conn.execute(
                insert(Alert.__table__).values(  # type: ignore[attr-defined]
                    provider=PROVIDERS[k % 4],
                    kind="low_balance",
                    message=f"balance alert {k}",
                    payload='{"kind": "low_balance"}',
                    created_at=now - timedelta(days=k),
                )
            )
            conn.execute(
                insert(AlertDelivery.__table__).values(  # type: ignore[attr-defined]
                    alert_id=result.inserted_primary_key[0],
                    channel="webhook",
                    state="delivered",
                    attempts=1,
                    next_attempt_at=None,
                    created_at=now - timedelta(days=k),
                    updated_at=now - timedelta(days=k),
                )
            )
    assert first is not None
    return Loaded(
        messages=n,
        events=total_events,
        seconds=time.perf_counter() - started,
        sample_id=first["id"],
        sample_number=first["to"],
        sample_key=first["idempotency_key"],
        sample_gateway_id=first["provider_message_id"],
    )


def roll_up() -> tuple[int, float]:
    """Roll every stored event up (the beat task's work, in bigger batches): (events, s)."""
    from datetime import timedelta as td

    from worker.ui import rollup

    started = time.perf_counter()
    total = 0
    while True:
        done = rollup.run(batch=20000, budget=60.0, lag=td(0))
        total += done.events
        if done.events == 0:
            break
    return total, time.perf_counter() - started


def pages(loaded: Loaded) -> list[tuple[str, str]]:
    """(name, path) of every dashboard page, with queries that find something."""
    return [
        ("overview, last hour", "/ui?window=hour"),
        ("overview, last day", "/ui?window=day"),
        ("overview, last week", "/ui?window=week"),
        ("balances and alerts", "/ui/balances"),
        ("find by id", f"/ui/messages?q={loaded.sample_id}"),
        ("find by number", f"/ui/messages?q={loaded.sample_number}"),
        ("find by idempotency key", f"/ui/messages?q={loaded.sample_key}&by=key"),
        ("find by gateway id", f"/ui/messages?q={loaded.sample_gateway_id}&by=gateway"),
        ("one message's timeline", f"/ui/messages/{loaded.sample_id}"),
        ("suppressions", "/ui/suppressions"),
    ]


def auth_header() -> dict[str, str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def time_pages(get, loaded: Loaded, repeats: int = 5) -> list[tuple[str, int, float, float]]:  # type: ignore[no-untyped-def]
    """(page, status, best ms, worst ms) of `repeats` requests after one warm-up."""
    out = []
    for name, path in pages(loaded):
        status = get(path).status_code
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = get(path)
            times.append((time.perf_counter() - started) * 1000)
            status = answer.status_code
        out.append((name, status, min(times), max(times)))
    return out


def bench_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSQ_")}
    env.update(
        SMSQ_DATA_DIR=str(data_dir),
        SMSQ_UI_BASIC_AUTH=f"{USER}:{PASSWORD}",
        **{f"SMSQ_{p.upper()}_BASE_URL": "http://127.0.0.1:1" for p in PROVIDERS},
        SMSQ_KECCEL_TOKEN="bench",
        SMSQ_SMSCLUB_TOKEN="bench",
        SMSQ_KINGSMS_API_KEY="bench",
        SMSQ_KINGSMS_CLIENT_ID="bench",
        SMSQ_SMS1601_USERNAME="bench",
        SMSQ_SMS1601_PASSWORD="bench",
        SMSQ_KECCEL_LOW_BALANCE="1000",
    )
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the store in this directory")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="smsq-ui-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    from producer.embedded_redis import ensure_embedded_redis, stop_embedded_redis

    env = {**bench_env(data_dir), "SMSQ_BROKER_URL": ensure_embedded_redis(data_dir)}
    try:
        return run(args, data_dir, env)
    finally:
        stop_embedded_redis(data_dir)  # before the directory goes: it finds Redis there
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def run(args: argparse.Namespace, data_dir: Path, env: dict[str, str]) -> int:
    """Load, roll up, serve and time (a real Redis behind the queue and breaker reads)."""
    os.environ.clear()
    os.environ.update(env)
    from producer import db
    from worker.ops.stack import reset_process_state

    reset_process_state()
    db.get_engine()
    loaded = load_store(args.messages)
    print(
        f"loaded {loaded.messages:,} messages and {loaded.events:,} events into SQLite "
        f"in {loaded.seconds:.0f} s ({loaded.messages / loaded.seconds:,.0f} messages/s)"
    )
    events, seconds = roll_up()
    print(
        f"rolled {events:,} events up into ui_stats in {seconds:.0f} s "
        f"({events / max(seconds, 1e-9):,.0f} events/s)"
    )
    size = sum(p.stat().st_size for p in data_dir.glob("smsq.db*")) / 1e6
    print(f"store: {size:,.0f} MB; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    web = _start_web(data_dir, env)
    try:
        import httpx

        with httpx.Client(base_url=web[1], headers=auth_header(), timeout=30) as client:
            results = time_pages(client.get, loaded)
    finally:
        web[0].terminate()
        web[0].wait(timeout=20)
    print(f"\n{'page':28} {'status':>6} {'best ms':>8} {'worst ms':>9}")
    for name, status, best, worst in results:
        print(f"{name:28} {status:>6} {best:>8.1f} {worst:>9.1f}")
    slow = [r for r in results if r[3] > LIMIT_MS or r[1] != 200]
    median = statistics.median(r[2] for r in results)
    print(f"\nmedian best {median:.1f} ms; limit {LIMIT_MS:.0f} ms per page: ", end="")
    print("all within" if not slow else f"{len(slow)} over (or not 200)")
    return 1 if slow else 0


def _start_web(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from worker.gateways.sandbox.server import free_port

    port = free_port()
    log = open(data_dir / "web.log", "ab")  # noqa: SIM115 (kept for the child)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "worker.web:app", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ui", headers=auth_header(), timeout=30).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit(f"the web process did not answer; see {data_dir}/web.log")


if __name__ == "__main__":
    raise SystemExit(main())
