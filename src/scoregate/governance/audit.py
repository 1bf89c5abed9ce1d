"""The tamper-evident audit log: a SHA-256 hash chain over every registry mutation.

An event is written in the transaction of the change it records, so neither exists
without the other. Writers queue on the single ``audit_head`` row (a row lock on
PostgreSQL; on SQLite the write lock taken at BEGIN), which keeps ``seq`` gap-free
under concurrent processes, and the head's copy of the last seq and hash is what
makes a deleted tail detectable.

The chain also covers the state the gates read: every ORM write to an audited table
(``registry.tables.audited``) is collected after each flush, and the next event of the
transaction carries the rows' images in its ``state`` (``audit_state``), indexed by
``audit_keys``; a transaction that writes an audited row and appends no event after it
is refused at commit. ``verify`` replays the images and compares them with the tables;
``audit_checks`` compares single rows at read time. The chain proves the log is
internally consistent; a wholesale rewrite (events and head together) is only caught
against a hash kept elsewhere: a signed checkpoint (``checkpoint``, ``anchors``), and
every webhook payload and every ``export`` carries one.

Canonical form: one JSON object of the ten fields other than ``hash`` and ``state``,
plus ``state`` when it is not null, keys sorted, no whitespace, UTF-8; strings as
``json.dumps(..., ensure_ascii=False)`` writes them, time as UTC ISO 8601 with
microseconds, ``before``/``after``/``state`` as canonical JSON text (orjson with sorted
keys; stored verbatim, so verifying re-serialises nothing). ``hash`` is the hex SHA-256
of those bytes; the first event's ``prev_hash`` is 64 zeros. Events without ``state``
(all of them before migration 0005) hash exactly as they always did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import multiprocessing
import os
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    and_,
    bindparam,
    event,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from scoregate.errors import InvalidInputError
from scoregate.governance.audit_state import (
    CHECKED,
    TOUCHED,
    Key,
    RowMismatch,
    audited_tables,
    encode_state,
    image,
    is_audited,
    iso_time,
    jsonable,
    row_key,
    secret_columns,
)
from scoregate.registry.tables import AuditEventRow, AuditHeadRow, AuditKeyRow, utcnow

if TYPE_CHECKING:
    from scoregate.governance.checkpoint import Checkpoint

#: ``prev_hash`` of the first event.
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "subject", "before", "after", "reason", "request_id", "prev_hash", "hash")
#: The optional field: present in an event (and its export line) only when not null.
STATE = "state"
#: Actor of the events scoregate writes on its own (the migration's baseline).
SYSTEM_ACTOR = "scoregate"

_EVENTS = AuditEventRow.__table__
_KEYS = AuditKeyRow.__table__
_HEAD = AuditHeadRow.__table__
_HEAD_ID = 1
_LIMITS = {"actor": 128, "action": 64, "subject": 255, "request_id": 128}
#: The C string encoder that ``json.dumps(..., ensure_ascii=False)`` itself uses.
_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
_ORJSON = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    time: dt.datetime
    actor: str
    action: str
    subject: str
    before: Any
    after: Any
    reason: str | None
    request_id: str | None
    prev_hash: str
    hash: str
    #: ``[[table, key, image or None], ...]``: the audited rows this event's transaction wrote.
    state: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON values (``time`` as canonical ISO text; ``state`` only if any)."""
        result = {name: iso_time(self.time) if name == "time" else getattr(self, name) for name in FIELDS}
        if self.state is not None:
            result[STATE] = self.state
        return result

    def to_json(self) -> str:
        """Canonical JSON of every field, ``hash`` included: an export line, a webhook body."""
        return canonical_event(
            self.seq,
            iso_time(self.time),
            self.actor,
            self.action,
            self.subject,
            _json_or_none(self.before),
            _json_or_none(self.after),
            self.reason,
            self.request_id,
            self.prev_hash,
            self.hash,
            _json_or_none(self.state),
        )


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a caller knows about an event; the log adds seq, time and the hashes."""

    actor: str
    action: str
    subject: str
    before: Any = None
    after: Any = None
    reason: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What ``verify`` found. ``ok`` only if the chain, every audited row, the append-only
    triggers and every anchor given are as they should be; ``checked`` counts the events
    that verify and ``last_hash`` is the hash of the last of them."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    last_hash: str = GENESIS
    rows: int = 0  # audited rows compared with the log
    mismatches: tuple[RowMismatch, ...] = ()
    problems: tuple[str, ...] = ()  # triggers, the keys index and anchors; one line each


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What was written; keep ``last_hash`` elsewhere to anchor the chain."""

    events: int
    last_seq: int
    last_hash: str


# -- canonical form ------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8, string keys only, no NaN; a fixed point (parsing and
    re-encoding gives the same text back), so an export can be re-verified from its lines."""
    try:
        encoded = orjson.dumps(value, default=_jsonable, option=_ORJSON)
    except TypeError as exc:  # orjson's JSONEncodeError
        raise InvalidInputError(f"audit before/after must be JSON data: {exc}") from None
    if b"null" in encoded:  # orjson writes NaN and infinities as null: refuse them instead
        try:
            json.dumps(value, allow_nan=False, default=_jsonable)
        except ValueError as exc:
            raise InvalidInputError(f"audit before/after must be JSON data: {exc}") from None
    return encoded.decode()


def canonical_event(
    seq: int,
    time: str,
    actor: str,
    action: str,
    subject: str,
    before: str | None,
    after: str | None,
    reason: str | None,
    request_id: str | None,
    prev_hash: str,
    hash_: str | None = None,
    state: str | None = None,
) -> str:
    """The canonical JSON of an event, by concatenation because ``verify`` runs it per row.

    ``before``/``after``/``state`` are canonical JSON text (or None; a None ``state`` is left
    out, not written as null); ``time`` is ``iso_time`` text. Without floats in them this
    equals ``json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``;
    orjson writes exponents as ``1e16``, not ``1e+16``.
    """
    head = (
        f'{{"action":{_quote(action)},"actor":{_quote(actor)},'
        f'"after":{"null" if after is None else after},"before":{"null" if before is None else before},'
    )
    if hash_ is not None:
        head += f'"hash":{_quote(hash_)},'
    rows = "" if state is None else f'"state":{state},'
    return (
        f'{head}"prev_hash":{_quote(prev_hash)},"reason":{"null" if reason is None else _quote(reason)},'
        f'"request_id":{"null" if request_id is None else _quote(request_id)},"seq":{seq},{rows}'
        f'"subject":{_quote(subject)},"time":{_quote(time)}}}'
    )


def event_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


_jsonable = jsonable


# -- writing -------------------------------------------------------------------------------------


class UnauditedChangeError(RuntimeError):
    """A transaction wrote audited rows without an audit event after them: a bug in the code
    that made the change (every mutation records its event), never something a user did."""


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Append one event in ``session``'s open transaction; it commits or rolls back with it.

    The event's ``state`` records every audited row the transaction wrote since its last
    event. Call it late in the transaction, after the change: on PostgreSQL it holds the
    head row lock until commit, so audited writers run one at a time from here on, and
    an audited row written after the transaction's last event is refused at commit.
    """
    draft = EventDraft(actor, action, subject, before, after, reason, request_id)
    return append_events(session, [draft])[0]


def append_events(session: Session, drafts: Sequence[EventDraft]) -> list[AuditEvent]:
    """Append several events under one head lock and one bulk insert (imports, benchmarks);
    the last one carries the state of the rows written before it."""
    prepared = [_prepare(d) for d in drafts]  # validate before taking the lock
    if not prepared:
        return []
    session.flush()  # so that every audited row written so far is collected (``_collect``)
    return _append(session, prepared, _take_state(session))


def append_baseline(
    db: Session | Connection, tables: Mapping[str, Collection[str]], *, reason: str
) -> AuditEvent | None:
    """Append one ``audit.baseline`` event recording every row of ``tables`` (name -> its secret
    columns) as it is now; None when they are all empty.

    For a migration that starts covering tables holding rows, or changes the columns of
    one: it reads the tables as they are in the database (reflected, not the ORM), so
    a later migration's columns are never assumed. Rows are trusted as they are here.
    """
    connection = db if isinstance(db, Connection) else db.connection()
    entries: list[tuple[str, str, dict[str, Any] | None]] = []
    for name, secrets in tables.items():
        table = Table(name, MetaData(), autoload_with=connection)
        keys = list(table.primary_key.columns)
        for row in connection.execute(select(table).order_by(*keys)):
            values = row._asdict()
            entries.append((name, row_key(values[c.name] for c in keys), image(values, secrets)))
    if not entries:
        return None
    counts = {name: sum(1 for e in entries if e[0] == name) for name in tables}
    draft = EventDraft(SYSTEM_ACTOR, "audit.baseline", "audit", after={"rows": counts}, reason=reason)
    return _append(db, [_prepare(draft)], entries)[0]


_Prepared = tuple[str, str, str, str | None, str | None, str | None, str | None]


def _append(
    db: Session | Connection,
    prepared: Sequence[_Prepared],
    state: Sequence[tuple[str, str, dict[str, Any] | None]] | None,
) -> list[AuditEvent]:
    """Chain ``prepared`` onto the head; the last event carries ``state`` and its keys."""
    state_text = encode_state(state) if state else None
    last_seq, last_hash = _lock_head(db)
    rows: list[dict[str, Any]] = []
    for index, (actor, action, subject, before, after, reason, request_id) in enumerate(prepared, 1):
        last_seq += 1
        now = utcnow()
        rows_state = state_text if index == len(prepared) else None
        line = canonical_event(
            last_seq,
            iso_time(now),
            actor,
            action,
            subject,
            before,
            after,
            reason,
            request_id,
            last_hash,
            None,
            rows_state,
        )
        digest = event_hash(line)
        rows.append(
            {
                "seq": last_seq,
                "time": now,
                "actor": actor,
                "action": action,
                "subject": subject,
                "before": before,
                "after": after,
                "reason": reason,
                "request_id": request_id,
                "prev_hash": last_hash,
                "hash": digest,
                "state": rows_state,
            }
        )
        last_hash = digest
    db.execute(insert(_EVENTS), rows)
    if state:
        db.execute(insert(_KEYS), [{"table_name": t, "row_key": k, "seq": last_seq} for t, k, _ in state])
    db.execute(update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(last_seq=last_seq, last_hash=last_hash))
    events = [_to_event(row) for row in rows]
    from scoregate.governance.webhooks import enqueue  # webhooks imports this module

    enqueue(db, events)  # type: ignore[arg-type]
    return events


def _prepare(draft: EventDraft) -> _Prepared:
    for name, limit in _LIMITS.items():
        value = getattr(draft, name)
        if name != "request_id" and (not isinstance(value, str) or not value.strip()):
            raise InvalidInputError(f"an audit event needs a non-empty {name}")
        if value is not None and len(value) > limit:
            raise InvalidInputError(f"audit {name} is longer than {limit} characters")
    for name in ("reason", "request_id"):
        if not isinstance(getattr(draft, name), str | None):
            raise InvalidInputError(f"audit {name} must be text or None")
    fields = (
        draft.actor,
        draft.action,
        draft.subject,
        _json_or_none(draft.before),
        _json_or_none(draft.after),
        draft.reason,
        draft.request_id,
    )
    for value in fields:
        if value is not None:
            try:
                value.encode()
            except UnicodeEncodeError:
                raise InvalidInputError("audit fields must be valid Unicode text (no lone surrogates)") from None
    return fields


def _lock_head(db: Session | Connection) -> tuple[int, str]:
    """The last seq and hash, locked until the transaction ends."""
    if _dialect(db) == "sqlite":
        # Take the write lock before reading, even if the caller began a deferred transaction.
        db.execute(update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(last_seq=_HEAD.c.last_seq))
    query = select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == _HEAD_ID).with_for_update()
    row = db.execute(query).one_or_none()
    if row is None:  # a schema made by create_all rather than the migration
        db.execute(
            text("INSERT INTO audit_head (id, last_seq, last_hash) VALUES (:id, 0, :genesis) ON CONFLICT DO NOTHING"),
            {"id": _HEAD_ID, "genesis": GENESIS},
        )
        row = db.execute(query).one()
    return int(row[0]), str(row[1])


def _dialect(db: Session | Connection) -> str:
    return db.dialect.name if isinstance(db, Connection) else db.get_bind().dialect.name


def _to_event(row: Any) -> AuditEvent:
    get = row.get if isinstance(row, dict) else row._mapping.get
    before, after, state = get("before"), get("after"), get("state")
    return AuditEvent(
        seq=get("seq"),
        time=_aware(get("time")),
        actor=get("actor"),
        action=get("action"),
        subject=get("subject"),
        before=None if before is None else orjson.loads(before),
        after=None if after is None else orjson.loads(after),
        reason=get("reason"),
        request_id=get("request_id"),
        prev_hash=get("prev_hash"),
        hash=get("hash"),
        state=None if state is None else orjson.loads(state),
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# -- capture: every ORM write to an audited table ------------------------------------------------
# Listeners on every Session: the registry's transactions, and any other code that writes
# the tables through the ORM, so no write path has to remember to record its rows.


def instance_key(obj: Any) -> tuple[str, str, tuple[Any, ...]] | None:
    mapper = inspect(obj).mapper
    table = mapper.local_table
    if not is_audited(table):
        return None
    values = tuple(mapper.primary_key_from_instance(obj))
    return table.name, row_key(values), values


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _context: Any) -> None:
    """Note the key of every audited row this flush inserted, updated or deleted."""
    dirty = [o for o in session.dirty if session.is_modified(o, include_collections=False)]
    for obj in itertools.chain(session.new, dirty, session.deleted):
        found = instance_key(obj)
        if found is not None:
            session.info.setdefault(TOUCHED, {})[found[:2]] = found[2]


@event.listens_for(Session, "before_commit")
def _refuse_unrecorded(session: Session) -> None:
    """The invariant: no transaction commits an audited row without an audit event after it."""
    if session.in_nested_transaction():
        return
    session.flush()
    touched = session.info.get(TOUCHED)
    if touched:
        rows = ", ".join(f"{table} {key}" for table, key in list(touched)[:5])
        raise UnauditedChangeError(
            f"refused: this transaction wrote audited rows ({rows}) without an audit event after them"
        )


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        for name in (TOUCHED, CHECKED):
            session.info.pop(name, None)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_writes(state: ORMExecuteState) -> None:
    """Bulk INSERT/UPDATE/DELETE statements bypass the flush, so their rows would go unrecorded."""
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if is_audited(table):
            raise UnauditedChangeError(
                f"a bulk statement on the audited table {table.name} is not recorded: write its rows through the ORM"
            )


def _take_state(session: Session) -> list[tuple[str, str, dict[str, Any] | None]] | None:
    """The images of the audited rows written since the last event, as they are now in the
    database (read back, so what is recorded is what is stored, byte for byte)."""
    touched: dict[Key, tuple[Any, ...]] | None = session.info.pop(TOUCHED, None)
    if not touched:
        return None
    tables = audited_tables()
    connection = session.connection()
    by_table: dict[str, dict[str, tuple[Any, ...]]] = {}
    for (name, key), values in touched.items():
        by_table.setdefault(name, {})[key] = values
    entries: list[tuple[str, str, dict[str, Any] | None]] = []
    for name, keys in by_table.items():
        table = tables[name]
        found = {key: image(row, secret_columns(table)) for key, row in select_rows(connection, table, keys.values())}
        entries.extend((name, key, found.get(key)) for key in keys)
    session.info.setdefault(CHECKED, set()).update(touched)
    return entries


def select_rows(
    connection: Connection, table: Table, keys: Collection[tuple[Any, ...]], *, chunk: int = 500
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, row)`` for the rows of ``table`` with these primary-key values that exist."""
    columns = list(table.primary_key.columns)
    wanted = list(keys)
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        if len(columns) == 1:
            where = columns[0].in_([values[0] for values in part])
        else:
            where = or_(*(and_(*(c == v for c, v in zip(columns, values, strict=True))) for values in part))
        for row in connection.execute(select(table).where(where)):
            values = row._asdict()
            yield row_key(values[c.name] for c in columns), values


# -- reading -------------------------------------------------------------------------------------


def iter_events(
    session: Session,
    subject: str | None = None,
    action: str | None = None,
    since: dt.datetime | None = None,
    *,
    batch: int = 1000,
) -> Iterator[AuditEvent]:
    """Events in seq order, streamed; ``since`` (timezone-aware) keeps events at or after it."""
    query = select(_EVENTS).order_by(_EVENTS.c.seq)
    if subject is not None:
        query = query.where(_EVENTS.c.subject == subject)
    if action is not None:
        query = query.where(_EVENTS.c.action == action)
    if since is not None:
        if since.tzinfo is None:
            raise InvalidInputError("since must be timezone-aware (e.g. datetime.now(UTC))")
        query = query.where(_EVENTS.c.time >= since.astimezone(dt.UTC))
    for row in session.execute(query, execution_options={"yield_per": batch}):
        yield _to_event(row)


@contextmanager
def _snapshot(source: Session | Engine | Connection) -> Iterator[Connection]:
    """A connection whose reads all see one committed state (head and events agree)."""
    if isinstance(source, Session):
        yield source.connection()
    elif isinstance(source, Connection):
        yield source
    else:
        with source.connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                yield connection


def _time_sql(connection: Connection) -> str:
    """SQL for an event's ``time`` as canonical ``iso_time`` text (colons escaped for ``text()``)."""
    if connection.dialect.name == "postgresql":
        return """to_char("time" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\\:MI\\:SS.US') || '+00\\:00'"""
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC here)
    return """replace("time", ' ', 'T') || '+00\\:00'"""


#: The columns of ``_rows``, in ``canonical_event``'s argument order.
_ROW_COLUMNS = 'seq, {time}, actor, action, subject, "before", "after", reason, request_id, prev_hash, hash, state'


def _rows(connection: Connection, batch: int, lo: int | None = None, hi: int | None = None) -> Iterator[Sequence[Any]]:
    """Raw event rows in seq order (``lo``..``hi`` when given), ``time`` already canonical text."""
    where = " AND ".join(clause for clause, bound in (("seq >= :lo", lo), ("seq <= :hi", hi)) if bound is not None)
    query = text(
        f"SELECT {_ROW_COLUMNS.format(time=_time_sql(connection))} "
        f"FROM audit_events {'WHERE ' + where if where else ''} ORDER BY seq"
    )
    params = {"lo": lo, "hi": hi}
    if connection.dialect.name == "sqlite":  # the driver's own cursor: a third faster than Row objects
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(query.text.replace("\\:", ":"), {k: v for k, v in params.items() if v is not None})
            while part := cursor.fetchmany(batch):
                yield part
        finally:
            cursor.close()
        return
    result = connection.execute(query, params, execution_options={"stream_results": True, "yield_per": batch})
    try:
        yield from result.partitions(batch)
    finally:
        result.close()


def event_rows(connection: Connection, seqs: Collection[int]) -> dict[int, Sequence[Any]]:
    """The raw rows (as ``_rows`` gives them) of the events with these seqs that exist."""
    if not seqs:
        return {}
    query = text(
        f"SELECT {_ROW_COLUMNS.format(time=_time_sql(connection))} FROM audit_events WHERE seq IN :seqs"
    ).bindparams(bindparam("seqs", expanding=True))
    return {row[0]: tuple(row) for row in connection.execute(query, {"seqs": sorted(seqs)})}


def recomputed_hash(row: Sequence[Any]) -> str:
    """The hash an event row (from ``_rows`` or ``event_rows``) should have."""
    return event_hash(canonical_event(*row[:10], None, row[11]))


def _head(connection: Connection) -> tuple[int, str] | None:
    row = connection.execute(select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == _HEAD_ID)).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


# -- verification and export ---------------------------------------------------------------------


def verify(
    source: Session | Engine | Connection,
    *,
    batch: int = 20_000,
    workers: int | None = None,
    rows: bool = True,
    anchors: Sequence[Checkpoint] = (),
) -> VerifyResult:
    """Recompute the chain in seq order in constant memory; name the first event that is wrong;
    then compare every audited row with the log, check the append-only triggers and the anchors.

    Catches an UPDATEd event (hash mismatch), a DELETEd one (gap), a deleted tail (the
    head records more), an INSERTed one (broken link, or a seq beyond the head), and a
    head that disagrees with the last event. An event rewritten with a recomputed hash
    shows up at the next event, whose ``prev_hash`` no longer links. A row of an audited
    table that differs from the last image the chain holds of it, or that no event wrote,
    or that the chain says exists and is gone, is a mismatch (``rows=False`` skips these).
    A chain rewritten consistently from some event on, or cut short with its head, is
    caught only by an anchor (a checkpoint kept outside the database) at or after that event.

    Every link can be checked on its own, so a long chain given as an Engine is split
    into seq ranges checked by forked processes (``workers``; default: up to 4 CPUs
    from ``PARALLEL_FROM`` events on, in a single-threaded process).
    """
    from scoregate.governance.audit_checks import anchor_problems, compare_rows, index_problems, trigger_problems

    with _snapshot(source) as connection:
        chain, latest = _verify_chain(source, connection, batch, workers)
        problems = trigger_problems(connection)
        mismatches: tuple[RowMismatch, ...] = ()
        compared = 0
        if rows and chain.ok:
            mismatches, compared = compare_rows(connection, latest)
            problems += index_problems(connection, latest)
        problems += anchor_problems(connection, anchors)
    ok = chain.ok and not mismatches and not problems
    return VerifyResult(
        ok,
        chain.checked,
        chain.first_bad_seq,
        chain.reason,
        chain.last_hash,
        compared,
        mismatches,
        tuple(problems),
    )


def _verify_chain(
    source: Session | Engine | Connection, connection: Connection, batch: int, workers: int | None
) -> tuple[VerifyResult, dict[Key, tuple[int, dict[str, Any] | None]]]:
    """The chain's verdict, and the last image it holds of each audited row: (seq, image)."""
    head = _head(connection)
    top = max(connection.execute(text("SELECT max(seq) FROM audit_events")).scalar() or 0, head[0] if head else 0)
    count = _worker_count(source, workers, top)
    if count > 1:
        assert isinstance(source, Engine)
        url = source.url.render_as_string(hide_password=False)
        bounds = [top * i // count for i in range(count + 1)]
        ranges = [(url, bounds[i] + 1 if i else None, bounds[i + 1], batch) for i in range(count)]
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(count, mp_context=context) as pool:
            spans = list(pool.map(_scan_elsewhere, ranges))
    else:
        spans = [_scan(connection, None, None, batch)]
    latest: dict[Key, tuple[int, dict[str, Any] | None]] = {}
    last, prev = 0, GENESIS
    for span in spans:
        if span.first_seq is None:
            continue
        if span.first_seq <= last:
            return _bad(last, span.first_seq, f"event {span.first_seq} appears twice or out of order"), latest
        if span.first_seq > last + 1:
            return _bad(last, last + 1, f"event {last + 1} is missing (the next one is {span.first_seq})"), latest
        if span.first_prev != prev:
            return _bad(last, span.first_seq, f"event {span.first_seq} does not link to event {last}"), latest
        if span.bad is not None:
            return _bad(span.bad[0] - 1, *span.bad), latest
        latest.update(span.latest)
        last, prev = span.last_seq, span.last_hash
    if head is None:
        if last == 0:
            return VerifyResult(True, 0), latest
        return _bad(last, last, "the audit head row is missing"), latest
    head_seq, head_hash = head
    if head_seq > last:
        reason = f"events {last + 1}-{head_seq} are missing: the head records {head_seq} as last"
        return _bad(last, last + 1, reason), latest
    if head_seq < last:
        reason = f"event {head_seq + 1} is not in the head (it records {head_seq} as last)"
        return _bad(head_seq, head_seq + 1, reason), latest
    if head_hash != prev:
        return _bad(last - 1, last, f"event {last} does not match the hash the head records"), latest
    return VerifyResult(True, last, last_hash=prev), latest


#: Chains at least this long are verified by several processes (when given an Engine).
PARALLEL_FROM = 200_000


@dataclass(frozen=True, slots=True)
class _Span:
    """A seq range as scanned: its ends, for the caller to link to the neighbours, or its first
    fault; and the last image of each audited row its events wrote."""

    first_seq: int | None
    first_prev: str | None
    last_seq: int
    last_hash: str
    bad: tuple[int, str] | None = None
    latest: dict[Key, tuple[int, dict[str, Any] | None]] = field(default_factory=dict)


def _scan(connection: Connection, lo: int | None, hi: int | None, batch: int) -> _Span:
    """Check every event of a range and every link inside it (the hot loop of ``verify``)."""
    first_seq = first_prev = None
    expected, prev, sha256, canonical, loads = 0, "", hashlib.sha256, canonical_event, orjson.loads
    latest: dict[Key, tuple[int, dict[str, Any] | None]] = {}
    for part in _rows(connection, batch, lo, hi):
        for seq, time, actor, action, subject, before, after, reason, request_id, prev_hash, digest, state in part:
            if first_seq is None:
                first_seq, first_prev, expected = seq, prev_hash, seq
            elif seq != expected:
                if seq < expected:
                    bad = (seq, f"event {seq} appears twice or out of order")
                else:
                    bad = (expected, f"event {expected} is missing (the next one is {seq})")
                return _Span(first_seq, first_prev, expected - 1, prev, bad)
            elif prev_hash != prev:
                return _Span(
                    first_seq, first_prev, seq - 1, prev, (seq, f"event {seq} does not link to event {seq - 1}")
                )
            line = canonical(
                seq, time, actor, action, subject, before, after, reason, request_id, prev_hash, None, state
            )
            if sha256(line.encode()).hexdigest() != digest:
                bad = (seq, f"event {seq} was altered: its content does not match its hash")
                return _Span(first_seq, first_prev, seq - 1, prev, bad)
            if state is not None:
                try:
                    for table, key, recorded in loads(state):  # decode_state, inlined: this loop is hot
                        latest[table, key] = (seq, recorded)
                except (ValueError, TypeError):
                    bad = (seq, f"event {seq} has a state that is not a list of [table, key, image]")
                    return _Span(first_seq, first_prev, seq - 1, prev, bad)
            prev = digest
            expected += 1
    return _Span(first_seq, first_prev, expected - 1, prev, latest=latest)


def _scan_elsewhere(job: tuple[str, int | None, int | None, int]) -> _Span:
    """``_scan`` in a worker process, on a connection of its own."""
    from scoregate.registry.database import make_engine

    url, lo, hi, batch = job
    engine = make_engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            return _scan(connection, lo, hi, batch)
    finally:
        engine.dispose()


def _worker_count(source: Session | Engine | Connection, workers: int | None, events: int) -> int:
    if not isinstance(source, Engine) or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if source.dialect.name == "sqlite" and source.url.database in (None, "", ":memory:"):
        return 1
    if workers is None:  # forking a threaded process (a server) is unsafe: only on request there
        alone = threading.active_count() == 1
        workers = min(os.cpu_count() or 1, 4) if events >= PARALLEL_FROM and alone else 1
    return max(1, min(workers, events // 1000 or 1))


def _bad(checked: int, seq: int, reason: str) -> VerifyResult:
    return VerifyResult(False, max(checked, 0), seq, reason)


def export(engine: Engine | Session | Connection, path: Path | str, *, batch: int = 20_000) -> ExportSummary:
    """Write every event as one canonical JSON line (``hash`` included), atomically."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    count, last_seq, last_hash = 0, 0, GENESIS
    try:
        with _snapshot(engine) as connection, partial.open("w", encoding="utf-8", newline="\n") as out:
            for part in _rows(connection, batch):
                out.writelines(f"{canonical_event(*row)}\n" for row in part)
                if part:
                    count += len(part)
                    last_seq, last_hash = part[-1][0], part[-1][10]
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportSummary(count, last_seq, last_hash)


_EXPORTED = (frozenset(FIELDS), frozenset((*FIELDS, STATE)))


def verify_export(path: Path | str, *, last_hash: str | None = None) -> VerifyResult:
    """Check an exported file offline, without the database; ``last_hash`` (from ``export``, a
    webhook receiver or an anchor) also catches lines cut from the end."""
    expected, prev = 1, GENESIS
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
                if frozenset(event) not in _EXPORTED:
                    raise ValueError(f"fields {sorted(event)}")
                seq = event["seq"]
                state = event.get(STATE)
                if STATE in event and state is None:
                    raise ValueError("state is null (an event without rows has no state field)")
                recomputed = event_hash(
                    canonical_event(
                        seq,
                        event["time"],
                        event["actor"],
                        event["action"],
                        event["subject"],
                        _json_or_none(event["before"]),
                        _json_or_none(event["after"]),
                        event["reason"],
                        event["request_id"],
                        event["prev_hash"],
                        None,
                        _json_or_none(state),
                    )
                )
            except (ValueError, TypeError, InvalidInputError) as exc:
                return _bad(expected - 1, expected, f"line {number} is not an audit event: {exc}")
            if seq != expected:
                return _bad(expected - 1, min(seq, expected), f"line {number} holds event {seq}, expected {expected}")
            if event["prev_hash"] != prev:
                return _bad(expected - 1, seq, f"event {seq} does not link to event {seq - 1} (prev_hash differs)")
            if recomputed != event["hash"]:
                return _bad(expected - 1, seq, f"event {seq} was altered: its content does not match its hash")
            prev = event["hash"]
            expected += 1
    if last_hash is not None and last_hash != prev:
        return _bad(expected - 1, expected, f"the file ends at event {expected - 1}, not at the expected last hash")
    return VerifyResult(True, expected - 1, last_hash=prev)
