"""The Alembic migrations build exactly the schema the ORM declares."""

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scoregate.config import Settings
from scoregate.registry import Registry
from scoregate.registry.database import HEAD_REVISION, MIGRATIONS
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
