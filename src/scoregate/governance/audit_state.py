"""Row images: what the audit log records of the audited tables, and how a stored row is
compared with it. Pure functions over plain values; ``audit`` and ``audit_checks`` do the I/O.

An image is a row's columns as JSON values (times as ``iso_time`` text). A value whose
canonical JSON is longer than ``LONG`` characters, a secret column, or a value that
itself looks like a digest is recorded as ``{"sha256": <hex of its canonical JSON>}``, so
images stay small and secrets never enter the log while any change is still detected.
An event's ``state`` is the canonical JSON of ``[[table, key, image or null], ...]``
(``null``: the transaction deleted the row), sorted by table and key. A column the image
does not name (added after the row was last written) is expected to be NULL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Table

import scoregate.governance.tables  # noqa: F401  (registers the governance tables on the metadata)
from scoregate.registry.tables import Base

#: Values whose canonical JSON is longer than this are recorded by digest.
LONG = 256
#: ``session.info`` key: (table, key) -> primary key values of audited rows written and not yet recorded.
TOUCHED = "scoregate.audit.touched"
#: ``session.info`` key: (table, key) of rows found (or made) as recorded in this transaction.
CHECKED = "scoregate.audit.checked"
_DIGEST = "sha256"
#: Lenient where ``canonical_json`` is strict: a stored NaN (JSON columns accept it) images as
#: null on both sides of a comparison instead of refusing the write or the read.
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME

Key = tuple[str, str]  # (table name, row key)


def audited_tables() -> dict[str, Table]:
    """Every table marked ``audited(...)``, by name."""
    return {name: t for name, t in sorted(Base.metadata.tables.items()) if "audited" in t.info}


def is_audited(table: Any) -> bool:
    return isinstance(table, Table) and "audited" in table.info


def secret_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if c.info.get("audit") == "digest")


def row_key(values: Iterable[Any]) -> str:
    """The key of a row from its primary-key values: ``3``, or ``[3,"owner"]`` for a composite key."""
    parts = list(values)
    if len(parts) == 1:
        return str(parts[0])
    return dumps(parts)


def primary_key(table: Table, row: Mapping[str, Any]) -> str:
    return row_key(row[c.name] for c in table.primary_key.columns)


# -- canonical values (shared with the events' before/after) -------------------------------------


def iso_time(value: dt.datetime) -> str:
    """UTC ISO 8601 with microseconds; a naive value (SQLite hands those back) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def jsonable(value: Any) -> Any:
    """The JSON value of a Python value orjson does not write itself (``default=``)."""
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


def dumps(value: Any) -> str:
    """Canonical JSON as images use it (sorted keys, no whitespace, ``iso_time`` for datetimes)."""
    return orjson.dumps(value, default=jsonable, option=_OPTIONS).decode()


# -- images --------------------------------------------------------------------------------------


def image(row: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The image of one row given as column -> value, as read from the database."""
    hidden = set(secrets)
    result: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, dt.datetime):
            value = iso_time(value)
        text = dumps(value)
        if name in hidden or len(text) > LONG or _looks_digested(value):
            value = {_DIGEST: hashlib.sha256(text.encode()).hexdigest()}
        result[name] = value
    return result


def _looks_digested(value: Any) -> bool:
    # A stored value shaped like a digest is itself digested, so it cannot stand in for one.
    return isinstance(value, dict) and _DIGEST in value and len(value) == 1


def encode_state(entries: Iterable[tuple[str, str, dict[str, Any] | None]]) -> str:
    return dumps(sorted([list(entry) for entry in entries], key=lambda e: (e[0], e[1])))


def decode_state(state: str) -> Iterator[tuple[Key, dict[str, Any] | None]]:
    """``((table, key), image)`` for each entry of an event's ``state`` text."""
    for table, key, recorded in orjson.loads(state):
        yield (table, key), recorded


# -- comparison ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDiff:
    column: str
    stored: Any
    recorded: Any


@dataclass(frozen=True, slots=True)
class RowMismatch:
    """A stored row that is not what the audit log recorded of it."""

    table: str
    key: str
    label: str
    kind: str  # "changed", "forged", "deleted", "revived", "status"
    seq: int | None = None
    fields: tuple[FieldDiff, ...] = ()
    note: str | None = None

    @property
    def message(self) -> str:
        """One line, e.g. ``aliases row credit-risk@production: version_id is 2, the audit log (event 14) says 1``."""
        head = f"{self.table} row {self.label}"
        if self.kind == "changed":
            said = f"the audit log (event {self.seq}) says"
            return f"{head}: " + "; ".join(
                f"{d.column} is {_show(d.stored)}, {said} {_show(d.recorded)}" for d in self.fields
            )
        if self.kind == "forged":
            return f"{head}: no audit event wrote it (inserted behind the platform's back)"
        if self.kind == "deleted":
            return f"{head} is gone: the audit log (event {self.seq}) records it"
        if self.kind == "revived":
            return f"{head} exists, but the audit log (event {self.seq}) records it deleted"
        return f"{head}: {self.note}"


def _show(value: Any, width: int = 80) -> str:
    if _looks_digested(value):
        return f"sha256:{str(value[_DIGEST])[:12]}…"
    text = dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def compare(
    table: str,
    key: str,
    label: str,
    stored: dict[str, Any] | None,
    recorded: tuple[int, dict[str, Any] | None] | None,
) -> RowMismatch | None:
    """A stored image (None: no such row) against the last recorded one (None: never written)."""
    if recorded is None:
        return None if stored is None else RowMismatch(table, key, label, "forged")
    seq, was = recorded
    if stored is None:
        return None if was is None else RowMismatch(table, key, label, "deleted", seq)
    if was is None:
        return RowMismatch(table, key, label, "revived", seq)
    diffs = tuple(
        FieldDiff(column, value, was.get(column))
        for column, value in stored.items()
        if dumps(value) != dumps(was.get(column))  # absent from the image: expected NULL
    )
    return RowMismatch(table, key, label, "changed", seq, diffs) if diffs else None


class Labels:
    """Names rows for people (``credit-risk@production``, not ``aliases 7``), from the images
    of the models and versions they refer to; falls back to the key."""

    def __init__(self, models: Mapping[int, str], versions: Mapping[int, tuple[int, int]]) -> None:
        self.models = models
        self.versions = versions

    def __call__(self, table: Table, key: str, row: Mapping[str, Any] | None) -> str:
        columns = table.info.get("audited") or ()
        if row is None or not columns or any(c not in row for c in columns):
            return key
        parts: list[str] = []
        glue = False
        for column in columns:
            value = row[column]
            if column == "model_id":
                text, next_glue = self.models.get(value, f"model {value}"), True
            elif column == "version_id":
                text, next_glue = self.version(value), False
            else:
                text, next_glue = str(value), False
            if glue and parts:
                parts[-1] += f"@{text}"
            else:
                parts.append(text)
            glue = next_glue
        return " ".join(parts)

    def version(self, version_id: Any) -> str:
        found = self.versions.get(version_id)
        if found is None:
            return f"version {version_id}"
        model_id, number = found
        return f"{self.models.get(model_id, f'model {model_id}')}@{number}"
