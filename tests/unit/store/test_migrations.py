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
