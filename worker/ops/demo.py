"""`smsq demo`: the whole stack, a mixed batch through every gateway, a final table.

The sandbox decides each message's fate from the last digit of its number
(0 rejected, 9 undelivered, 8 expired, else delivered); the demo shows that
every message reached exactly that status, then stops everything it started.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producer.limits import limits_for
from producer.status import TERMINAL, Status
from worker.gateways import registry
from worker.gateways.sandbox.base import outcome_for
from worker.ops.stack import Stack

# The last digit of each gateway's sample number, one message each (see outcome_for).
LAST_DIGITS = "1234567890"


def expected_status(provider: str, to: str) -> Status:
    outcome = outcome_for(to)
    if outcome == "expired":
        return registry.spec(provider).expired_reported_as
    return Status(outcome)


def run_demo(data_dir: Path, timeout: float = 120.0) -> int:
    # SIGTERM ends the demo as Ctrl-C does, through the `finally` that stops the
    # stack (its default action would kill this process and leave the stack running).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    console = Console(width=None if Console().is_terminal else 150)
    console.print("[bold]smsq demo[/]: starting Redis, worker, beat, web and the sandbox…")
    stack = Stack(data_dir=data_dir, delivery_seconds=3.0)
    try:
        stack.start()
        assert stack.sandbox is not None
        providers = [
            s.name
            for s in registry.specs()
            if s.sample_number and s.name in stack.sandbox.sandbox.sims
        ]
        console.print(f"stack up; web on {stack.web_url}; gateways: {', '.join(providers)}")
        first = providers[0]
        # One 503 at the first gateway, to show a retry that sends once.
        httpx.post(f"{stack.sandbox.url}/_control/{first}/faults", json={"status": 503, "times": 1})
        sent = _send_batch(providers, console)
        _follow(sent, timeout, console)
        ok = _final_table(sent, console)
        # The first gateway's simulated account expires in five days: `expiring` shows.
        httpx.post(f"{stack.sandbox.url}/_control/{first}/account", json={"expires_in_days": 5})
        _balances(console)
        return 0 if ok else 1
    finally:
        console.print("stopping every process the demo started…")
        stack.stop()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _send_batch(providers: list[str], console: Console) -> list[tuple[str, str, str]]:
    from producer import send_bulk, send_sms

    sent: list[tuple[str, str, str]] = []
    stamp = time.strftime("%H:%M:%S")
    bulk = next((p for p in providers if limits_for(p).max_batch >= len(LAST_DIGITS)), None)
    for provider in providers:
        numbers = [registry.spec(provider).sample_number + d for d in LAST_DIGITS]
        if provider == bulk:  # one request carries all ten numbers
            ids = send_bulk(numbers, f"smsq demo {stamp}: bulk hello", provider=provider)
            sent.extend((mid, provider, n) for mid, n in zip(ids, numbers, strict=True))
            continue
        for i, number in enumerate(numbers):
            text = f"smsq demo {stamp} #{i}: hello from smsq"
            if provider == providers[0] and i == 3:
                text = f"smsq demo {stamp}: Ŝtatus ✓ in UCS-2, more than seventy characters long…"
            sent.append((send_sms(number, text, provider=provider), provider, number))
    console.print(f"queued {len(sent)} messages through {len(providers)} gateways")
    return sent


def _follow(sent: list[tuple[str, str, str]], timeout: float, console: Console) -> None:
    from producer import get_status

    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} final"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("delivering", total=len(sent))
        while time.monotonic() < deadline:
            done = sum(1 for mid, _p, _n in sent if get_status(mid).status in TERMINAL)  # type: ignore[union-attr]
            progress.update(task, completed=done)
            if done == len(sent):
                return
            time.sleep(0.5)


def _final_table(sent: list[tuple[str, str, str]], console: Console) -> bool:
    from producer import get_status

    table = Table(title="final status of every message")
    for column in ("id", "provider", "to", "sandbox decided", "status", "attempts", "parts"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=48)
    all_ok = True
    for mid, provider, number in sent:
        st = get_status(mid)
        assert st is not None
        expected = expected_status(provider, number)
        ok = st.status == expected
        all_ok &= ok
        colour = "green" if ok else "red"
        table.add_row(
            mid[:8],
            provider,
            number,
            expected.value,
            f"[{colour}]{st.status}[/]",
            str(st.attempts),
            f"{st.segments} {st.encoding}",
            (st.error or st.note or "")[:50],
        )
    console.print(table)
    console.print(
        "[green]every message reached the status the sandbox decided[/]"
        if all_ok
        else "[red]some messages did not reach the status the sandbox decided[/]"
    )
    return all_ok


def _balances(console: Console) -> None:
    """Run one balance check (as beat does), then show balances and the balance alerts."""
    from worker.balance.alerts import active
    from worker.balance.checks import check_all
    from worker.balance.rules import describe_projection

    try:
        rows = check_all()
        firing = active()
    except Exception as exc:  # the demo's verdict is the messages' statuses
        console.print(f"[yellow]balance check failed: {type(exc).__name__}: {exc}[/]")
        return
    table = Table(title="balances")
    for column in ("provider", "balance", "unit", "expires", "runs out in", "state"):
        table.add_column(column)
    for row in rows.values():
        assert isinstance(row, dict)
        table.add_row(
            str(row["provider"]),
            "-" if row["balance"] is None else f"{row['balance']:g}",
            str(row["unit"] or ""),
            str(row["expires_at"] or "-")[:16],
            describe_projection(row["projection_days"]),
            str(row["state"]) if not row["error"] else f"error: {row['error']}",
        )
    console.print(table)
    if not firing:
        console.print("no balance alerts")
        return
    alerts = Table(title="balance alerts")
    for column in ("provider", "kind", "since", "message"):
        alerts.add_column(column)
    for alert in firing:
        alerts.add_row(
            alert["provider"], alert["kind"], str(alert["since"] or "")[:19], alert["message"]
        )
    console.print(alerts)
