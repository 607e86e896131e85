"""The `smsq` command (worker.ops.cli.main): user mistakes are one stderr line and exit 2."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pytest
from sqlmodel import func, select

from producer import api as producer_api
from producer import db
from producer.models import Message
from producer.settings import reload_settings
from worker.ops.cli import main

DRC = "243851234567"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[list[str]]]:
    """A fresh SQLite store in tmp_path, two providers configured, publishing recorded."""
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("SMSQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SMSQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SMSQ_KECCEL_TOKEN", "x")
    monkeypatch.setenv("SMSQ_SMSCLUB_TOKEN", "y")
    monkeypatch.setenv("SMSQ_BROKER_URL", "redis://127.0.0.1:1/0")
    published: list[list[str]] = []
    monkeypatch.setattr(
        producer_api, "publish_send", lambda ids, countdown=None, **_: published.append(list(ids))
    )
    reload_settings()
    db.reset_engine()
    yield published
    monkeypatch.undo()
    reload_settings()
    db.reset_engine()


def stored() -> int:
    with db.session() as s:
        return s.exec(select(func.count()).select_from(Message)).one()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("smsq: error: ")
    return lines[0]


def test_send_bad_number(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--to", "24385ABC4567", "--text", "hi"])
    out, err = capsys.readouterr()
    assert code == 2
    assert one_error_line(err).startswith("smsq: error: to:")
    assert out == ""
    assert stored() == 0
    assert store == []


def test_send_bulk_bad_number_names_index(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--to", DRC, "--to", "nope", "--text", "hi"])
    _, err = capsys.readouterr()
    assert code == 2
    assert one_error_line(err).startswith("smsq: error: to[1]:")
    assert stored() == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        [],
        ["send", "--to", DRC],  # missing --text
        ["send", "--text", "hi"],  # missing --to
        ["send", "--to", DRC, "--text", "hi", "--provider", "twilio"],
        ["status"],
        ["callback-url", "twilio"],
        ["sandbox", "--port", "abc"],
    ],
)
def test_usage_errors_one_line_exit_2(
    store: list, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    one_error_line(err)
    assert out == ""
    assert stored() == 0


def test_send_invalid_text_and_sender(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "--to", DRC, "--text", "   "]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("smsq: error: text:")
    assert main(["send", "--to", DRC, "--text", "hi", "--sender", "ABCDEFGHIJKL"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("smsq: error: sender:")
    assert main(["send", "--to", DRC, "--text", "hi", "--flash"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("smsq: error: flash:")
    assert main(["send", "--to", DRC, "--text", "hi", "--at", "yesterday"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("smsq: error: send_at:")
    assert stored() == 0
    assert store == []


def test_status_unknown_id(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "0123456789abcdef"])
    out, err = capsys.readouterr()
    assert code == 2
    assert one_error_line(err).startswith("smsq: error: id:")
    assert out == ""


def test_send_prints_id_and_status_json(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--to", "+243 85 123 4567", "--text", "Hello"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    message_id = out.strip()
    assert out == message_id + "\n"
    assert len(message_id) == 32
    assert store == [[message_id]]
    assert stored() == 1

    code = main(["status", message_id, "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert data["id"] == message_id
    assert data["status"] == "queued"
    assert data["to"] == DRC
    assert data["provider"] == "keccel"
    assert data["encoding"] == "gsm7"
    assert data["segments"] == 1
    assert [e["new_status"] for e in data["events"]] == ["queued"]

    code = main(["status", message_id])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "queued" in out and message_id in out and "Hello" in out


def test_send_bulk_prints_one_id_per_line(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--to", DRC, "--to", "243991234567", "--text", "Hi"])
    out, _ = capsys.readouterr()
    assert code == 0
    ids = out.split()
    assert len(ids) == 2
    assert store == [[ids[0]], [ids[1]]]


def test_send_scheduled_not_published(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "--to", DRC, "--text", "Later", "--at", "2999-01-01T00:00:00Z"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert store == []
    assert main(["status", out.strip(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "scheduled"


def test_callback_url_without_public_url(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["callback-url", "keccel"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "SMSQ_PUBLIC_URL" in one_error_line(err)
    assert out == ""


@pytest.mark.parametrize("value", [None, "", "no-colon"])
def test_flower_refuses_to_start_without_basic_auth(monkeypatch, capsys, value) -> None:  # type: ignore[no-untyped-def]
    import worker.ops.cli as cli_module

    started: list[object] = []
    monkeypatch.setattr(cli_module.os, "execvpe", lambda *a: started.append(a))
    if value is None:
        monkeypatch.delenv("SMSQ_FLOWER_BASIC_AUTH", raising=False)
    else:
        monkeypatch.setenv("SMSQ_FLOWER_BASIC_AUTH", value)
    with pytest.raises(SystemExit) as refused:
        cli_module.main(["flower"])
    assert "SMSQ_FLOWER_BASIC_AUTH" in str(refused.value.code)
    assert started == []


def test_flower_gets_its_password_by_environment_not_argv(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import worker.ops.cli as cli_module

    started: list[tuple] = []  # type: ignore[type-arg]
    monkeypatch.setattr(cli_module.os, "execvpe", lambda *a: started.append(a))
    monkeypatch.setenv("SMSQ_FLOWER_BASIC_AUTH", "admin:s3cret-flower")
    monkeypatch.setenv("PORT", "5999")
    assert cli_module.main(["flower"]) == 0
    (_command, argv, env) = started[0]
    assert "--port=5999" in argv and "--address=0.0.0.0" in argv
    assert not any("s3cret-flower" in a for a in argv)
    assert env["FLOWER_BASIC_AUTH"] == "admin:s3cret-flower"


def test_suppress_add_list_remove(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    from producer import get_status, send_sms

    assert main(["suppress", "add", "+243 851 234 567", "--reason", "STOP"]) == 0
    assert main(["suppress", "list"]) == 0
    out = capsys.readouterr().out
    assert "suppressed 243851234567 (all)" in out and "243851234567" in out.splitlines()[1]
    assert get_status(send_sms("243851234567", "x")).status == "rejected"  # type: ignore[union-attr]
    assert main(["suppress", "remove", "243851234567"]) == 0
    assert main(["suppress", "remove", "243851234567"]) == 2
    assert "is not suppressed" in one_error_line(capsys.readouterr().err)


def test_suppress_bad_number_is_one_line(store: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suppress", "add", "12"]) == 2
    assert one_error_line(capsys.readouterr().err).startswith("smsq: error: number:")


def test_send_with_priority_and_ttl_shown_by_status(
    store: list, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["send", "--to", DRC, "--text", "code", "--priority", "high", "--ttl", "90"]) == 0
    mid = capsys.readouterr().out.strip()
    assert main(["status", mid]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^priority\s+high$", out, re.M) and re.search(r"^ttl\s+90$", out, re.M)
    assert main(["send", "--to", DRC, "--to", "243991234567", "--text", "sale"]) == 0
    first = capsys.readouterr().out.split()[0]
    assert main(["status", first, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["priority"] == "bulk"


@pytest.mark.parametrize(
    ("args", "field"), [(["--priority", "asap"], "priority"), (["--ttl", "-1"], "ttl")]
)
def test_send_bad_priority_or_ttl_is_one_line_and_stores_nothing(
    store: list, capsys: pytest.CaptureFixture[str], args: list[str], field: str
) -> None:
    assert main(["send", "--to", DRC, "--text", "x", *args]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"smsq: error: {field}:")
    assert stored() == 0 and store == []


def test_status_says_why_a_message_waits_for_quiet_hours(
    store: list, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSQ_QUIET_HOURS", "00:00-23:59")
    reload_settings()
    assert main(["send", "--to", DRC, "--to", "243991234567", "--text", "sale"]) == 0
    first = capsys.readouterr().out.split()[0]
    assert main(["status", first]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^status\s+scheduled$", out, re.M)
    assert re.search(r"^note\s+quiet hours: 00:00-23:59 at the recipient", out, re.M)
    assert store == []
    now = ["send", "--to", DRC, "--to", "243991234567", "--text", "now", "--no-quiet-hours"]
    assert main(now) == 0
    assert sorted(i for ids in store for i in ids) == sorted(capsys.readouterr().out.split())
