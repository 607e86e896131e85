"""`smsq status ID` shows the event timeline in its human output (issue 19, point 7)."""

from __future__ import annotations

import re

import pytest

from producer import db
from tests.unit.ops.test_cli import DRC, store  # noqa: F401  (the fixture)
from worker.ops.cli import main
from worker.store.transitions import record_event


def test_status_prints_each_event_with_its_raw_payload(
    store: list,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["send", "--to", DRC, "--text", "Hello", "--provider", "keccel"]) == 0
    mid = capsys.readouterr().out.strip()
    assert main(["cancel", mid]) == 0
    with db.session() as s:  # a report with a payload, one field a credential by its name
        record_event(
            s,
            mid,
            source="push",
            kind="report",
            provider="keccel",
            applied=False,
            note="late report",
            raw={"status": "DELIVERED", "token": "tok-abcdef", "to": DRC},
        )
        s.commit()
    capsys.readouterr()

    assert main(["status", mid]) == 0
    out = capsys.readouterr().out
    assert "events (3, oldest first" in out
    lines = [line for line in out.splitlines() if re.match(r"^  \d{4}-", line)]
    assert len(lines) == 3
    assert re.search(r"producer\s+status\s+- -> queued", lines[0])
    assert re.search(r"cli\s+status\s+queued -> failed\s+cancelled", lines[1])
    assert re.search(r"push\s+report\s+\(not applied\)\s+late report", lines[2])
    raw = next(line for line in out.splitlines() if line.strip().startswith("raw:"))
    assert '"status": "DELIVERED"' in raw and DRC in raw
    assert "tok-abcdef" not in out and '"token": "***"' in raw
