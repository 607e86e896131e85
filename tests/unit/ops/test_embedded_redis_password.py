"""The embedded Redis has a password of its own (issue 15, point 8): drawn per fresh
start, kept in files only this user reads, never on the server's command line, and
redacted from logs even when no SMSQ_BROKER_URL names it. A real redis-server."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from kombu import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from producer.embedded_redis import (
    CONFIG_FILE,
    PASSWORD_FILE,
    ensure_embedded_redis,
    password_of,
    running_url,
    stop_embedded_redis,
)
from tests.unit.conftest import isolate, restore

ONCE = Retry(NoBackoff(), 0)  # a refusal is final: no need for redis-py's retries


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    url = ensure_embedded_redis(tmp_path)
    yield tmp_path, url
    stop_embedded_redis(tmp_path)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def test_the_url_carries_a_random_password_kept_private(embedded) -> None:  # type: ignore[no-untyped-def]
    data_dir, url = embedded
    password = urlsplit(url).password
    assert password and len(password) >= 32 and password == password_of(data_dir)
    for name in (PASSWORD_FILE, CONFIG_FILE):
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert redis.Redis.from_url(url).ping()
    assert running_url(data_dir) == url


def test_a_client_without_the_password_is_refused(embedded) -> None:  # type: ignore[no-untyped-def]
    _, url = embedded
    for password in (None, "wrong-password"):
        client = redis.Redis(host="127.0.0.1", port=port_of(url), password=password, retry=ONCE)
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()
    bare = redis.Redis(host="127.0.0.1", port=port_of(url), retry=ONCE)
    with pytest.raises(redis.AuthenticationError):
        bare.lpush("send", "a task")  # no write either
    bare.close()


def test_the_password_is_not_on_the_servers_command_line(embedded) -> None:  # type: ignore[no-untyped-def]
    data_dir, url = embedded
    pid = int((data_dir / "redis.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    password = urlsplit(url).password
    assert password and password not in cmdline
    assert password not in (data_dir / "redis.log").read_text(errors="replace")


def test_a_restart_on_its_port_keeps_the_password_a_fresh_start_draws_one(embedded) -> None:  # type: ignore[no-untyped-def]
    data_dir, url = embedded
    stop_embedded_redis(data_dir)
    again = ensure_embedded_redis(data_dir, port=port_of(url))  # the fault suite's restart
    assert again == url
    stop_embedded_redis(data_dir)
    fresh = ensure_embedded_redis(data_dir)
    assert urlsplit(fresh).password != urlsplit(url).password
    assert password_of(data_dir) == urlsplit(fresh).password


def test_the_password_is_redacted_without_a_broker_url(  # type: ignore[no-untyped-def]
    embedded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer with no SMSQ_BROKER_URL finds the embedded Redis itself: its
    password must still be a secret to the log filter."""
    from worker.ops.logs import RedactSecrets

    data_dir, url = embedded
    isolate(monkeypatch, data_dir)
    monkeypatch.delenv("SMSQ_BROKER_URL")
    try:
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "broker %s", (url,), None)
        RedactSecrets().filter(record)
        password = urlsplit(url).password
        assert password and password not in record.getMessage()
    finally:
        restore(monkeypatch)


def test_a_redis_url_password_no_setting_names_is_redacted_too() -> None:
    from worker.ops.logs import RedactSecrets

    redactor = RedactSecrets()
    line = "broker redis://:0123abcd-never-configured@127.0.0.1:6379/0 and rediss://u:p4ss@h:1/0"
    assert redactor.redact(line) == "broker redis://:***@127.0.0.1:6379/0 and rediss://u:***@h:1/0"


def test_celery_shows_the_broker_url_masked(embedded) -> None:  # type: ignore[no-untyped-def]
    """What the worker's banner and Flower's log print (kombu's as_uri)."""
    _, url = embedded
    shown = Connection(url).as_uri()
    password = urlsplit(url).password
    assert password and password not in shown and ":**@" in shown


def test_a_server_without_a_password_is_retired_and_its_data_kept(tmp_path: Path) -> None:
    """A data dir whose Redis an older smsq started without a password: the new start
    shuts it down (its AOF written) and serves the same data with a password."""
    import subprocess

    from producer.embedded_redis import free_port, redis_binary

    port = free_port()
    subprocess.run(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path),
         "--daemonize", "yes", "--pidfile", str(tmp_path / "redis.pid"),
         "--appendonly", "yes", "--appendfilename", "smsq.aof", "--save", ""],
        check=True, timeout=30,
    )  # fmt: skip
    old = redis.Redis(host="127.0.0.1", port=port, retry=ONCE)
    for _ in range(100):
        try:
            old.set("queued-task", "kept")
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    old_pid = int((tmp_path / "redis.pid").read_text())
    (tmp_path / "redis.port").write_text(str(port))
    try:
        url = ensure_embedded_redis(tmp_path)
        assert urlsplit(url).password
        assert not Path(f"/proc/{old_pid}").exists() or "zombie" in _state(old_pid)
        assert redis.Redis.from_url(url).get("queued-task") == b"kept"
    finally:
        stop_embedded_redis(tmp_path)
        with contextlib.suppress(redis.RedisError):
            old.shutdown(nosave=True)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"
