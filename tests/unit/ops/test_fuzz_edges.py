"""Every input edge fuzzed (issue 8, point 1): producer API, CLI, delivery callbacks,
the HTTP enqueue API and the adapters' response parsing.

Each property is "a valid answer or the documented error, never another exception,
and nothing stored for rejected input". Hypothesis runs derandomized (the same
examples every run) with no example database; the inputs that once broke an edge
stay as explicit `@example`s.

Real SQLite store in a temp dir, a broker URL that points nowhere, publishing
recorded instead of sent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

from producer import InvalidMessage, db, send_bulk, send_sms
from producer import api as producer_api
from producer.limits import limits_for
from producer.models import Message, MessageEvent
from producer.settings import provider_names, reload_settings
from producer.status import Status, can_move
from tests.unit.gateways.test_adapter_contract import (
    NAMES,
    OPS,
    SPECS,
    Spec,
    assert_no_secret,
    build,
    call,
    check_outcome,
)
from worker.gateways.base import ProviderError, StatusReport
from worker.gateways.registry import adapter_class
from worker.tracking.callback_urls import callback_token

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # write nothing into the tree
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz(n: int) -> settings:
    return settings(FUZZ, max_examples=n)


HUGE_INT = 10**5000  # str() of it raises ValueError (Python's 4300-digit limit)
FAR_FUTURE_WEST = "9999-12-31T23:59:59-05:00"  # past datetime.max once in UTC
DEEP_JSON = b"[" * 50_000  # json.loads: RecursionError


# -- shared strategies -------------------------------------------------------------
def mostly(good: st.SearchStrategy[Any], fuzz: st.SearchStrategy[Any], n: int = 5) -> Any:
    """`good` n times out of n+1: every field rarely broken at once, so the success
    paths (rows stored, statuses moved) are exercised too, not only the refusals."""
    return st.sampled_from(range(n + 1)).flatmap(lambda i: good if i else fuzz)


SURROGATES = st.sampled_from(["\ud800", "\udcff", "\udfff"])  # argv, JSON "\ud800"
ODD_DIGITS = st.sampled_from(list("٠١٢٣٤٥٦٧٨٩۳३০０１２３４５６７８９²³¹𝟘𝟙"))
CONTROL = st.characters(min_codepoint=0, max_codepoint=31) | st.just("\x7f")
CHARS = st.characters() | ODD_DIGITS | CONTROL | SURROGATES
any_text = st.text(CHARS, max_size=30) | st.text(max_size=3000) | st.just("")

VALID_NUMBERS = ("243851234567", "380989361131", "22890443679", "31612345678")
decorated = st.sampled_from(
    (
        *VALID_NUMBERS,
        "+243 851 234 567",
        "00243851234567",
        "(243) 851-234-567",
        "243.851.234.567",
        " 243851234567\n",
        "+380 98 936 1131",
        "٢٤٣٨٥١٢٣٤٥٦٧",
        "２４３８５１２３４５６７",
        "243851234567\x00",
        "24385123456７",
        "243851234567" * 50,
        "+",
        "00",
        "()",
    )
)
numbers = (
    decorated
    | decorated.map(lambda n: n[:-1] + "٣")
    | st.builds(lambda n, junk: n + junk, decorated, any_text)
    | st.text(st.sampled_from("0123456789 +-()./٣３"), max_size=20)
    | any_text
)
bad_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.binary(max_size=20)
    | st.lists(st.integers(), max_size=2)
    | st.just(HUGE_INT)
)
to_values = (
    numbers
    | st.sampled_from([243851234567, 380989361131, -243851234567, 0])
    | st.integers(min_value=-(10**16), max_value=10**16)
    | bad_values
)
texts = (
    st.sampled_from(["Hello", "Ça va? ✓", "😀" * 3, "a" * 765, "a" * 2000]) | any_text | bad_values
)
senders = (
    st.none()
    | st.sampled_from(["SMSQ", "KING SMS", "12345", "+243851234567", "A" * 12, " ", "Ünïcode"])
    | any_text
    | bad_values
)
providers = (
    st.none() | st.sampled_from([*provider_names(), "KECCEL", " smsclub ", "nope"]) | any_text
)
offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
datetimes = st.datetimes(timezones=st.none() | st.just(UTC) | offsets) | st.sampled_from(
    [datetime.max, datetime.min, datetime.max.replace(tzinfo=UTC)]
)
future = st.builds(
    lambda days: datetime.now(UTC) + timedelta(days=days), st.integers(min_value=1, max_value=3000)
)
send_ats = (
    st.none()
    | datetimes
    | future
    | future.map(lambda d: d.replace(tzinfo=None))
    | future.map(lambda d: d.isoformat())
    | datetimes.map(lambda d: d.isoformat())
    | st.sampled_from([FAR_FUTURE_WEST, "0001-01-01T00:00:00+05:00", "2099-01-01Z", "tomorrow"])
    | any_text
    | bad_values
)
keys = st.none() | any_text | st.text(min_size=190, max_size=210) | bad_values
urls = (
    st.none()
    | st.sampled_from(["https://app.example/cb", "http://x", "ftp://x", "https:// x", "https://"])
    | st.builds(lambda tail: "https://app.example/" + tail, any_text)
    | any_text
    | bad_values
)
flashes = st.booleans() | bad_values


# -- 1. producer API ---------------------------------------------------------------
def _clear_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SMSQ_KECCEL_TOKEN", "k")
    monkeypatch.setenv("SMSQ_SMSCLUB_TOKEN", "s")
    monkeypatch.setenv("SMSQ_KINGSMS_API_KEY", "a")
    monkeypatch.setenv("SMSQ_KINGSMS_CLIENT_ID", "1")
    monkeypatch.setenv("SMSQ_SMS1601_USERNAME", "u")
    monkeypatch.setenv("SMSQ_SMS1601_PASSWORD", "p")
    monkeypatch.setenv("SMSQ_CALLBACK_SECRET", "fuzz-callback-secret")
    for name in ("KECCEL", "KINGSMS", "SMS1601"):  # pull mode takes no pushes
        monkeypatch.setenv(f"SMSQ_{name}_DLR_MODE", "push")


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[list[str]]:
    """A fresh store; every published id lands in the yielded list."""
    _clear_env(monkeypatch, tmp_path)
    reload_settings()
    db.reset_engine()
    calls: list[str] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: calls.extend(ids)
    )
    yield calls
    monkeypatch.undo()
    reload_settings()
    db.reset_engine()


def snapshot() -> tuple[int, int, dict[str, str]]:
    """(messages, events, id -> status)."""
    with db.session() as s:
        statuses = {m.id: m.status for m in s.exec(select(Message))}
        events = s.exec(select(func.count()).select_from(MessageEvent)).one()
    return len(statuses), events, statuses


def load(ids: list[str]) -> list[Message]:
    with db.session() as s:
        return [s.get(Message, i) for i in ids]  # type: ignore[misc]


def check_outcome_of_send(
    published: list[str], before: tuple[int, int, dict[str, str]], run: Any, text: Any
) -> list[str] | None:
    """Run a producer call: ids or InvalidMessage; nothing stored when it raises."""
    sent_before = len(published)
    try:
        ids = run()
    except InvalidMessage as exc:
        event(f"InvalidMessage {exc.field.split('[')[0]}")
        assert exc.field and exc.rule
        rows, events, _ = snapshot()
        assert (rows, events) == before[:2], f"stored something for rejected input: {exc}"
        assert len(published) == sent_before
        return None
    assert isinstance(ids, list) and ids and all(isinstance(i, str) for i in ids)
    fresh = [i for i in ids if i not in before[2]]
    event("stored" if fresh else "idempotent replay")
    for row in load(fresh):
        assert row is not None
        assert row.to.isascii() and row.to.isdigit(), row.to
        assert row.text == text  # round-trips exactly
        assert row.status in (Status.QUEUED, Status.SCHEDULED)
        assert len(row.idempotency_key or "") <= 200  # the column's size (PostgreSQL checks)
    queued = {r.id for r in load(fresh) if r.status == Status.QUEUED}
    assert set(published[sent_before:]) == queued
    rows, _, _ = snapshot()
    assert rows == before[0] + len(set(fresh))
    return ids


def one(**kw: Any) -> dict[str, Any]:
    """An explicit send_sms example: a good message with `kw` changed."""
    base = {"to": "243851234567", "text": "hi", "provider": None, "sender": None}
    return {**base, "send_at": None, "key": None, "url": None, "flash": False, **kw}


@example(**one(to=HUGE_INT))
@example(**one(text="a\ud800b"))
@example(**one(send_at=FAR_FUTURE_WEST))
@example(**one(send_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))))
@example(**one(key="\ud800"))
@example(**one(url="http://a\ud800"))
@example(**one(to="٢٤٣٨٥١٢٣٤٥٦٧"))
@example(**one(to="+243 851 234 567", provider="kingsms", sender="KING SMS", key="k1", flash=True))
@fuzz(300)
@given(
    to=mostly(decorated, to_values, 2),
    text=mostly(st.sampled_from(["Hello", "Ça va? ✓", "😀"]) | st.text(min_size=1), texts, 3),
    provider=mostly(st.none() | st.sampled_from(["keccel", "smsclub"]), providers),
    sender=mostly(st.none() | st.sampled_from(["SMSQ", "12345"]), senders),
    send_at=mostly(st.none() | future, send_ats),
    key=mostly(st.none() | st.uuids().map(str), keys),
    url=mostly(st.none(), urls),
    flash=mostly(st.just(False), flashes),
)
def test_send_sms_returns_an_id_or_raises_invalid_message(
    published: list[str],
    to: Any,
    text: Any,
    provider: Any,
    sender: Any,
    send_at: Any,
    key: Any,
    url: Any,
    flash: Any,
) -> None:
    before = snapshot()
    check_outcome_of_send(
        published,
        before,
        lambda: [send_sms(to, text, provider, sender, key, send_at, url, flash)],
        text,
    )


def bulk(**kw: Any) -> dict[str, Any]:
    base = {"to": ["243851234567"], "text": "hi", "key": None, "send_at": None}
    return {**base, "provider": None, "flash": False, **kw}


@example(**bulk(to=["243851234567"], key="k" * 200))
@example(**bulk(to=["243851234567", HUGE_INT]))
@example(**bulk(to=["243851234567", "243851234568"], text="hi\udcff"))
@example(**bulk(to="243851234567"))
@example(**bulk(to=b"243851234567"))
@example(**bulk(to=[]))
@fuzz(150)
@given(
    to=st.lists(to_values, max_size=4)
    | st.lists(st.sampled_from(VALID_NUMBERS), min_size=1, max_size=5)
    | st.lists(decorated, min_size=1, max_size=3)
    | st.tuples(decorated, decorated)
    | st.iterables(decorated, max_size=3)
    | bad_values
    | any_text,
    text=mostly(st.sampled_from(["Hello", "😀"]) | st.text(min_size=1), texts, 3),
    key=mostly(st.none() | st.uuids().map(str), keys),
    send_at=mostly(st.none() | future, send_ats),
    provider=mostly(st.none() | st.just("smsclub"), providers),
    flash=mostly(st.just(False), flashes),
)
def test_send_bulk_returns_ids_or_raises_invalid_message(
    published: list[str], to: Any, text: Any, key: Any, send_at: Any, provider: Any, flash: Any
) -> None:
    before = snapshot()
    ids = check_outcome_of_send(
        published,
        before,
        lambda: send_bulk(to, text, provider, None, key, send_at, None, flash),
        text,
    )
    if ids is not None and isinstance(to, list):
        assert len(ids) == len(to)


# -- 2. the CLI --------------------------------------------------------------------
# Commands that start servers, exec Flower or call real gateways: never run here.
NOT_IN_PROCESS = ("dev", "demo", "sandbox", "flower", "balance", "senders", "report")


@pytest.fixture
def cli(published: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from worker.ops import cli as cli_module

    def refuse(args: Any) -> int:
        raise AssertionError(f"the fuzzer reached {args.command!r}")

    for name in NOT_IN_PROCESS:
        monkeypatch.setitem(cli_module._COMMANDS, name, refuse)
    return published


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from worker.ops.cli import main

    before = snapshot()
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    assert code in (0, 2), (code, err)  # 1 is for gateway and broker errors only
    event(f"exit {code}")
    if code != 0:
        assert err.startswith("smsq: error: ") or err.startswith("usage:"), err
        rows, events, _ = snapshot()
        assert (rows, events) == before[:2], f"stored something, exit {code}"
    return code, out


cli_text = st.text(st.characters() | ODD_DIGITS | SURROGATES, max_size=40).filter(
    lambda v: "\x00" not in v  # an OS argv cannot hold NUL
)


@example(to=["243851234567"], text="hi", provider=None, sender=None, at=FAR_FUTURE_WEST)
@example(to=["243851234567"], text="hi\udcff", provider=None, sender=None, at=None)
@example(to=["243851234567", "243851234568"], text="hi", provider="smsclub", sender=None, at=None)
@fuzz(150)
@given(
    to=st.lists(decorated.filter(lambda v: "\x00" not in v) | cli_text, min_size=1, max_size=3),
    text=cli_text | st.sampled_from(["Hello", "--text", "-"]),
    provider=st.none() | st.sampled_from(provider_names()) | cli_text,
    sender=st.none() | st.sampled_from(["SMSQ", "12345"]) | cli_text,
    at=st.none() | cli_text | st.sampled_from([FAR_FUTURE_WEST, "2099-01-01T00:00:00Z", "x"]),
)
def test_cli_send_exits_0_or_2_and_stores_nothing_on_error(
    cli: list[str],
    capsys: pytest.CaptureFixture[str],
    to: list[str],
    text: str,
    provider: str | None,
    sender: str | None,
    at: str | None,
) -> None:
    argv = ["send", "--text", text]
    for number in to:
        argv += ["--to", number]
    for flag, value in (("--provider", provider), ("--sender", sender), ("--at", at)):
        if value is not None:
            argv += [flag, value]
    before = snapshot()[0]
    code, out = run_cli(argv, capsys)
    if code == 0:
        ids = out.split()
        assert len(ids) == len(to) and snapshot()[0] == before + len(ids)
        for row in load(ids):
            assert row.text == text and row.to.isdigit()


WORDS = st.sampled_from(
    [
        "send", "status", "cancel", "alerts", "callback-url", "migrate", "--to", "--text",
        "--json", "--limit", "--provider", "--at", "--flash", "-h", "--help", "--", "-",
        "keccel", "kingsms", "243851234567", "0", "-1", "1" * 5000, "=",
    ]
)  # fmt: skip


@example(argv=["alerts", "--limit", "1" * 5000])
@example(argv=["status", "\udcff"])
@example(argv=["cancel", "\ud800"])
@example(argv=["status", " "])
@example(argv=[])
@fuzz(150)
@given(argv=st.lists(WORDS | cli_text, max_size=6))
def test_cli_any_argv_exits_0_or_2_without_a_traceback(
    cli: list[str], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assume(not any(word in NOT_IN_PROCESS for word in argv))
    run_cli(argv, capsys)


# -- 3. delivery callbacks ---------------------------------------------------------
PUSH = tuple(n for n in provider_names() if limits_for(n).supports_push)
PIDS = ("4242", "4243", "587854667", "1234567")
RAW_STATUSES = (
    "DELIVERED", "FAILED", "DLV", "EXP", "ERD", "ACT", "NOT DELIVERED", "REJECTED", "BUFFERED",
    "delivered", "", "??",
)  # fmt: skip
CALLBACK_KEYS = (
    "messageID", "messageId", "messageid", "status", "smsid", "datum", "referentie",
    "ref", "part", "parts", "date", "to", "data", "result",
)  # fmt: skip


URL_CHARS = st.characters(
    codec="ascii", min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"
)


@pytest.fixture
def dlr_client(published: list[str]) -> Iterator[tuple[TestClient, list[str]]]:
    from worker.web import app

    ids = []
    with db.session() as s:
        for provider in PUSH:
            for pid in PIDS:
                for status in (Status.SENT, Status.SENDING, Status.DELIVERED):
                    row = Message(
                        to="243851234567",
                        text="hello",
                        provider=provider,
                        status=status.value,
                        provider_message_id=f"{pid}{'' if status == Status.SENT else status.value}",
                        segments=2 if pid == "587854667" else 1,
                    )
                    s.add(row)
                    ids.append(row.id)
        s.commit()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, ids


values = (
    st.sampled_from(PIDS)
    | st.sampled_from(RAW_STATUSES)
    | any_text.filter(lambda v: not any("\ud800" <= c <= "\udfff" for c in v))
)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | values
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.sampled_from(CALLBACK_KEYS) | st.text(max_size=5), kids, max_size=5)
    ),
    max_leaves=12,
)
pids = st.sampled_from(PIDS).flatmap(
    lambda pid: st.sampled_from([pid, pid + "sending", pid + "delivered"])
)
report_params = st.fixed_dictionaries(
    {
        "messageID": pids,
        "status": st.sampled_from(RAW_STATUSES),
    },
    optional={
        "smsid": pids,
        "messageId": pids,
        "datum": st.sampled_from(["01/02/2012 10:23:10", "01/01/0001 00:00:00", "x"]),
        "part": st.sampled_from(["1", "2", "3", "0", "-1", "x"]),
        "parts": st.sampled_from(["2", "3", "x"]),
        "referentie": st.text(max_size=5),
    },
)
callback_bodies = (
    st.binary(max_size=200)
    | json_value.map(lambda v: json.dumps(v).encode())
    | json_value.map(lambda v: json.dumps(v).encode()[:-3])  # truncated
    | st.dictionaries(st.sampled_from(CALLBACK_KEYS), values, max_size=5).map(
        lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "replace")
    )
    | st.just(DEEP_JSON)
    | st.just(b'{"messageId": ' + b"1" * 5000 + b', "status": "DLV"}')
)
content_types = st.none() | st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=hex",
        "multipart/form-data",
        "multipart/form-data; boundary=zz",
        "text/plain; charset=utf-16",
        "form",
        "application/json; charset=rot13",
    ]
)


def push(**kw: Any) -> dict[str, Any]:
    """An explicit callback example with the right token."""
    base = {"provider": "kingsms", "token": "right", "method": "POST", "params": {}}
    return {**base, "body": b"", "ctype": None, **kw}


@example(**push(provider="kingsms", body=DEEP_JSON, ctype="application/json"))
@example(**push(provider="kingsms", body=b'{"messageId": ' + b"1" * 5000 + b', "status": "DLV"}'))
@example(
    **push(provider="kingsms", body=b"--zz\r\nbroken", ctype="multipart/form-data; boundary=zz")
)
@example(
    **push(provider="keccel", method="GET", params={"messageID": "4242", "status": "DELIVERED"})
)
@example(
    **push(
        provider="sms1601",
        method="GET",
        params={"smsid": "1234567", "status": "NOT DELIVERED", "datum": "01/01/0001 00:00:00"},
    )
)
@fuzz(200)
@given(
    provider=mostly(
        st.sampled_from(PUSH),
        st.sampled_from([*provider_names(), "KECCEL", "nope", "..", "%2e%2e"])
        | st.text(URL_CHARS, min_size=1, max_size=10),
        3,
    ),
    token=mostly(
        st.just("right"),
        st.sampled_from(["right-other", "", "x" * 40]) | st.text(URL_CHARS, max_size=45),
        3,
    ),
    method=st.sampled_from(["GET", "POST"]),
    params=mostly(
        report_params,
        st.dictionaries(st.sampled_from(CALLBACK_KEYS) | st.text(max_size=6), values, max_size=6),
        2,
    ),
    body=st.just(b"") | report_params.map(lambda d: json.dumps(d).encode()) | callback_bodies,
    ctype=content_types,
)
def test_callbacks_never_5xx_and_only_move_messages_forward(
    dlr_client: tuple[TestClient, list[str]],
    provider: str,
    token: str,
    method: str,
    params: dict[str, str],
    body: bytes,
    ctype: str | None,
) -> None:
    client, _ = dlr_client
    if token == "right" and provider in provider_names():
        token = callback_token(provider)
    elif token == "right-other":
        token = callback_token("keccel" if provider != "keccel" else "kingsms")
    genuine = provider in PUSH and token == callback_token(provider)
    assume(token not in (".", ".."))  # the client would normalise the path
    rows, events, statuses = snapshot()
    headers = {"content-type": ctype} if ctype else {}
    answer = client.request(
        method,
        f"/dlr/{provider}/{token}",
        params=params,
        content=body if method == "POST" else None,
        headers=headers,
    )
    assert answer.status_code < 500, answer.text
    event(f"HTTP {answer.status_code} {'genuine' if genuine else 'refused'}")
    after_rows, after_events, after = snapshot()
    assert after_rows == rows
    if not genuine or answer.status_code != 200:
        assert answer.status_code in (400, 403, 404, 405, 422), answer.status_code
        assert (after_events, after) == (events, statuses), "changed by a refused callback"
        if genuine:
            assert answer.status_code == 400
        return
    for mid, old in statuses.items():
        new = after[mid]
        assert new == old or can_move(old, new), f"{old} -> {new}"


# -- 4. HTTP enqueue API -----------------------------------------------------------
API_KEY = "fuzz-api-key-1"
FIELDS = ("to", "text", "provider", "sender", "idempotency_key", "send_at", "callback_url", "flash")
api_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | numbers.filter(lambda v: not any("\ud800" <= c <= "\udfff" for c in v))
    | st.sampled_from(VALID_NUMBERS)
    | st.lists(st.sampled_from(VALID_NUMBERS) | st.integers() | st.none(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | any_text
)
good_api_bodies = st.fixed_dictionaries(
    {
        "to": mostly(st.sampled_from(VALID_NUMBERS), st.lists(decorated, min_size=1, max_size=3)),
        "text": st.sampled_from(["Hello", "Ça va? ✓", "😀"]) | st.text(min_size=1, max_size=50),
    },
    optional={
        "provider": st.sampled_from(["keccel", "smsclub", None]),
        "idempotency_key": st.uuids().map(str),
        "send_at": future.map(lambda d: d.isoformat()),
        "callback_url": st.just("https://app.example/cb"),
        "flash": st.just(False),
    },
)
api_bodies = (
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), api_values, max_size=8)
    | st.fixed_dictionaries(
        {
            "to": st.sampled_from(VALID_NUMBERS) | st.lists(decorated, max_size=3),
            "text": any_text | st.sampled_from(["Hello", "😀", "a" * 2000]) | st.none(),
        },
        optional={f: api_values for f in FIELDS[2:]},
    )
    | json_value
)


def dumps(value: Any) -> bytes:
    # surrogatepass keeps lone surrogates as JSON escapes ("\ud800"), valid JSON text
    return json.dumps(value).encode("utf-8", "surrogatepass")


@pytest.fixture
def api_client(published: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    from worker.web import app

    monkeypatch.setenv("SMSQ_API_KEYS", f"other, {API_KEY}")
    monkeypatch.setenv("SMSQ_API_KEY_LIMIT", "off")  # no broker: see test_web_limits
    monkeypatch.setenv("SMSQ_RECIPIENT_LIMIT", "off")
    reload_settings()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def post(payload: Any) -> dict[str, Any]:
    return {"payload": payload, "auth": "right", "ctype": "application/json", "raw": None}


@example(**post({"to": "243851234567", "text": "a\ud800b"}))
@example(**post({"to": "243851234567", "text": "hi", "send_at": FAR_FUTURE_WEST}))
@example(**post({"to": ["243851234567"], "text": "hi", "idempotency_key": "k" * 200}))
@example(**post({"to": "243851234567", "text": "hi", "callback_url": "https://x/\udfff"}))
@example(payload=None, auth="right", ctype="application/json", raw=DEEP_JSON)
@example(payload=None, auth="right", ctype=None, raw=b"\x80")
@example(payload=None, auth="right", ctype=None, raw=b'{"to": ' + b"1" * 5000 + b"}")
@fuzz(200)
@given(
    payload=mostly(good_api_bodies, api_bodies, 2),
    auth=mostly(
        st.just("right"),
        st.sampled_from(["wrong", "none", "bare"])
        | st.text(st.characters(codec="ascii", min_codepoint=32), max_size=20),
        3,
    ),
    ctype=mostly(
        st.just("application/json"),
        st.sampled_from(["text/plain", "application/x-www-form-urlencoded"]) | st.none(),
        2,
    ),
    raw=mostly(st.none(), st.binary(max_size=50) | st.just(DEEP_JSON), 4),
)
def test_http_api_never_5xx_and_stores_nothing_on_4xx(
    api_client: TestClient, published: list[str], payload: Any, auth: str, ctype: Any, raw: Any
) -> None:
    headers = {"content-type": ctype} if ctype else {}
    if auth == "right":
        headers["Authorization"] = f"Bearer {API_KEY}"
    elif auth == "bare":
        headers["Authorization"] = API_KEY
    elif auth != "none":
        headers["Authorization"] = auth
    content = raw if raw is not None else dumps(payload)
    before = snapshot()
    sent_before = len(published)
    answer = api_client.post("/v1/messages", content=content, headers=headers)
    # 400: FastAPI's answer to a body its JSON parser gives up on (deep nesting)
    allowed = (201, 401, 422) if raw is None else (201, 400, 401, 422)
    assert answer.status_code in allowed, (answer.status_code, answer.text)
    event(f"HTTP {answer.status_code}")
    if answer.status_code != 201:
        assert snapshot()[:2] == before[:2], "stored something for a refused request"
        assert len(published) == sent_before
        return
    assert auth == "right"
    data = answer.json()
    ids = data["ids"] if "ids" in data else [data["id"]]
    assert isinstance(payload, dict)
    for row in load([i for i in ids if i not in before[2]]):
        assert row.to.isascii() and row.to.isdigit()
        assert row.text == payload["text"]


# -- 5. adapters' response parsing -------------------------------------------------
# test_adapter_contract fuzzes status codes and JSON/text/bytes bodies (40 examples).
# Here: declared charsets no codec can decode with, random headers, Retry-After
# garbage, truncated and deeply nested JSON, 5000-digit numbers, HTML, bodies that
# quote the credentials, in other encodings.
CHARSETS = (
    "utf-8", "latin-1", "utf-16", "utf-32", "utf-7", "cp1252", "shift_jis", "ascii",
    "hex", "rot13", "base64", "zlib", "idna", "punycode", "uu", "nope", "", "\"utf-8\"",
)  # fmt: skip
HTML = b"<!DOCTYPE html><html><head><title>502</title></head><body>oops</body></html>"


def documented_bodies() -> st.SearchStrategy[bytes]:
    """Every adapter's own good answers, whole, truncated, or re-encoded."""
    requests = {
        "keccel": httpx.Request("POST", "https://x", content=b"{}"),
        "smsclub": httpx.Request("POST", "https://x", content=b'{"phone": ["380989361131"]}'),
        "kingsms": httpx.Request("POST", "https://x", content=b"to=22890443679"),
        "sms1601": httpx.Request("POST", "https://x", content=b"naar=31612345678"),
    }
    good = [
        answer(requests[spec.name], 0).content
        for spec in SPECS.values()
        for answer in (spec.send_ok, spec.status_ok, spec.balance_ok, spec.auth_failure_echo)
    ]
    whole = st.sampled_from(good)
    return (
        whole
        | st.builds(lambda b, n: b[:n], whole, st.integers(min_value=0, max_value=60))
        | st.builds(
            lambda b, enc: b.decode().encode(enc, "replace"),
            whole,
            st.sampled_from(["utf-16", "utf-32", "cp1252", "utf-7"]),
        )
    )


ALL_WORDS = tuple(sorted({w for spec in SPECS.values() for w in spec.fuzz_words}))
ALL_KEYS = tuple(sorted({k for spec in SPECS.values() for k in spec.fuzz_keys}))
ALL_SECRETS = tuple(sorted({x for spec in SPECS.values() for x in spec.secrets}))


def secret_bodies() -> st.SearchStrategy[bytes]:
    """Answers that quote a credential back, as text or JSON, in several encodings."""
    words = st.sampled_from(ALL_WORDS)
    secret = st.sampled_from(ALL_SECRETS)
    line = st.builds(lambda w, s, tail: f"{w} {s} {tail}", words, secret, st.text(max_size=10))
    as_json = st.builds(
        lambda k, w, s: json.dumps({k: f"{w} {s}", "error": s, "message": s, "status": w}),
        st.sampled_from(ALL_KEYS),
        words,
        secret,
    )
    return st.builds(
        lambda t, enc: t.encode(enc), line | as_json, st.sampled_from(["utf-8", "utf-16"])
    )


def fuzz_responses() -> st.SearchStrategy[httpx.Response]:
    codes = st.sampled_from((200, 200, 200, 201, 202, 204, 400, 401, 403, 404, 422, 429, 503))
    codes = codes | st.integers(min_value=100, max_value=599)
    bodies = (
        documented_bodies()
        | secret_bodies()
        | st.binary(max_size=200)
        | st.just(HTML)
        | st.just(DEEP_JSON)
        | st.just(b'{"balance": ' + b"9" * 5000 + b"}")
        | st.just(b"9" * 5000)
        | json_value.map(lambda v: json.dumps(v).encode())
    )
    ctypes = st.none() | st.builds(
        lambda kind, cs: f"{kind}; charset={cs}",
        st.sampled_from(["application/json", "text/plain", "text/html"]),
        st.sampled_from(CHARSETS),
    )
    retry_after = st.none() | st.sampled_from(
        ["1e400", "-1", "nan", "inf", "0x10", "99999999999", "Wed, 21 Oct 2015 07:28:00 GMT",
         "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 +1400", "\u00e9", ""]
    ) | st.text(st.characters(codec="latin-1"), max_size=20)  # fmt: skip
    extra = st.dictionaries(
        st.sampled_from(["X-Error", "Location", "Set-Cookie", "X-Api-Key"]),
        st.text(st.characters(codec="ascii", min_codepoint=32), max_size=20),
        max_size=2,
    )

    def make(
        code: int, body: bytes, ctype: str | None, after: str | None, more: dict[str, str]
    ) -> httpx.Response:
        headers: dict[str, str | bytes] = dict(more)
        if ctype is not None:
            headers["Content-Type"] = ctype
        if after is not None:
            headers["Retry-After"] = after.encode("latin-1")  # any byte a server may send
        return httpx.Response(code, content=body, headers=headers)

    return st.builds(make, codes, bodies, ctypes, retry_after, extra)


def _response(code: int, body: bytes, ctype: str | None = None) -> httpx.Response:
    return httpx.Response(code, content=body, headers={"Content-Type": ctype} if ctype else {})


def outcome_or_provider_error(spec: Spec, op: str, response: httpx.Response) -> None:
    adapter = build(spec, lambda request, n: response)
    try:
        outcome = call(spec, adapter, op)
    except ProviderError as exc:
        assert_no_secret(spec, str(exc))
        assert_no_secret(spec, repr(exc.code))
        return
    check_outcome(spec, op, outcome)


@pytest.mark.parametrize(("name", "op"), [(n, o) for n in NAMES for o in OPS])
@example(response=_response(200, DEEP_JSON))
@example(response=_response(200, b'{"status": "SENT"}', "application/json; charset=hex"))
@example(response=_response(200, b"OK 1234567", "text/plain; charset=rot13"))
@example(response=_response(400, b"refused", "text/plain; charset=idna"))
@example(response=_response(404, DEEP_JSON))
@fuzz(80)
@given(response=fuzz_responses())
def test_adapter_parsing_gives_a_result_or_a_provider_error(
    name: str, op: str, response: httpx.Response
) -> None:
    outcome_or_provider_error(SPECS[name], op, response)


callback_params = st.dictionaries(
    st.sampled_from((*CALLBACK_KEYS, *ALL_KEYS)) | st.text(max_size=6),
    values | st.sampled_from(ALL_WORDS) | st.sampled_from(ALL_SECRETS),
    max_size=6,
)


@pytest.mark.parametrize("name", NAMES)
@example(params={}, body=DEEP_JSON)
@example(params={}, body=b'{"messageId": ' + b"1" * 5000 + b', "status": "DLV"}')
@example(params={"smsid": "1", "status": "DELIVERED", "datum": "01/01/0001 00:00:00"}, body=b"")
@example(params={"messageID": "1", "status": "DLV", "part": "9" * 5000}, body=b"")
@fuzz(150)
@given(params=callback_params, body=callback_bodies)
def test_parse_callback_gives_reports_or_a_provider_error(
    name: str, params: dict[str, str], body: bytes
) -> None:
    spec = SPECS[name]
    adapter = adapter_class(name)(**spec.kwargs, client=httpx.Client(transport=_no_network()))
    try:
        reports = adapter.parse_callback(params, body)
    except ProviderError as exc:
        assert_no_secret(spec, str(exc))
        return
    assert isinstance(reports, list) and reports
    for report in reports:
        assert isinstance(report, StatusReport)
        assert isinstance(report.provider_message_id, str) and report.provider_message_id
        assert report.status is None or isinstance(report.status, Status)
        assert report.part is None or report.part >= 1


def _no_network() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("parse_callback must not call the gateway")

    return httpx.MockTransport(handler)
