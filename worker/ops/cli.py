"""The `smsq` command. User mistakes get one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from producer.errors import EnqueueError, InvalidMessage
from producer.settings import get_settings, provider_names
from worker.gateways import registry
from worker.gateways.base import ProviderError
from worker.gateways.spec import (
    GatewaySpec,
    ListsSenders,
    ReportQuery,
    ReportsByDate,
    ReportsRecent,
)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _gateways(able: Callable[[GatewaySpec], bool]) -> list[str]:
    """The registered gateways whose spec has an ability (CLI choices)."""
    return [s.name for s in registry.specs() if able(s)]


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="smsq", description="SMS dispatch on Celery and Redis.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    send = sub.add_parser("send", help="queue a message to one or more numbers")
    send.add_argument("--to", action="append", required=True, help="number (repeatable)")
    send.add_argument("--text", required=True)
    send.add_argument("--provider", choices=provider_names())
    send.add_argument("--sender")
    send.add_argument("--at", help="send later: ISO 8601 date and time")
    send.add_argument("--idempotency-key")
    send.add_argument("--flash", action="store_true", help="flash SMS (KING SMS PRO)")
    send.add_argument(
        "--priority", help="high, normal or bulk (default: normal, bulk for several --to)"
    )
    send.add_argument("--ttl", type=int, help="seconds; not sent within them: expired")
    send.add_argument(
        "--no-quiet-hours",
        dest="quiet_hours",
        action="store_false",
        help="send now even inside SMSQ_QUIET_HOURS",
    )

    status = sub.add_parser("status", help="show a message's status and history")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")

    balance = sub.add_parser(
        "balance", help="balance, expiry, projection, state and last alert per provider"
    )
    balance.add_argument("--json", action="store_true")

    alerts = sub.add_parser("alerts", help="balance alerts raised, newest first")
    alerts.add_argument("--provider", choices=provider_names())
    alerts.add_argument("--limit", type=int, default=20)
    alerts.add_argument("--json", action="store_true")

    sandbox = sub.add_parser("sandbox", help="serve the gateway simulators")
    sandbox.add_argument("--port", type=int, default=8025)
    sandbox.add_argument("--delivery-seconds", type=float, default=2.0)

    sub.add_parser("dev", help="the embedded stack until Ctrl-C, Flower on :5555")
    sub.add_parser("demo", help="the embedded stack, a batch through every gateway, a table")
    sub.add_parser("migrate", help="bring the store's schema up to date")
    sub.add_parser("flower", help="start Flower with basic auth from SMSQ_FLOWER_BASIC_AUTH")

    cancel = sub.add_parser("cancel", help="cancel a message not yet sent")
    cancel.add_argument("id")

    senders = sub.add_parser("senders", help="sender names the provider allows")
    senders.add_argument("provider", choices=_gateways(lambda s: s.sender_list))

    by_date = ", ".join(_gateways(lambda s: s.report_query == ReportQuery.DATE_RANGE))
    recent = ", ".join(_gateways(lambda s: s.report_query == ReportQuery.RECENT))
    report = sub.add_parser("report", help="delivery reports from the provider")
    report.add_argument("provider", choices=_gateways(lambda s: s.report_query != ReportQuery.NONE))
    report.add_argument("--from", dest="date_from", help=f"YYYY-MM-DD ({by_date})")
    report.add_argument("--to", dest="date_to", help=f"YYYY-MM-DD ({by_date})")
    report.add_argument("--count", type=int, default=100, help=f"last N reports ({recent})")
    report.add_argument("--json", action="store_true")

    sup = sub.add_parser("suppress", help="the suppression list (opt-outs)")
    sup_sub = sup.add_subparsers(dest="action", required=True, parser_class=_Parser)
    add = sup_sub.add_parser("add", help="suppress a number")
    add.add_argument("number")
    add.add_argument("--reason")
    add.add_argument("--scope", choices=("all", "bulk"), default="all")
    remove = sup_sub.add_parser("remove", help="take a number off the list")
    remove.add_argument("number")
    listing = sup_sub.add_parser("list", help="suppressed numbers, in number order")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--after", help="start after this number (paging)")
    listing.add_argument("--json", action="store_true")

    cb = sub.add_parser("callback-url", help="the delivery-callback URL to give a provider")
    cb.add_argument("provider", choices=provider_names())
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from producer.queues import expect_embedded_redis

    expect_embedded_redis()  # `smsq` on a machine with no broker set: the embedded one
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except InvalidMessage as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return 2
    except ProviderError as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return 1
    except (EnqueueError, UsageError) as exc:
        print(f"smsq: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    except KeyboardInterrupt:
        return 130


def _send(args: argparse.Namespace) -> int:
    from producer import send_bulk, send_sms

    common = {
        "provider": args.provider,
        "sender": args.sender,
        "idempotency_key": args.idempotency_key,
        "send_at": args.at,
        "flash": args.flash,
        "ttl": args.ttl,
        "quiet_hours": args.quiet_hours,
    }
    if args.priority is not None:
        common["priority"] = args.priority
    if len(args.to) == 1:
        ids = [send_sms(args.to[0], args.text, **common)]
    else:
        ids = send_bulk(args.to, args.text, **common)
    print("\n".join(ids))
    return 0


def _message_id(value: str) -> str:
    """`value`, or UsageError when it cannot be a stored id (undecodable argv bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"id: no message {value!r}") from None
    return value


def _status(args: argparse.Namespace) -> int:
    from producer import get_status
    from producer.api import message_events

    st = get_status(_message_id(args.id))
    if st is None:
        raise UsageError(f"id: no message {args.id!r}")
    if args.json:
        print(json.dumps({**st.to_dict(), "events": message_events(st.id)}, indent=2))
        return 0
    for key, value in st.to_dict().items():
        if key != "text":
            print(f"{key:20} {value if value is not None else '-'}")
    print(f"{'text':20} {st.text}")
    events = message_events(st.id)
    print(f"\nevents ({len(events)}, oldest first; --json for the raw payloads whole):")
    for line in timeline_lines(events):
        print(line)
    return 0


RAW_CHARS = 300


def timeline_lines(events: list[dict[str, object]]) -> list[str]:
    """`smsq status`'s event timeline: one line per event, its raw payload under it
    (credentials hidden, cut at RAW_CHARS)."""
    from worker.ui.redact import show

    lines = []
    for e in events:
        old, new = e.get("old_status"), e.get("new_status")
        move = f"{old or '-'} -> {new}" if new else ""
        ignored = "" if e.get("applied", True) else " (not applied)"
        note = f"  {e['note']}" if e.get("note") else ""
        at = str(e.get("at", ""))[:23].replace("T", " ")
        lines.append(f"  {at}  {e.get('source', ''):7} {e.get('kind', ''):9} {move}{ignored}{note}")
        raw = show(e.get("raw"), indent=None, reveal=True)
        if raw:
            cut = raw if len(raw) <= RAW_CHARS else raw[:RAW_CHARS] + " ..."
            lines.append(f"      raw: {cut}")
    return lines


def _balance(args: argparse.Namespace) -> int:
    from worker.balance.checks import enrich, fetch_all, record_guard
    from worker.balance.rules import describe_projection

    rows = enrich(fetch_all())
    for row in rows:  # a renewed account sends again at once, not at the next check
        record_guard(row)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="balances")
    for column in ("provider", "balance", "unit", "expires", "runs out in", "state", "last alert"):
        table.add_column(column)
    for r in rows:
        last = r.last_alert
        table.add_row(
            r.provider,
            "-" if r.amount is None else f"{r.amount:g}",
            r.unit or "",
            r.expires_at.isoformat(timespec="minutes") if r.expires_at else "-",
            "-" if r.error else describe_projection(r.projection_days),
            r.state if not r.error else f"error: {r.error}",
            f"{last['kind']} {str(last['created_at'])[:16]}" if last else "-",
        )
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)
    if not rows:
        print("no provider is configured")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    from worker.balance.alerts import history

    if args.limit < 1:
        raise UsageError("--limit: must be at least 1")
    rows = history(limit=args.limit, provider=args.provider)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no balance alert has been raised")
        return 0
    for row in rows:
        sent = ", ".join(f"{d['channel']} {d['state']}" for d in row["deliveries"]) or "log only"
        print(f"{row['created_at'][:19]}  {row['provider']:<8} {row['kind']:<12} {row['message']}")
        print(f"{'':30}({sent})")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from worker.gateways.sandbox.server import serve

    print(f"sandbox on http://127.0.0.1:{args.port}/<provider>  (Ctrl-C to stop)")
    serve(port=args.port, delivery_seconds=args.delivery_seconds)
    return 0


def _data_dir() -> Path:
    return Path(get_settings().data_dir)


def _demo(args: argparse.Namespace) -> int:
    from worker.ops.demo import run_demo

    return run_demo(_data_dir())


def _dev(args: argparse.Namespace) -> int:
    from worker.ops.stack import Stack

    os.environ.setdefault("SMSQ_FLOWER_BASIC_AUTH", "admin:smsq-dev")
    os.environ.setdefault("SMSQ_UI_BASIC_AUTH", "admin:smsq-dev")
    stop = stop_on_signals()  # before any process or thread starts: none is left behind
    stack = Stack(data_dir=_data_dir(), flower=True)
    env_file: Path | None = None
    try:
        stack.start()
        assert stack.sandbox is not None
        env_file = stack.publish_env()
        print(f"smsq dev: web {stack.web_url}, sandbox {stack.sandbox.url}")
        print(f"another shell here reaches this stack with no exports ({env_file})")
        print("Flower on http://127.0.0.1:5555 (user:password from SMSQ_FLOWER_BASIC_AUTH)")
        print(f"dashboard on {stack.web_url}/ui (user:password from SMSQ_UI_BASIC_AUTH)")
        print(f"logs in {stack.data_dir / 'logs'}; Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if env_file is not None:
            env_file.unlink(missing_ok=True)
        stack.stop()
    return 0


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM. Python runs the handler in the main thread
    whichever thread the kernel gave the signal to, and a timed wait on the event
    returns to it: nothing is missed. (A bare `sigwait` missed a SIGINT that went to
    the sandbox's thread, and SIGTERM, not blocked, killed this process outright,
    leaving Redis, the workers and beat running.)"""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _migrate(args: argparse.Namespace) -> int:
    from producer import db

    db.get_engine()
    print(f"schema up to date at {db.database_url().split('@')[-1]}")
    return 0


def _flower(args: argparse.Namespace) -> int:
    from worker.ops.stack import flower_command

    port = os.environ.get("PORT", "5555")
    command = flower_command(port=int(port))
    command = [c if not c.startswith("--address") else "--address=0.0.0.0" for c in command]
    os.execvpe(command[0], command, os.environ)
    return 0


def _callback_url(args: argparse.Namespace) -> int:
    from producer.limits import limits_for
    from producer.settings import provider_settings
    from worker.tracking.callback_urls import callback_url

    if not limits_for(args.provider).supports_push:
        raise UsageError(
            f"provider: {args.provider} does not push delivery reports; smsq polls it (pull)"
        )
    url = callback_url(args.provider)
    if url is None:
        raise UsageError("SMSQ_PUBLIC_URL is not set: the providers cannot reach smsq")
    print(url)
    mode = provider_settings(args.provider).dlr_mode
    if mode == "pull":
        print(
            f"note: SMSQ_{args.provider.upper()}_DLR_MODE is pull; set push or both "
            "so smsq expects the callbacks",
            file=sys.stderr,
        )
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from worker.sending.cancel import cancel_message

    st = cancel_message(_message_id(args.id))
    print(f"{st.id} cancelled")
    return 0


def _senders(args: argparse.Namespace) -> int:
    from worker.gateways.registry import get_adapter

    adapter = get_adapter(args.provider)
    if not isinstance(adapter, ListsSenders):
        raise UsageError(f"{args.provider} cannot list its senders")
    for name in adapter.fetch_senders():
        print(name)
    return 0


def _parse_day(value: str | None, field: str) -> date:
    if not value:
        raise UsageError(f"{field}: give a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{field}: {value!r} is not a date (YYYY-MM-DD)") from None


def _report(args: argparse.Namespace) -> int:
    from worker.gateways.registry import get_adapter

    adapter = get_adapter(args.provider)
    if isinstance(adapter, ReportsByDate):
        start, end = _parse_day(args.date_from, "--from"), _parse_day(args.date_to, "--to")
        if end < start:
            raise UsageError("--to: must not be before --from")
        reports = adapter.fetch_reports(start, end)
    elif isinstance(adapter, ReportsRecent):
        if args.count < 1:
            raise UsageError("--count: must be at least 1")
        reports = adapter.fetch_report(args.count)
    else:
        raise UsageError(f"{args.provider} offers no delivery reports to read")
    rows = [
        {
            "provider_message_id": r.provider_message_id,
            "status": r.status.value if r.status else None,
            "raw_status": r.raw_status,
            "to": r.to,
            "at": r.occurred_at.isoformat() if r.occurred_at else None,
        }
        for r in reports
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            status = row["status"] or "-"
            print(
                f"{row['provider_message_id']:>12}  {row['raw_status']:<14} {status:<12} "
                f"{row['to'] or ''} {row['at'] or ''}"
            )
    return 0


def _suppress(args: argparse.Namespace) -> int:
    from producer import suppressions

    if args.action == "add":
        entry = suppressions.suppress(args.number, args.reason, args.scope)
        print(f"suppressed {entry.number} ({entry.scope})")
    elif args.action == "remove":
        if not suppressions.unsuppress(args.number):
            raise UsageError(f"number: {args.number!r} is not suppressed")
        print(f"unsuppressed {args.number}")
    else:
        entries = suppressions.list_suppressions(limit=args.limit, after=args.after)
        if args.json:
            print(json.dumps([e.to_dict() for e in entries], indent=2))
        for e in [] if args.json else entries:
            print(f"{e.number:16} {e.scope:5} {e.created_at:%Y-%m-%d %H:%M}  {e.reason or ''}")
    return 0


_COMMANDS = {
    "suppress": _suppress,
    "cancel": _cancel,
    "senders": _senders,
    "report": _report,
    "send": _send,
    "status": _status,
    "balance": _balance,
    "alerts": _alerts,
    "sandbox": _sandbox,
    "dev": _dev,
    "demo": _demo,
    "migrate": _migrate,
    "flower": _flower,
    "callback-url": _callback_url,
}

if __name__ == "__main__":
    raise SystemExit(main())
