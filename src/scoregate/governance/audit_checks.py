"""The database's state checked against the audit log: at read time, row by row, and in full.

Read time (``check_rows``, ``check_gone``): for each row a gate or the server is about
to rely on, the ``audit_keys`` index names the last event that wrote it; that event's
hash is recomputed, its links to both neighbours (or the head) are checked, and the row
is compared with the image the event recorded. A mismatch raises ``TamperedError`` naming
the table, row, field and event. Before a transaction overwrites or deletes an audited
row, the row as stored is checked the same way, so a change behind the platform's back
is never laundered into a new event. Verified events are cached by (seq, hash), so the
migration's large baseline event is parsed once per process, not on every read.

In full (``compare_rows`` and the rest, from ``audit.verify``): every row of every audited
table against the replayed chain, the ``audit_keys`` index against the chain, the
versions' status against their last decision, and the append-only triggers.

What this cannot see: a rewrite of the chain itself from some event on, events, head
and index recomputed consistently by whoever owns the database. An anchor catches that.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, bindparam, event, func, inspect, select, text
from sqlalchemy.orm import Session

from scoregate.errors import TamperedError
from scoregate.governance.audit import (
    GENESIS,
    event_rows,
    instance_key,
    recomputed_hash,
    select_rows,
)
from scoregate.governance.audit_state import (
    CHECKED,
    TOUCHED,
    Key,
    Labels,
    RowMismatch,
    audited_tables,
    compare,
    decode_state,
    image,
    primary_key,
    secret_columns,
)
from scoregate.governance.tables import DecisionRow
from scoregate.registry.tables import AuditHeadRow, AuditKeyRow, ModelRow, VersionRow

if TYPE_CHECKING:
    from scoregate.governance.checkpoint import Checkpoint

_KEYS = AuditKeyRow.__table__
_HEAD = AuditHeadRow.__table__
_MODELS = ModelRow.__table__
_VERSIONS = VersionRow.__table__
_DECISIONS = DecisionRow.__table__
#: A row read under READ COMMITTED can be overtaken by a commit before its event is read:
#: a mismatch is re-read this many times before it is called tampering.
_ATTEMPTS = 3


@dataclass(slots=True)
class _Entry:
    table: Table
    key: str
    values: dict[str, Any] | None  # the row as stored; None: there is no such row
    obj: Any = None  # the ORM instance it came from, refreshed on a re-read


# -- read time -----------------------------------------------------------------------------------


def check_rows(session: Session, rows: Iterable[Any]) -> None:
    """Refuse (``TamperedError``) unless each ORM row is what the audit log last recorded of it.

    Rows this transaction is writing itself are skipped (its own event will record them),
    and so are rows already checked or recorded in this transaction.
    """
    entries: list[_Entry] = []
    pending = session.info.get(TOUCHED, {})
    done = set(session.info.get(CHECKED, ()))
    for obj in rows:
        if obj is None:
            continue
        state = inspect(obj)
        if not state.persistent or session.is_modified(obj, include_collections=False):
            continue
        found = instance_key(obj)
        if found is None:
            raise TypeError(f"{type(obj).__name__} is not an audited table")
        key = found[:2]
        if key in pending or key in done:
            continue
        done.add(key)
        entries.append(_Entry(state.mapper.local_table, key[1], _values(obj), obj))
    _check(session, entries)


def check_gone(session: Session, table: Table, keys: Collection[str]) -> None:
    """Refuse unless the audit log agrees that these rows of ``table``, which are not stored,
    do not exist (never written, or deleted by the platform)."""
    done = session.info.get(CHECKED, set())
    _check(session, [_Entry(table, key, None) for key in keys if (table.name, key) not in done])


def recorded_keys(session: Session, table: Table) -> list[str]:
    """The key of every row of ``table`` any event ever wrote."""
    query = select(_KEYS.c.row_key).where(_KEYS.c.table_name == table.name).distinct()
    return list(session.connection().execute(query).scalars())


def _values(obj: Any) -> dict[str, Any]:
    mapper = inspect(obj).mapper
    return {c.name: getattr(obj, mapper.get_property_by_column(c).key) for c in mapper.local_table.columns}


def _check(session: Session, entries: list[_Entry]) -> None:
    if not entries:
        return
    connection = session.connection()
    for attempt in range(_ATTEMPTS):
        mismatches = _mismatches(connection, entries)
        if not mismatches:
            session.info.setdefault(CHECKED, set()).update((e.table.name, e.key) for e in entries)
            return
        if attempt == _ATTEMPTS - 1:
            raise TamperedError(mismatches[0].message, details=[_detail(m) for m in mismatches])
        bad = {(m.table, m.key) for m in mismatches}
        for entry in entries:
            if (entry.table.name, entry.key) in bad:
                _reread(session, entry)


def _reread(session: Session, entry: _Entry) -> None:
    if entry.obj is not None:
        session.refresh(entry.obj)
        entry.values = _values(entry.obj)
        return
    found = dict(select_rows(session.connection(), entry.table, [_pk_values(entry)]))
    entry.values = found.get(entry.key)


def _pk_values(entry: _Entry) -> tuple[Any, ...]:
    columns = list(entry.table.primary_key.columns)
    if len(columns) == 1:
        return (columns[0].type.python_type(entry.key),)
    import orjson

    return tuple(orjson.loads(entry.key))


def _detail(mismatch: RowMismatch) -> dict[str, Any]:
    return {"table": mismatch.table, "row": mismatch.label, "event": mismatch.seq, "message": mismatch.message}


def _mismatches(connection: Connection, entries: Sequence[_Entry]) -> list[RowMismatch]:
    last = _last_writers(connection, entries)
    recorded = _recorded(connection, set(last.values()))
    found: list[tuple[_Entry, RowMismatch, dict[str, Any] | None]] = []
    for entry in entries:
        name = entry.table.name
        seq = last.get((name, entry.key))
        was = None
        if seq is not None:
            images = recorded[seq]
            if (name, entry.key) not in images:
                raise TamperedError(
                    f"the audit_keys index names event {seq} as the last to write {name} row {entry.key}, "
                    "but that event does not record it"
                )
            was = (seq, images[(name, entry.key)])
        stored = None if entry.values is None else image(entry.values, secret_columns(entry.table))
        mismatch = compare(name, entry.key, entry.key, stored, was)
        if mismatch is not None:
            found.append((entry, mismatch, entry.values if entry.values is not None else (was[1] if was else None)))
    if not found:
        return []
    labels = _labels(connection, [(e.table.name, e.key, row) for e, _, row in found])
    return [_relabel(mismatch, labels(entry.table, entry.key, row)) for entry, mismatch, row in found]


def _relabel(mismatch: RowMismatch, label: str) -> RowMismatch:
    return RowMismatch(mismatch.table, mismatch.key, label, mismatch.kind, mismatch.seq, mismatch.fields, mismatch.note)


def _last_writers(connection: Connection, entries: Sequence[_Entry]) -> dict[Key, int]:
    by_table: dict[str, set[str]] = {}
    for entry in entries:
        by_table.setdefault(entry.table.name, set()).add(entry.key)
    last: dict[Key, int] = {}
    for name, keys in by_table.items():
        query = (
            select(_KEYS.c.row_key, func.max(_KEYS.c.seq))
            .where(_KEYS.c.table_name == name, _KEYS.c.row_key.in_(sorted(keys)))
            .group_by(_KEYS.c.row_key)
        )
        last.update(((name, key), int(seq)) for key, seq in connection.execute(query))
    return last


_cache: OrderedDict[tuple[int, str], dict[Key, Any]] = OrderedDict()
_cache_sizes: dict[tuple[int, str], int] = {}
_cache_lock = threading.Lock()
#: Characters of state text kept parsed across reads (a baseline of ~10,000 rows is ~10M).
CACHE_BUDGET = 32_000_000


def _recorded(connection: Connection, seqs: set[int]) -> dict[int, dict[Key, Any]]:
    """The images each event recorded, once its hash and both its links have been checked."""
    if not seqs:
        return {}
    # The head first: every event up to it is committed by then, so the links read after it
    # hold them all even under READ COMMITTED, where a writer may commit between statements.
    head = connection.execute(select(_HEAD.c.last_seq, _HEAD.c.last_hash)).one_or_none()
    around = sorted({s + d for s in seqs for d in (-1, 0, 1) if s + d > 0})
    links = {
        seq: (prev, digest)
        for seq, prev, digest in connection.execute(
            text("SELECT seq, prev_hash, hash FROM audit_events WHERE seq IN :seqs").bindparams(
                bindparam("seqs", expanding=True)
            ),
            {"seqs": around},
        )
    }
    result: dict[int, dict[Key, Any]] = {}
    missing: list[int] = []
    for seq in sorted(seqs):
        _check_links(seq, links, head)
        with _cache_lock:
            cached = _cache.get((seq, links[seq][1]))
            if cached is not None:
                _cache.move_to_end((seq, links[seq][1]))
                result[seq] = cached
            else:
                missing.append(seq)
    for seq, row in event_rows(connection, missing).items():
        if recomputed_hash(row) != row[10]:
            raise TamperedError(f"audit event {seq} was altered: its content does not match its hash")
        state = row[11]
        images = dict(decode_state(state)) if state is not None else {}
        _remember((seq, row[10]), images, len(state or ""))
        result[seq] = images
    return result


def _check_links(seq: int, links: dict[int, tuple[str, str]], head: Any) -> None:
    if seq not in links:
        raise TamperedError(f"audit event {seq} is missing, yet the audit_keys index names it")
    prev_hash, digest = links[seq]
    before = links.get(seq - 1)
    if (seq == 1 and prev_hash != GENESIS) or (seq > 1 and (before is None or before[1] != prev_hash)):
        raise TamperedError(f"audit event {seq} does not link to event {seq - 1}: the audit log was altered")
    after = links.get(seq + 1)
    if after is not None:
        if after[0] != digest:
            raise TamperedError(f"audit event {seq + 1} does not link to event {seq}: the audit log was altered")
    elif head is None or int(head[0]) != seq or head[1] != digest:  # events up to the head are all in links
        raise TamperedError(f"audit event {seq} is neither followed by another nor the head: the audit log was altered")


def _remember(key: tuple[int, str], images: dict[Key, Any], size: int) -> None:
    if size > CACHE_BUDGET:
        return
    with _cache_lock:
        _cache[key] = images
        _cache_sizes[key] = size
        while sum(_cache_sizes.values()) > CACHE_BUDGET:
            oldest, _ = _cache.popitem(last=False)
            _cache_sizes.pop(oldest, None)


def _labels(connection: Connection, rows: Sequence[tuple[str, str, dict[str, Any] | None]] | None = None) -> Labels:
    """Names for the models and versions these (table, key, row) refer to; all when None."""
    versions_query = select(_VERSIONS.c.id, _VERSIONS.c.model_id, _VERSIONS.c.version)
    models_query = select(_MODELS.c.id, _MODELS.c.name)
    if rows is not None:
        version_ids = {row.get("version_id") for _, _, row in rows if row}
        version_ids |= {int(key) for table, key, _ in rows if table == "model_versions"}
        versions_query = versions_query.where(_VERSIONS.c.id.in_([v for v in version_ids if isinstance(v, int)]))
    versions = {vid: (mid, number) for vid, mid, number in connection.execute(versions_query)}
    if rows is not None:
        model_ids = {mid for mid, _ in versions.values()} | {row.get("model_id") for _, _, row in rows if row}
        models_query = models_query.where(_MODELS.c.id.in_([m for m in model_ids if isinstance(m, int)]))
    return Labels(dict(connection.execute(models_query).all()), versions)  # type: ignore[arg-type]


@event.listens_for(Session, "before_flush")
def _check_before_overwrite(session: Session, _context: Any, _instances: Any) -> None:
    """Check each audited row as stored before this flush updates or deletes it."""
    pending = session.info.get(TOUCHED, {})
    done = session.info.get(CHECKED, set())
    wanted: dict[str, dict[str, tuple[Any, ...]]] = {}
    for obj in [*session.dirty, *session.deleted]:
        if obj in session.dirty and not session.is_modified(obj, include_collections=False):
            continue
        if not inspect(obj).has_identity:
            continue
        found = instance_key(obj)
        if found is None or found[:2] in pending or found[:2] in done:
            continue
        wanted.setdefault(found[0], {})[found[1]] = found[2]
    if not wanted:
        return
    tables = audited_tables()
    connection = session.connection()
    entries: list[_Entry] = []
    for name, keys in wanted.items():
        stored = dict(select_rows(connection, tables[name], keys.values()))
        entries.extend(_Entry(tables[name], key, stored.get(key)) for key in keys)
    _check(session, entries)


# -- in full (audit verify) ----------------------------------------------------------------------


def compare_rows(
    connection: Connection, latest: dict[Key, tuple[int, dict[str, Any] | None]]
) -> tuple[tuple[RowMismatch, ...], int]:
    """Every row of every audited table against the chain's last image of it; and every
    version's status against its last decision. Returns (mismatches, rows compared)."""
    labels = _labels(connection)
    found: list[RowMismatch] = []
    seen: set[Key] = set()
    count = 0
    for name, table in audited_tables().items():
        secrets = secret_columns(table)
        query = select(table).order_by(*table.primary_key.columns)
        for row in connection.execute(query, execution_options={"yield_per": 1000}):
            values = row._asdict()
            key = primary_key(table, values)
            seen.add((name, key))
            count += 1
            mismatch = compare(name, key, labels(table, key, values), image(values, secrets), latest.get((name, key)))
            if mismatch is not None:
                found.append(mismatch)
    tables = audited_tables()
    for (name, key), (seq, recorded) in sorted(latest.items()):
        if recorded is not None and (name, key) not in seen and name in tables:
            found.append(RowMismatch(name, key, labels(tables[name], key, recorded), "deleted", seq))
    found.extend(_status_mismatches(connection, labels))
    return tuple(found), count


def _status_mismatches(connection: Connection, labels: Labels) -> list[RowMismatch]:
    last: dict[int, tuple[int, str]] = {}
    for version_id, decision_id, to_status in connection.execute(
        select(_DECISIONS.c.version_id, _DECISIONS.c.id, _DECISIONS.c.to_status).order_by(_DECISIONS.c.id)
    ):
        last[version_id] = (decision_id, to_status)
    found = []
    for version_id, status in connection.execute(select(_VERSIONS.c.id, _VERSIONS.c.status).order_by(_VERSIONS.c.id)):
        decision = last.get(version_id)
        expected = decision[1] if decision else "registered"
        if status != expected:
            why = (
                f"its last decision (decisions row {decision[0]}) moved it to {expected!r}"
                if decision
                else "it has no decision, so it should be 'registered'"
            )
            note = f"status is {status!r}, but {why}"
            found.append(
                RowMismatch("model_versions", str(version_id), labels.version(version_id), "status", note=note)
            )
    return found


def index_problems(connection: Connection, latest: dict[Key, tuple[int, dict[str, Any] | None]]) -> list[str]:
    """Where the ``audit_keys`` index disagrees with the chain on the last event of a row."""
    problems: list[str] = []
    indexed: set[Key] = set()
    query = select(_KEYS.c.table_name, _KEYS.c.row_key, func.max(_KEYS.c.seq)).group_by(
        _KEYS.c.table_name, _KEYS.c.row_key
    )
    for name, key, seq in connection.execute(query):
        indexed.add((name, key))
        chain = latest.get((name, key))
        if chain is None:
            problems.append(f"audit_keys names event {seq} for {name} row {key}, which no event of the chain wrote")
        elif chain[0] != seq:
            problems.append(
                f"audit_keys names event {seq} as the last to write {name} row {key}; the chain says event {chain[0]}"
            )
    for (name, key), (seq, _) in sorted(latest.items()):
        if (name, key) not in indexed:
            problems.append(f"audit_keys has no entry for {name} row {key}, written by event {seq}")
    return problems


#: The append-only triggers (migrations 0004 and 0005): name -> (table, statements it refuses).
SQLITE_TRIGGERS = {
    "audit_events_no_update": ("audit_events", "UPDATE"),
    "audit_events_no_delete": ("audit_events", "DELETE"),
    "audit_keys_no_update": ("audit_keys", "UPDATE"),
    "audit_keys_no_delete": ("audit_keys", "DELETE"),
}
POSTGRES_TRIGGERS = {
    "audit_events_append_only": ("audit_events", "UPDATE and DELETE"),
    "audit_events_no_truncate": ("audit_events", "TRUNCATE"),
    "audit_keys_append_only": ("audit_keys", "UPDATE and DELETE"),
    "audit_keys_no_truncate": ("audit_keys", "TRUNCATE"),
}
# pg_trigger.tgtype bits (PostgreSQL's include/catalog/pg_trigger.h)
_BEFORE, _DELETE, _UPDATE, _TRUNCATE = 2, 8, 16, 32


def trigger_problems(connection: Connection) -> list[str]:
    """One line for each append-only trigger that is missing, disabled or no longer refuses."""
    if connection.dialect.name == "postgresql":
        expected, present, judge = POSTGRES_TRIGGERS, _postgres_triggers(connection), _postgres_verdict
    else:
        expected, present, judge = SQLITE_TRIGGERS, _sqlite_triggers(connection), _sqlite_verdict
    problems = []
    for name, (table, operation) in expected.items():
        found = present.get(name)
        verdict = "missing" if found is None else judge(found, table, operation)
        if verdict is not None:
            refused = "may not be refused" if verdict == "altered" else "is not refused"
            problems.append(f"the append-only trigger {name} is {verdict}: {operation} of {table} {refused}")
    return problems


def _sqlite_triggers(connection: Connection) -> dict[str, tuple[Any, ...]]:
    query = text("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")
    return {name: (table, sql or "") for name, table, sql in connection.execute(query)}


def _sqlite_verdict(found: tuple[Any, ...], table: str, operation: str) -> str | None:
    sql = " ".join(found[1].upper().split())
    if found[0] != table or f"BEFORE {operation} ON {table.upper()}" not in sql or "RAISE(ABORT" not in sql:
        return "altered"
    return None


def _postgres_triggers(connection: Connection) -> dict[str, tuple[Any, ...]]:
    rows = connection.execute(
        text(
            "SELECT t.tgname, c.relname, t.tgenabled, t.tgtype, p.prosrc FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE NOT t.tgisinternal AND t.tgrelid IN (to_regclass('audit_events'), to_regclass('audit_keys'))"
        )
    )
    return {name: (table, str(enabled), int(kind), source or "") for name, table, enabled, kind, source in rows}


def _postgres_verdict(found: tuple[Any, ...], table: str, operation: str) -> str | None:
    found_table, enabled, kind, source = found
    bits = _TRUNCATE if operation == "TRUNCATE" else _UPDATE | _DELETE
    if enabled == "D":
        return "disabled"
    if found_table != table or kind & bits != bits or not kind & _BEFORE or "RAISE EXCEPTION" not in source.upper():
        return "altered"
    return None


def anchor_problems(connection: Connection, anchors: Sequence[Checkpoint]) -> list[str]:
    """One line for each anchor the chain no longer agrees with: a truncated or rewritten chain."""
    if not anchors:
        return []
    head = connection.execute(select(_HEAD.c.last_seq)).scalar() or 0
    hashes = {
        seq: digest
        for seq, digest in connection.execute(
            text("SELECT seq, hash FROM audit_events WHERE seq IN :seqs").bindparams(bindparam("seqs", expanding=True)),
            {"seqs": sorted({a.seq for a in anchors})},
        )
    }
    problems = []
    for anchor in anchors:
        where = f"anchor at event {anchor.seq} ({anchor.time})"
        stored = hashes.get(anchor.seq)
        if anchor.seq > head or stored is None:
            problems.append(f"{where}: the chain ends at event {head}: it was truncated")
        elif stored != anchor.hash:
            problems.append(
                f"{where}: event {anchor.seq} has hash {stored[:16]}…, the anchor records {anchor.hash[:16]}…: "
                "the chain was rewritten"
            )
    return problems
