"""The dashboard on a running stack, in a real browser; and Flower's view of the tasks.

A stack of its own (the package's shared one has no SMSQ_UI_BASIC_AUTH): a real
Celery worker (`-E`) and beat, the web process, the four gateway simulators.
Messages go through all four gateways with every outcome the simulators give;
then Debian's Chromium (headless, driven by Playwright over CDP: Playwright
downloads no browser here) opens each page: the charts are drawn, a search
finds a message, a cancel works, and no page logs a console error. Screenshots
go to the test's tmp dir, and to $UI_SCREENSHOTS when set (docs/ for the
README).

The Flower test listens to the broker's task events as Flower does (Celery's
event receiver into `celery.events.state.State`, the class Flower's own state
extends) while beat ticks: the sends show, the maintenance tasks do not.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from producer import db, get_status, send_sms
from producer.models import BalanceSnapshot, utcnow
from producer.status import Status
from tests.integration.conftest import TEST_ENV, running_stack, wait_for, wait_status
from worker.ops.stack import Stack
from worker.ui import rollup

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "operator", "ui-test-Passw0rd"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Number by gateway; the last digit picks the simulator's fate: 0 rejected at send,
# 9 undelivered, 8 expired, anything else delivered.
NUMBERS = {
    "keccel": "24385123456",
    "smsclub": "38098936113",
    "kingsms": "2289012345",
    "sms1601": "3161234567",
}


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **TEST_ENV,
        "SMSQ_UI_BASIC_AUTH": f"{USER}:{PASSWORD}",
        "SMSQ_UI_ROLLUP_SECONDS": "0.5",
        "SMSQ_KECCEL_LOW_BALANCE": "100",
        "SMSQ_SMSCLUB_LOW_BALANCE": "20",
        "SMSQ_KECCEL_RATE_LIMIT": "20",
    }
    with running_stack(
        tmp_path_factory.mktemp("ui"), delivery_seconds=0.5, worker_concurrency=4, extra_env=env
    ) as running:
        yield running


@pytest.fixture(scope="module")
def traffic(ui_stack: Stack) -> dict[str, Any]:
    """Messages through all four gateways, every fate, all final and rolled up; a
    balance history and today's check (keccel low and expiring, so alerts show)."""
    ids: dict[str, list[str]] = {}
    for provider, prefix in NUMBERS.items():
        ids[provider] = [
            send_sms(f"{prefix}{digit}", f"dashboard {provider} {n}", provider=provider)
            for n, digit in enumerate("1234567190" * 2)
        ]
    for mids in ids.values():
        for mid in mids:
            wait_status(mid, *[s for s in Status if s.value in FINAL], timeout=60)
    _balances(ui_stack)
    wait_for(lambda: rollup.status()["behind"] == 0, timeout=30, every=0.5)
    return {"ids": ids}


FINAL = ("delivered", "undelivered", "expired", "rejected", "failed")


def _balances(stack: Stack) -> None:
    from worker.balance.checks import check_all

    assert stack.sandbox is not None
    sims = stack.sandbox.sandbox.sims
    sims["keccel"].update_account({"balance": 80, "expires_in_days": 5})
    sims["smsclub"].update_account({"balance": 300})
    first = check_all()
    now = utcnow()
    with db.session() as s:  # three days of hourly history before today's check
        for provider, row in first.items():
            if row["balance"] is None:
                continue
            for hour in range(72, 0, -1):
                s.add(
                    BalanceSnapshot(
                        provider=provider,
                        amount=float(row["balance"]) + hour * 1.5,  # type: ignore[arg-type]
                        unit=row["unit"],  # type: ignore[arg-type]
                        state="active",
                        created_at=now - timedelta(hours=hour),
                    )
                )
        s.commit()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing (.ci/run installs it)"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Watched:
    """A page whose console errors, uncaught exceptions and failed requests are kept."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))
        self.page.on(
            "response",
            lambda r: (
                self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
            ),
        )


def shoot(page: Any, name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_pages_in_a_real_browser(
    ui_stack: Stack, traffic: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    base = ui_stack.web_url
    w = Watched(browser)
    page = w.page

    page.goto(f"{base}/ui?window=hour")
    for provider in NUMBERS:
        card = page.locator(f'article.gateway[data-provider="{provider}"]')
        assert card.count() == 1, provider
        bars = card.locator("svg.chart rect")
        assert bars.count() >= 3, provider  # delivered, undelivered, expired, rejected...
        box = bars.first.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0
        assert card.locator("svg.chart polyline").count() >= 2  # sent, and p50
    totals = page.locator("#totals tbody tr")
    assert totals.count() == 4
    row = page.locator("#totals tbody tr", has_text="keccel").inner_text().split("\t")
    sent, delivered, undelivered, expired, failed, rejected = (int(c) for c in row[1:7])
    assert sent + rejected == 20 and rejected == 2  # the two rejected at send never went
    stored = Counter(get_status(m).status for m in traffic["ids"]["keccel"])  # type: ignore[union-attr]
    assert (delivered, undelivered, expired, failed) == tuple(
        stored[s] for s in ("delivered", "undelivered", "expired", "failed")
    )
    assert row[7].strip() == f"{100 * stored['delivered'] / 20:.1f} %"
    assert page.locator("#breakers").inner_text().count("closed") == 4
    assert "/ 20 per s" in page.locator("#breakers").inner_text()
    shoot(page, "ui-overview", tmp_path)

    page.goto(f"{base}/ui/balances")
    keccel = page.locator('article.balance[data-provider="keccel"]')
    assert keccel.locator("svg.chart polyline").count() >= 1
    assert keccel.locator("line.m-threshold").count() == 1  # the alert threshold, drawn
    assert keccel.locator("line.m-expiry").count() == 1
    assert "balance history" in keccel.inner_text()
    alerts = page.locator("#alerts").inner_text()
    assert "low_balance" in alerts and "expiring" in alerts
    shoot(page, "ui-balances", tmp_path)

    target = traffic["ids"]["smsclub"][3]
    number = NUMBERS["smsclub"] + "4"
    page.goto(f"{base}/ui/messages")
    page.fill("input[name=q]", number)
    page.click("form.search button[type=submit]")
    page.wait_for_load_state()
    results = page.locator("#results").inner_text()
    assert target in results and number not in results  # masked unless asked
    shoot(page, "ui-find", tmp_path)
    page.click(f"#results a[href='/ui/messages/{target}']")
    page.wait_for_load_state()
    assert page.locator("#timeline li").count() >= 4
    page.locator("#timeline details summary").first.click()
    assert page.locator("#timeline details pre").first.is_visible()
    shoot(page, "ui-message", tmp_path)

    later = send_sms(NUMBERS["keccel"] + "1", "not yet", provider="keccel", send_at=_in(3600))
    page.goto(f"{base}/ui/messages/{later}")
    page.once("dialog", lambda d: d.accept())  # the "are you sure" of ui.js
    page.click("#cancel")
    page.wait_for_load_state()
    assert page.locator("#status").inner_text() == "failed"
    assert "Cancelled" in page.locator(".notice").inner_text()
    assert "cancelled in the dashboard by operator" in page.locator("#timeline").inner_text()
    assert get_status(later).status == "failed"  # type: ignore[union-attr]

    page.goto(f"{base}/ui/suppressions")
    page.fill("#suppress input[name=number]", NUMBERS["kingsms"] + "3")
    page.fill("#suppress input[name=reason]", "replied STOP")
    page.click("#suppress button[type=submit]")
    page.wait_for_load_state()
    assert "replied STOP" in page.locator("#suppressed").inner_text()
    assert "suppress" in page.locator("#actions").inner_text()
    shoot(page, "ui-suppressions", tmp_path)

    assert w.problems == []


def test_pages_fit_a_phone(
    ui_stack: Stack, traffic: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    w = Watched(browser)
    page = w.page
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/ui", "/ui/balances", "/ui/messages", "/ui/suppressions"):
        page.goto(f"{ui_stack.web_url}{path}")
        # Nothing wider than the screen but the tables' own scroll boxes.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
        chart = page.locator("svg.chart").first
        if chart.count():
            box = chart.bounding_box()
            assert box is not None and box["width"] <= 390
    page.goto(f"{ui_stack.web_url}/ui")
    shoot(page, "ui-phone", tmp_path)
    assert w.problems == []


def _in(seconds: float) -> str:
    return (utcnow() + timedelta(seconds=seconds)).isoformat()


def test_flower_sees_sends_not_maintenance(ui_stack: Stack) -> None:
    """Beat ticks twice a second here; over the listening window the tick, the
    roll-up and the balance check run (a scheduled send is released, the roll-up's
    watermark moves) and none of them reaches an event listener; the sends do."""
    from celery.events.state import State

    from producer.enqueue import publisher

    app = publisher()
    state = State()
    seen: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        seen.append(event)
        state.event(event)

    stop = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with app.connection_for_read() as conn:
            receiver = app.events.Receiver(conn, handlers={"*": on_event})
            ready.set()
            while not stop.is_set():
                try:
                    for _ in receiver.itercapture(limit=None, timeout=0.5, wakeup=False):
                        if stop.is_set():
                            break
                except (TimeoutError, OSError):  # no event within 0.5 s: listen on
                    continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    time.sleep(1.0)  # the receiver's queue is bound
    before = rollup.status()["watermark"]
    due = send_sms(
        NUMBERS["keccel"] + "2", "released by the tick", provider="keccel", send_at=_in(2)
    )
    now = send_sms(NUMBERS["smsclub"] + "2", "sent at once", provider="smsclub")
    wait_status(due, Status.DELIVERED, timeout=40)  # only a tick queues a scheduled send
    wait_status(now, Status.DELIVERED, timeout=40)
    wait_for(lambda: rollup.status()["watermark"] > before, timeout=30, every=0.5)
    time.sleep(2.0)  # a few more ticks
    stop.set()
    listener.join(timeout=10)

    names = {t.name for t in state.tasks.values() if t.name}
    assert "smsq.send" in names and "smsq.poll" in names
    assert names.isdisjoint({"smsq.tick", "smsq.ui_rollup", "smsq.check_balances"}), names
    kinds = {e["type"] for e in seen if e["type"].startswith("task-")}
    assert {"task-sent", "task-received", "task-started", "task-succeeded"} <= kinds
    # (A task already received when the listener started shows without a name, as
    # in Flower; a maintenance task would send `task-received`, with its name, every
    # tick: none came.)
