"""The tamper-evident audit log: a SHA-256 hash chain over every registry mutation.

An event is written in the transaction of the change it records, so neither exists
without the other. Writers queue on the single ``audit_head`` row (a row lock on
PostgreSQL; on SQLite the write lock taken at BEGIN), which keeps ``seq`` gap-free
under concurrent processes, and the head's copy of the last seq and hash is what
makes a deleted tail detectable. The chain proves the log is internally consistent;
a wholesale rewrite (events and head together) is only caught against a hash kept
elsewhere: every webhook payload and every ``export`` carries one.

Canonical form: one JSON object of the ten fields other than ``hash``, keys sorted, no
whitespace, UTF-8; strings as ``json.dumps(..., ensure_ascii=False)`` writes them, time
as UTC ISO 8601 with microseconds, ``before``/``after`` as ``canonical_json`` text
(orjson with sorted keys; stored verbatim, so verifying re-serialises nothing).
``hash`` is the hex SHA-256 of those bytes; the first event's ``prev_hash`` is 64 zeros.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import Path, PurePath
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Connection, Engine, insert, select, text, update
from sqlalchemy.orm import Session

from scoregate.errors import InvalidInputError
from scoregate.registry.tables import AuditEventRow, AuditHeadRow, utcnow

#: ``prev_hash`` of the first event.
GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "subject", "before", "after", "reason", "request_id", "prev_hash", "hash")

_EVENTS = AuditEventRow.__table__
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

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON values (``time`` as canonical ISO text)."""
        return {name: iso_time(self.time) if name == "time" else getattr(self, name) for name in FIELDS}

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
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What was written; keep ``last_hash`` elsewhere to anchor the chain."""

    events: int
    last_seq: int
    last_hash: str


# -- canonical form ------------------------------------------------------------------------------


def iso_time(value: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds; a naive value (SQLite hands those back) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


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
) -> str:
    """The canonical JSON of an event, by concatenation because ``verify`` runs it per row.

    ``before``/``after`` are canonical JSON text (or None); ``time`` is ``iso_time`` text.
    Without floats in before/after this equals ``json.dumps(fields, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)``; orjson writes exponents as ``1e16``, not ``1e+16``.
    """
    head = (
        f'{{"action":{_quote(action)},"actor":{_quote(actor)},'
        f'"after":{"null" if after is None else after},"before":{"null" if before is None else before},'
    )
    if hash_ is not None:
        head += f'"hash":{_quote(hash_)},'
    return (
        f'{head}"prev_hash":{_quote(prev_hash)},"reason":{"null" if reason is None else _quote(reason)},'
        f'"request_id":{"null" if request_id is None else _quote(request_id)},"seq":{seq},'
        f'"subject":{_quote(subject)},"time":{_quote(time)}}}'
    )


def event_hash(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()


def _json_or_none(value: Any) -> str | None:
    return None if value is None else canonical_json(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return iso_time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal | UUID | PurePath):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- writing -------------------------------------------------------------------------------------


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

    Call it late in the transaction: on PostgreSQL it holds the head row lock until
    commit, so audited writers run one at a time from here on.
    """
    draft = EventDraft(actor, action, subject, before, after, reason, request_id)
    return append_events(session, [draft])[0]


def append_events(session: Session, drafts: Sequence[EventDraft]) -> list[AuditEvent]:
    """Append several events under one head lock and one bulk insert (imports, benchmarks)."""
    prepared = [_prepare(d) for d in drafts]  # validate before taking the lock
    if not prepared:
        return []
    last_seq, last_hash = _lock_head(session)
    rows: list[dict[str, Any]] = []
    for actor, action, subject, before, after, reason, request_id in prepared:
        last_seq += 1
        now = utcnow()
        line = canonical_event(
            last_seq, iso_time(now), actor, action, subject, before, after, reason, request_id, last_hash
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
            }
        )
        last_hash = digest
    session.execute(insert(_EVENTS), rows)
    session.execute(update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(last_seq=last_seq, last_hash=last_hash))
    events = [_to_event(row) for row in rows]
    from scoregate.governance.webhooks import enqueue  # webhooks imports this module

    enqueue(session, events)
    return events


def _prepare(draft: EventDraft) -> tuple[str, str, str, str | None, str | None, str | None, str | None]:
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


def _lock_head(session: Session) -> tuple[int, str]:
    """The last seq and hash, locked until the transaction ends."""
    if session.get_bind().dialect.name == "sqlite":
        # Take the write lock before reading, even if the caller began a deferred transaction.
        session.execute(update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(last_seq=_HEAD.c.last_seq))
    query = select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == _HEAD_ID).with_for_update()
    row = session.execute(query).one_or_none()
    if row is None:  # a schema made by create_all rather than the migration
        session.execute(
            text("INSERT INTO audit_head (id, last_seq, last_hash) VALUES (:id, 0, :genesis) ON CONFLICT DO NOTHING"),
            {"id": _HEAD_ID, "genesis": GENESIS},
        )
        row = session.execute(query).one()
    return int(row[0]), str(row[1])


def _to_event(row: Any) -> AuditEvent:
    get = row.get if isinstance(row, dict) else row._mapping.get
    before, after = get("before"), get("after")
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
    )


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


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


def _rows(connection: Connection, batch: int, lo: int | None = None, hi: int | None = None) -> Iterator[Sequence[Any]]:
    """Raw event rows in seq order (``lo``..``hi`` when given), ``time`` already canonical text."""
    if connection.dialect.name == "postgresql":
        time = """to_char("time" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\\:MI\\:SS.US') || '+00\\:00'"""
    else:  # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC here)
        time = """replace("time", ' ', 'T') || '+00\\:00'"""
    where = " AND ".join(clause for clause, bound in (("seq >= :lo", lo), ("seq <= :hi", hi)) if bound is not None)
    query = text(
        f'SELECT seq, {time}, actor, action, subject, "before", "after", reason, request_id, prev_hash, hash '
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


def _head(connection: Connection) -> tuple[int, str] | None:
    row = connection.execute(select(_HEAD.c.last_seq, _HEAD.c.last_hash).where(_HEAD.c.id == _HEAD_ID)).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


# -- verification and export ---------------------------------------------------------------------


def verify(source: Session | Engine | Connection, *, batch: int = 20_000, workers: int | None = None) -> VerifyResult:
    """Recompute the chain in seq order in constant memory; name the first event that is wrong.

    Catches an UPDATEd event (hash mismatch), a DELETEd one (gap), a deleted tail (the
    head records more), an INSERTed one (broken link, or a seq beyond the head), and a
    head that disagrees with the last event. An event rewritten with a recomputed hash
    shows up at the next event, whose ``prev_hash`` no longer links.

    Every link can be checked on its own, so a long chain given as an Engine is split
    into seq ranges checked by forked processes (``workers``; default: up to 4 CPUs
    from ``PARALLEL_FROM`` events on, in a single-threaded process).
    """
    with _snapshot(source) as connection:
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
    last, prev = 0, GENESIS
    for span in spans:
        if span.first_seq is None:
            continue
        if span.first_seq <= last:
            return _bad(last, span.first_seq, f"event {span.first_seq} appears twice or out of order")
        if span.first_seq > last + 1:
            return _bad(last, last + 1, f"event {last + 1} is missing (the next one is {span.first_seq})")
        if span.first_prev != prev:
            return _bad(last, span.first_seq, f"event {span.first_seq} does not link to event {last}")
        if span.bad is not None:
            return _bad(span.bad[0] - 1, *span.bad)
        last, prev = span.last_seq, span.last_hash
    if head is None:
        return VerifyResult(True, 0) if last == 0 else _bad(last, last, "the audit head row is missing")
    head_seq, head_hash = head
    if head_seq > last:
        return _bad(last, last + 1, f"events {last + 1}-{head_seq} are missing: the head records {head_seq} as last")
    if head_seq < last:
        return _bad(head_seq, head_seq + 1, f"event {head_seq + 1} is not in the head (it records {head_seq} as last)")
    if head_hash != prev:
        return _bad(last - 1, last, f"event {last} does not match the hash the head records")
    return VerifyResult(True, last)


#: Chains at least this long are verified by several processes (when given an Engine).
PARALLEL_FROM = 200_000


@dataclass(frozen=True, slots=True)
class _Span:
    """A seq range as scanned: its ends, for the caller to link to the neighbours, or its first fault."""

    first_seq: int | None
    first_prev: str | None
    last_seq: int
    last_hash: str
    bad: tuple[int, str] | None = None


def _scan(connection: Connection, lo: int | None, hi: int | None, batch: int) -> _Span:
    """Check every event of a range and every link inside it (the hot loop of ``verify``)."""
    first_seq = first_prev = None
    expected, prev, sha256, canonical = 0, "", hashlib.sha256, canonical_event
    for part in _rows(connection, batch, lo, hi):
        for seq, time, actor, action, subject, before, after, reason, request_id, prev_hash, digest in part:
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
            line = canonical(seq, time, actor, action, subject, before, after, reason, request_id, prev_hash)
            if sha256(line.encode()).hexdigest() != digest:
                bad = (seq, f"event {seq} was altered: its content does not match its hash")
                return _Span(first_seq, first_prev, seq - 1, prev, bad)
            prev = digest
            expected += 1
    return _Span(first_seq, first_prev, expected - 1, prev)


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
                    last_seq, last_hash = part[-1][0], part[-1][-1]
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return ExportSummary(count, last_seq, last_hash)


def verify_export(path: Path | str, *, last_hash: str | None = None) -> VerifyResult:
    """Check an exported file offline, without the database; ``last_hash`` (from ``export`` or a
    webhook receiver) also catches lines cut from the end."""
    expected, prev = 1, GENESIS
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                event = json.loads(line)
                if sorted(event) != sorted(FIELDS):
                    raise ValueError(f"fields {sorted(event)}")
                seq = event["seq"]
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
    return VerifyResult(True, expected - 1)
