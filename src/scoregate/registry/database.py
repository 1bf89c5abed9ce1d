"""Engines for the metadata database, and migrations to the current schema on open.

SQLite is the embedded default. Its writers take the database lock at BEGIN
(``BEGIN IMMEDIATE``) so two processes registering at once queue up instead of
failing half-way; readers use WAL and never block. PostgreSQL needs nothing special
beyond a row lock, which the registry takes itself.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from scoregate.errors import ConfigurationError, StoreUnavailableError
from scoregate.files import open_private, private_dir

MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration. Checked against Alembic's script directory by the tests; kept
#: here so that opening an up-to-date database does not import Alembic (half a second).
HEAD_REVISION = "0009"
#: Execution option that makes a SQLite transaction take the write lock at BEGIN.
WRITE = {"scoregate_write": True}


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            f"invalid database URL {redact(url)!r}: expected e.g. sqlite:///path/registry.db "
            "or postgresql://user@host:5432/db"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_database_file(Path(parsed.database).expanduser())
        engine = create_engine(parsed, connect_args={"timeout": 60})
        _configure_sqlite(engine)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": 10})
    except (ImportError, ArgumentError) as exc:
        raise ConfigurationError(f"cannot use database URL {redact(url)!r}: {exc}") from None


def _private_database_file(path: Path) -> None:
    """Create a new SQLite file 0600 in 0700 folders: SQLite gives its -wal and -shm files the
    database file's mode, so the metadata (users, token hashes, audit) stays the owner's."""
    private_dir(path.parent)
    if not path.exists():
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT))


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=60000")
        _use_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get("scoregate_write")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: sqlite3.Cursor, attempts: int = 100) -> None:
    """Switch the file to WAL (it stays so), retrying while another process holds it.

    Switching needs the file to itself for a moment, and when two processes open a new
    registry at once, SQLite answers "database is locked" at once rather than through the
    busy timeout. Once the file is in WAL mode the statement needs no lock.
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 + 0.01 * attempt)  # at most about 50 s in all


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema; safe when several processes open it at once."""
    try:
        if current_revision(engine) == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.execution_options(**WRITE).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(727274)"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreUnavailableError(
            f"cannot reach the metadata database at {redact(engine.url.render_as_string(hide_password=False))}: "
            f"{reason}"
        ) from None
    except SQLAlchemyError as exc:
        raise StoreUnavailableError(f"cannot prepare the metadata database: {exc}".splitlines()[0]) from None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not engine.dialect.has_table(connection, "alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
