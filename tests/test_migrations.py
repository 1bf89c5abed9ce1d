"""The Alembic migrations build exactly the schema the ORM declares."""

import datetime as dt
import json
import sqlite3
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from scoregate.config import Settings
from scoregate.errors import TamperedError
from scoregate.governance.audit import GENESIS, canonical_event, event_hash, iso_time, iter_events, verify
from scoregate.registry import Registry
from scoregate.registry.database import HEAD_REVISION, MIGRATIONS, make_engine, migrate
from scoregate.registry.tables import AliasRow, AuditEventRow, Base, ModelRow, VersionRow, WebhookSubscriptionRow


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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


def _release_one_registry(engine: Engine) -> None:
    """A registry as revision 0004 left it: rows written then, one event of the chain's old form."""
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as connection:
        model = connection.execute(
            insert(ModelRow.__table__)
            .values(name="credit-risk", risk_tier="low", created_at=now, updated_at=now)
            .returning(ModelRow.__table__.c.id)
        ).scalar_one()
        version = connection.execute(
            insert(VersionRow.__table__)
            .values(
                model_id=model,
                version=1,
                flavor="sklearn",
                status="registered",
                created_by="ann",
                created_at=now,
                artifact_digest="a" * 64,
                artifact_size=1,
                artifact_kind="file",
                artifact_name="model.joblib",
                input_schema={"features": [{"name": "income", "type": "float"}]},
                output_schema=[],
                metrics={"auc": 0.91},
                params={},
                latency_budget_ms=300.0,
                environment={"python": "3.11"},
            )
            .returning(VersionRow.__table__.c.id)
        ).scalar_one()
        connection.execute(
            insert(AliasRow.__table__).values(model_id=model, alias="production", version_id=version, updated_at=now)
        )
        connection.execute(
            insert(WebhookSubscriptionRow.__table__).values(
                url="https://hooks.example/x",
                secret="a-webhook-secret-123",
                actions=["*"],
                active=True,
                created_by="ann",
                created_at=now,
            )
        )
        line = canonical_event(1, iso_time(now), "ann", "register", "credit-risk@1", None, None, None, None, GENESIS)
        connection.execute(
            insert(AuditEventRow.__table__).values(
                seq=1,
                time=now,
                actor="ann",
                action="register",
                subject="credit-risk@1",
                prev_hash=GENESIS,
                hash=event_hash(line),
            )
        )
        connection.execute(text("UPDATE audit_head SET last_seq = 1, last_hash = :h"), {"h": event_hash(line)})


def test_an_existing_registry_is_covered_from_a_baseline_event(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
    _release_one_registry(engine)
    migrate(engine)
    with Session(engine) as session:
        log = list(iter_events(session))
    assert [(e.seq, e.actor, e.action) for e in log] == [(1, "ann", "register"), (2, "scoregate", "audit.baseline")]
    counts = {name: count for name, count in log[1].after["rows"].items() if count}
    assert counts == {"models": 1, "model_versions": 1, "aliases": 1, "webhook_subscriptions": 1}
    assert [entry[0] for entry in log[1].state] == ["aliases", "model_versions", "models", "webhook_subscriptions"]
    assert "a-webhook-secret-123" not in json.dumps(log[1].state)
    result = verify(engine)
    assert result.ok and result.checked == 2 and result.rows == 4, result
    registry = Registry(Settings(home=tmp_path / "home", database_url=database_url))
    assert registry.resolve("credit-risk@production").version == 1
    with engine.begin() as connection:
        connection.execute(text("UPDATE models SET risk_tier = 'high'"))
    with pytest.raises(
        TamperedError, match=r'models row credit-risk: risk_tier is "high", the audit log \(event 2\) says "low"'
    ):
        registry.resolve("credit-risk@production")
    engine.dispose()


def test_a_new_registry_starts_without_a_baseline(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(engine)
    assert verify(engine).checked == 0
    engine.dispose()
