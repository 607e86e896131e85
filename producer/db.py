"""Engine and sessions for the message store; the schema comes from alembic.

SQLite (the default, under SMSQ_DATA_DIR) runs in WAL mode with a busy
timeout so web, worker threads, beat and producer can share it; set
SMSQ_DATABASE_URL for PostgreSQL.
"""

from __future__ import annotations

import fcntl
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Session, create_engine

from producer.settings import get_settings

_engine: Engine | None = None
_engine_url: str | None = None
_lock = threading.Lock()
MIGRATIONS = Path(__file__).with_name("migrations")
PG_LOCK = 0x736D7371  # "smsq": the advisory lock key of schema migrations


def database_url() -> str:
    settings = get_settings()
    if settings.database_url:
        return settings.database_url
    return _sqlite_url(str(settings.data_dir))


@functools.lru_cache(maxsize=16)
def _sqlite_url(data_dir: str) -> str:
    """The file under SMSQ_DATA_DIR, the directory made once: every session asks for
    the URL (a path resolved and a mkdir were two system calls per session)."""
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'smsq.db'}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# libpq settings for a network that fails silently (a partition, a lost host): a
# connection not made, or a request not acknowledged, within these limits fails, so
# the store is tried again (worker/store/retry.py) and a multi-host URL's next host
# is tried, instead of waiting out TCP's own limits (about two minutes to connect,
# fifteen for a request). Any of them given in SMSQ_DATABASE_URL wins.
PG_NETWORK_LIMITS = {
    "connect_timeout": 10,  # seconds, per host
    "tcp_user_timeout": 30000,  # ms for sent data to be acknowledged (libpq >= 12)
    "keepalives": 1,
    "keepalives_idle": 30,  # an answer awaited this long: probe the connection
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


# A transaction left open by a client that vanished mid-way (a partitioned host: its
# UPDATE ran, the answer and the COMMIT never crossed) keeps its row locks until the
# server drops the session, and blocks whoever touches those rows (beat settling the
# host's claims). smsq never waits on anything but the store inside a transaction, so
# one idle this long is one whose client is gone: the server ends it, its locks go.
PG_IDLE_IN_TRANSACTION = "30s"


def _postgres_session(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute(f"SET idle_in_transaction_session_timeout = '{PG_IDLE_IN_TRANSACTION}'")
    cursor.close()
    dbapi_connection.commit()


def postgres_connect_args(url: str) -> dict[str, object]:
    """PG_NETWORK_LIMITS, less those the URL sets itself."""
    given = make_url(url).query
    return {key: value for key, value in PG_NETWORK_LIMITS.items() if key not in given}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # No pre-ping: a file's connection does not go stale, and the ping was one more
        # statement on every checkout (three or more per send_sms).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        connect_args=postgres_connect_args(url),
    )
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgres_session)
    return engine


def get_engine() -> Engine:
    """The process's engine, created (and the schema brought up to date) on first use."""
    global _engine, _engine_url
    url = database_url()
    with _lock:
        if _engine is None or _engine_url != url:
            engine = make_engine(url)
            migrate(engine, url)
            _engine, _engine_url = engine, url
        return _engine


def reset_engine() -> None:
    global _engine, _engine_url
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine, _engine_url = None, None


def migrate(engine: Engine, url: str) -> None:
    """`alembic upgrade head`, serialised across processes: a file lock on this host,
    and on PostgreSQL a transaction-level advisory lock across hosts too, so every
    process may bring the schema up to date at start without racing another."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    lock_dir = Path(get_settings().data_dir).resolve()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / ".migrate.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def error_name(exc: BaseException) -> str:
    """The driver's error class (psycopg's, sqlite3's) behind a SQLAlchemy error: what
    a message may say of a store error without its SQL, parameters or URL."""
    return type(getattr(exc, "orig", None) or exc).__name__


def store_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the store could not be used just now (server down or
    restarting, connection dropped, SQLite locked past its busy timeout, a deadlock
    or serialization failure), so the same work may succeed if tried again, as
    opposed to a bug or a constraint."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@contextmanager
def reachable(what: str) -> Iterator[None]:
    """Turn a store outage inside the block into `StoreUnavailable` for the caller
    (the producer's edge), naming `what` failed and the driver's error class only."""
    from producer.errors import StoreUnavailable

    try:
        yield
    except Exception as exc:
        if not store_unavailable(exc):
            raise
        raise StoreUnavailable(
            f"message store unavailable ({error_name(exc)}): {what}; try again"
        ) from exc


@contextmanager
def session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as s:
        yield s
