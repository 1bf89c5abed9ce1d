"""The Alembic migrations build exactly the schema the ORM declares."""

import sqlite3
import threading
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from scoregate.config import Settings
from scoregate.registry import Registry
from scoregate.registry.database import HEAD_REVISION, MIGRATIONS, make_engine
from scoregate.registry.tables import Base


def _check(settings: Settings) -> None:
    registry = Registry(settings)
    with registry.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    _check(Settings(home=tmp_path))


def test_migrations_match_the_models_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    _check(Settings(home=tmp_path, database_url=postgres_url))


def test_head_constant_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_new_sqlite_file_opens_while_another_process_writes_to_it(tmp_path: Path) -> None:
    """Switching to WAL fails at once, without SQLite's busy timeout, while another connection
    holds the write lock of a file still in rollback mode: two processes opening a new
    registry at once hit this (CI did, 1 run in 40). The switch is retried until it passes."""
    path = tmp_path / "registry.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE first_writer (x)")
    release = threading.Timer(0.3, other.execute, args=("COMMIT",))
    release.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("SELECT count(*) FROM first_writer")).scalar() == 0
    finally:
        release.join()
        engine.dispose()
        other.close()
