"""The benchmark's own arithmetic: py-spy's raw format read back (bench/profile.py),
the history it writes (bench/history.py) and the per-message costs (bench/costs.py)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from bench.costs import Snapshot, per_message
from bench.history import EVENT_COLUMNS, MESSAGE_COLUMNS, history_rows
from bench.profile import Profile, own_and_total, package, parse_raw

RAW = """\
_bootstrap (threading.py);send (worker/tasks.py);execute (sqlalchemy/engine/base.py) 7
_bootstrap (threading.py);send (worker/tasks.py);send_packed_command (redis/connection.py) 3
_bootstrap (threading.py);send (worker/tasks.py) 2

"""


def test_raw_stacks_give_own_and_total_samples() -> None:
    stacks = parse_raw(RAW)
    assert sum(stacks.values()) == 12
    own, total = own_and_total(Profile("single", "not idle", 10, 1.0, stacks, 0.1))
    assert own == Counter(
        {
            "execute (sqlalchemy/engine/base.py)": 7,
            "send_packed_command (redis/connection.py)": 3,
            "send (worker/tasks.py)": 2,
        }
    )
    assert total["send (worker/tasks.py)"] == 12
    assert "_bootstrap (threading.py)" not in total  # every thread's bottom frame
    assert package("execute (sqlalchemy/engine/base.py)") == "sqlalchemy"
    assert package("send (worker/tasks.py)") == "worker"
    assert package("_send_batch (worker/sending/send.py)") == "worker/sending"
    assert package("uuid4 (uuid.py)") == "stdlib uuid"


def test_the_history_is_final_old_rows_masked_and_shaped_like_the_tables() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rows = list(history_rows(0, 1000, 1000, now))
    fates = Counter(m[MESSAGE_COLUMNS.index("status")] for m, _e in rows)
    assert set(fates) == {"delivered", "undelivered", "rejected", "expired", "failed"}
    for message, events in rows:
        assert len(message) == len(MESSAGE_COLUMNS)
        assert all(len(e) + 1 == len(EVENT_COLUMNS) for e in events)  # + message_id
        created = message[MESSAGE_COLUMNS.index("created_at")]
        redacted = message[MESSAGE_COLUMNS.index("redacted_at")]
        to = message[MESSAGE_COLUMNS.index('"to"')]
        assert (redacted is not None) == (now - created > timedelta(days=90))
        assert ("****" in to) == (redacted is not None)
        assert all((e[8] is None) for e in events) or redacted is None  # raw


def test_costs_are_deltas_per_message() -> None:
    def snap(scale: int) -> Snapshot:
        trips = {"statements": 6 * scale, "commits": 2 * scale, "checkouts": 3 * scale}
        return Snapshot(
            redis_calls={"lpush": 2 * scale, "info": 99 * scale},
            redis_cpu=0.5 * scale,
            worker=trips,
            worker_cpu=1.0 * scale,
            producer={"statements": scale, "commits": scale, "checkouts": scale},
            producer_cpu=0.25 * scale,
            store_cpu=None,
        )

    costs = per_message(snap(100), snap(300), 200)
    assert costs.redis_commands == 2.0  # INFO, the snapshots' own, left out
    assert costs.worker_trips == {"statements": 6.0, "commits": 2.0, "checkouts": 3.0}
    assert costs.worker_cpu_ms == 1000.0 * 200 / 200
    assert costs.store_cpu_ms is None
