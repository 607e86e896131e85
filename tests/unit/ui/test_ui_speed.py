"""Every dashboard page answers fast on a store of 20,000 messages (issue 19, point 6).

The small version of `bench/ui.py` (1,000,000 messages, figures in the README):
the same loader, the real roll-up, then each page through the ASGI app. The
limit is the issue's 300 ms; the pages take a few ms here, so only a page that
scans the store (or the roll-up missing) comes near it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from bench.ui import LIMIT_MS, auth_header, bench_env, load_store, pages, roll_up, time_pages
from tests.unit.conftest import isolate, restore

MESSAGES = 20_000


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in bench_env(tmp_path).items() if k.startswith("SMSQ_")}
    isolate(monkeypatch, tmp_path, **env)
    from worker.web import app

    with TestClient(app, headers=auth_header()) as c:
        yield c
    restore(monkeypatch)


def test_every_page_within_the_limit_on_a_loaded_store(big: TestClient) -> None:
    loaded = load_store(MESSAGES)
    assert loaded.events > 2.5 * MESSAGES
    events, _ = roll_up()
    assert events == loaded.events
    results = time_pages(big.get, loaded, repeats=3)
    assert len(results) == len(pages(loaded))
    for name, status, best, _worst in results:
        assert status == 200, name
        assert best < LIMIT_MS, f"{name}: {best:.0f} ms"
    week = big.get("/ui?window=week").text
    # The loaded outcomes are on the page: about 90 % delivered, every gateway charted.
    assert week.count("<svg") >= 8
    totals = week.split('id="totals"')[1].split("</table>")[0]
    ratios = [float(r) for r in re.findall(r"(\d+\.\d) %", totals)]
    assert len(ratios) == 4 and all(88 < r < 93 for r in ratios), ratios
