"""The alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import producer.models  # noqa: F401  (registers every table)
from producer import db


def test_migrations_match_the_models(isolated) -> None:  # type: ignore[no-untyped-def]
    engine = db.get_engine()  # a fresh SQLite file, upgraded to head
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert differences == []


def test_the_store_is_at_the_newest_revision(isolated) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    engine = db.get_engine()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    migrations = Path(db.__file__).parent / "migrations"
    config = Config()
    config.set_main_option("script_location", str(migrations))
    assert current == ScriptDirectory.from_config(config).get_current_head()


def test_0007_gives_old_rows_no_owner_and_keys_stay_unique_per_owner(isolated) -> None:  # type: ignore[no-untyped-def]
    """A store made before owners: its rows get owner '' and their idempotency keys
    still refuse a copy, while another owner may use the same key."""
    import pytest
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    engine = db.make_engine(db.database_url())
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    insert = (
        'INSERT INTO messages (id, idempotency_key, "to", text, provider, fallbacks, encoding,'
        " segments, flash, status, attempts, created_at, updated_at, poll_count, poll_failures"
        "{extra}) VALUES (:id, 'k', '243851234567', 't', 'keccel', '', 'gsm7', 1, 0, 'queued', 0,"
        " '2026-01-01 00:00:00', '2026-01-01 00:00:00', 0, 0{values})"
    )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0006")
        conn.execute(text(insert.format(extra="", values="")), {"id": "old"})
        command.upgrade(config, "head")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT owner FROM messages")).scalar_one() == ""
        with pytest.raises(IntegrityError):
            conn.execute(text(insert.format(extra="", values="")), {"id": "copy"})
        conn.rollback()
        conn.execute(text(insert.format(extra=", owner", values=", 'shop'")), {"id": "shop"})
        conn.commit()
    engine.dispose()
