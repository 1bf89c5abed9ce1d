"""Ground-truth labels: validated, stored once, joined later with the prediction log.

Labels belong to a model (not one version): the outcome of a decision does not depend on
which version made it, and a shadow and a primary version that scored the same request
are both judged by it. Each ingest is a batch: the validated labels as one Parquet file
``<home>/labels/model=<name>/<sha256>.parquet`` (written under a dot-name, synced,
renamed), bound to the model by a ``labels.ingest`` audit event carrying its digest.

Why Parquet files plus audit events, not a table: labels are joined with the prediction
log, which is Parquet, by DuckDB; a million-row label batch is a columnar file it scans
in parallel, where rows in the metadata database (PostgreSQL in team mode) would be
pulled over the wire on every join. The audit log is the index: a file no event names
is ignored, an edited one fails its digest, and the hash chain makes the index itself
tamper-evident.

A label is keyed by ``(id, row)``: ``id`` is the request id (the server's or the
client's correlation id) or a business key logged among the inputs; ``row`` numbers the
rows of a request of several (0 for a single-row request). A second label for a key is
a conflict unless ``replace`` (audited with the count replaced); the same label again is
kept once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sqlalchemy import select

from scoregate.errors import ConflictError, IntegrityError, InvalidInputError
from scoregate.files import fsync_dir, open_private, private_dir
from scoregate.governance.access import Permission
from scoregate.monitoring.performance import Target, Task
from scoregate.registry import Registry
from scoregate.registry.artifacts import sha256_file
from scoregate.registry.tables import ModelRow

INGEST_ACTION = "labels.ingest"
LABELS_DIR = "labels"
#: Labels one file may hold: a bound on the memory an ingest takes (about 60 bytes a label).
MAX_LABELS = 50_000_000
MAX_ID_CHARS = 256
#: A label observed this far in the future is refused (clock skew allowance).
FUTURE_SLACK = dt.timedelta(minutes=5)
REQUEST_KEY = "request"
_INPUT_KEY = re.compile(r"input\.([A-Za-z_][A-Za-z0-9_.\-]{0,127})")


def check_key(key: str) -> str:
    """``request`` or ``input.NAME``; ValueError naming the rule."""
    if key == REQUEST_KEY or _INPUT_KEY.fullmatch(key):
        return key
    raise ValueError(f"invalid --key {key!r}: expected 'request' or 'input.FIELD' (a logged input)")


def input_field(key: str) -> str | None:
    match = _INPUT_KEY.fullmatch(key)
    return match.group(1) if match else None


@dataclass(frozen=True, slots=True)
class LabelColumns:
    """Which columns of a label file hold what."""

    id: str
    label: str
    at: str | None = None  # when the outcome was observed; else the ingest time
    row: str | None = None  # the row within a request of several; else 0


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    digest: str
    rows: int
    key: str
    time: dt.datetime
    actor: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    model: str
    digest: str | None  # None: every label was already stored
    rows: int  # labels in the file
    stored: int  # newly stored (including replacements)
    replaced: int
    unchanged: int  # already stored with the same label


def label_schema(task: Task) -> pa.Schema:
    value = pa.float64() if task is Task.REGRESSION else pa.string()
    return pa.schema([("id", pa.string()), ("row", pa.int32()), ("label", value), ("at", pa.timestamp("us", tz="UTC"))])


def model_folder(home: Path, model: str) -> Path:
    return Path(home) / LABELS_DIR / f"model={model}"


def batch_path(home: Path, model: str, digest: str) -> Path:
    return model_folder(home, model) / f"{digest}.parquet"


# -- reading and validating a file ----------------------------------------------------------------------------


def _read(path: Path, columns: LabelColumns) -> pa.Table:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidInputError(f"cannot read {path}: no such file")
    wanted = [c for c in (columns.id, columns.label, columns.at, columns.row) if c is not None]
    if len(set(wanted)) != len(wanted):
        raise InvalidInputError("--id, --label, --at and --row must name different columns")
    try:
        if suffix in (".parquet", ".pq"):
            meta = pq.read_metadata(path)
            names = pq.read_schema(path).names
            if meta.num_rows > MAX_LABELS:
                raise InvalidInputError(f"{path} has {meta.num_rows:,} rows; one ingest takes at most {MAX_LABELS:,}")
            _check_columns(path, wanted, names)
            return pq.read_table(path, columns=wanted)
        if suffix == ".csv":
            names = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16)).schema.names
            _check_columns(path, wanted, names)
            types = {c: pa.string() for c in wanted if c != columns.row}
            table = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted, column_types=types, strings_can_be_null=True
                ),
            )
            if table.num_rows > MAX_LABELS:
                raise InvalidInputError(f"{path} has {table.num_rows:,} rows; one ingest takes at most {MAX_LABELS:,}")
            return table
    except pa.ArrowException as exc:
        raise InvalidInputError(f"cannot read {path}: {_first_line(exc)}") from None
    raise InvalidInputError(f"cannot read {path}: unsupported extension {suffix or '(none)'!r}; use .parquet or .csv")


def _check_columns(path: Path, wanted: list[str], names: list[str]) -> None:
    missing = [c for c in wanted if c not in names]
    if missing:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise InvalidInputError(f"{path} lacks the column(s) {', '.join(missing)} (it has: {shown})")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _where(path: Path, column: str, mask: np.ndarray, values: Any, rule: str) -> InvalidInputError:
    """One line naming the column, the rule, how many rows break it and the first (1-based data row)."""
    bad = np.flatnonzero(mask)
    first = int(bad[0])
    value = values[first]
    return InvalidInputError(
        f"{path}: column {column!r} {rule}: {len(bad):,} row(s), the first is row {first + 1} ({value!r})"
    )


def _ids(path: Path, column: str, array: pa.ChunkedArray) -> np.ndarray:
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)):
        raise InvalidInputError(f"{path}: column {column!r} holds {kind}, expected text or whole-number ids")
    text = pc.cast(array, pa.string())
    values = text.to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.utf8_length(text), -1).to_numpy()
    bad = (lengths <= 0) | (lengths > MAX_ID_CHARS)
    if bad.any():
        raise _where(path, column, bad, values, f"must hold an id of 1 to {MAX_ID_CHARS} characters")
    return values


def _rows(path: Path, column: str | None, array: pa.ChunkedArray | None, n: int) -> np.ndarray:
    if column is None or array is None:
        return np.zeros(n, dtype=np.int32)
    if not pa.types.is_integer(array.type):
        raise InvalidInputError(f"{path}: column {column!r} holds {array.type}, expected row numbers (0, 1, ...)")
    values = pc.fill_null(pc.cast(array, pa.int64()), -1).to_numpy()
    bad = (values < 0) | (values > 2**31 - 1)
    if bad.any():
        raise _where(path, column, bad, values, "must hold a row number from 0 to 2147483647")
    return values.astype(np.int32)


def _class_labels(path: Path, column: str, array: pa.ChunkedArray, classes: tuple[str, ...]) -> np.ndarray:
    """Labels as the class names of the version's scores (``proba_<class>``): ``1``, ``1.0`` and
    ``true`` are the classes they read as; anything else is refused."""
    kind = array.type
    if pa.types.is_boolean(kind):
        text = pc.if_else(array, "True", "False")
    elif pa.types.is_floating(kind):
        floats = array.to_numpy(zero_copy_only=False)
        whole = np.isfinite(floats) & (floats == np.round(floats))
        text = pa.array([str(int(v)) if w else str(v) for v, w in zip(floats, whole, strict=True)], pa.string())
        text = pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text)
    elif pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = pc.cast(array, pa.string())
    else:
        raise InvalidInputError(f"{path}: column {column!r} holds {kind}, expected class labels")
    values = np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)
    known = set(classes)
    unique = set(pc.unique(pc.drop_null(text)).to_pylist())
    mapping: dict[str, str] = {}
    folded = {c.casefold(): c for c in classes}
    for value in unique - known:
        stripped = value.strip()
        try:
            number = float(stripped)
            alias = str(int(number)) if number == int(number) else None
        except (ValueError, OverflowError):
            alias = None
        alias = alias if alias in known else folded.get(stripped.casefold())
        if alias is not None:
            mapping[value] = alias
    if mapping:
        values = np.asarray([mapping.get(v, v) for v in values], dtype=object)
    bad = np.asarray([v is None or v not in known for v in values])
    if bad.any():
        raise _where(path, column, bad, values, f"must hold one of the classes {', '.join(classes)}")
    return values


def _values(path: Path, column: str, array: pa.ChunkedArray) -> np.ndarray:
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        import pandas as pd

        text = array.to_numpy(zero_copy_only=False)
        numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        numbers = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        text = numbers
    else:
        raise InvalidInputError(f"{path}: column {column!r} holds {kind}, expected numbers")
    bad = ~np.isfinite(numbers)
    if bad.any():
        raise _where(path, column, bad, text, "must hold a finite number")
    return numbers


def _times(path: Path, column: str | None, array: pa.ChunkedArray | None, n: int, now: dt.datetime) -> np.ndarray:
    """Microseconds since the epoch (UTC): ISO 8601 text (UTC when no offset) or Parquet timestamps."""
    stamp = int(now.timestamp() * 1e6)
    if column is None or array is None:
        return np.full(n, stamp, dtype=np.int64)
    import pandas as pd

    kind = array.type
    if pa.types.is_timestamp(kind):
        series = pd.Series(array.to_pandas())
        series = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
        raw = series.astype(object).to_numpy()
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_date(kind):
        raw = array.to_numpy(zero_copy_only=False)
        series = pd.to_datetime(pd.Series(raw, dtype=object), errors="coerce", utc=True, format="ISO8601")
    else:
        raise InvalidInputError(f"{path}: column {column!r} holds {kind}, expected ISO 8601 date-times")
    bad = series.isna().to_numpy()
    if bad.any():
        raise _where(path, column, bad, raw, "must hold an ISO 8601 date or date-time")
    micros = series.dt.as_unit("us").astype("int64").to_numpy()
    late = micros > stamp + int(FUTURE_SLACK.total_seconds() * 1e6)
    if late.any():
        raise _where(path, column, late, raw, "must not be in the future")
    return micros


def read_labels(path: Path, columns: LabelColumns, target: Target, *, now: dt.datetime | None = None) -> pa.Table:
    """The file's labels as a table of :func:`label_schema`, or one line naming what is wrong."""
    now = now or dt.datetime.now(dt.UTC)
    table = _read(Path(path), columns)
    n = table.num_rows
    if n == 0:
        raise InvalidInputError(f"{path} has no rows")
    ids = _ids(path, columns.id, table.column(columns.id))
    rows = _rows(path, columns.row, table.column(columns.row) if columns.row else None, n)
    if target.task is Task.REGRESSION:
        labels: np.ndarray = _values(path, columns.label, table.column(columns.label))
    else:
        labels = _class_labels(path, columns.label, table.column(columns.label), target.classes)
    at = _times(path, columns.at, table.column(columns.at) if columns.at else None, n, now)
    schema = label_schema(target.task)
    out = pa.table(
        [
            pa.array(ids, pa.string()),
            pa.array(rows, pa.int32()),
            pa.array(labels, schema.field("label").type),
            pa.array(at, pa.int64()).cast(schema.field("at").type),
        ],
        schema=schema,
    )
    _check_unique(path, columns, out)
    return out


def _check_unique(path: Path, columns: LabelColumns, table: pa.Table) -> None:
    counts = table.group_by(["id", "row"]).aggregate([("id", "count")])
    twice = counts.filter(pc.greater(counts.column("id_count"), 1))
    if twice.num_rows:
        first = twice.slice(0, 1).to_pylist()[0]
        where = f" row {first['row']}" if columns.row else ""
        raise InvalidInputError(
            f"{path}: {twice.num_rows:,} id(s) appear more than once in column {columns.id!r} "
            f"(the first is {first['id']!r}{where}, {first['id_count']} times); give each a single label"
        )


# -- the store ---------------------------------------------------------------------------------------------------


def batches(session: Any, model: str) -> list[Batch]:
    """The model's label batches in ingest order (the audit log is the index)."""
    from scoregate.governance.audit import iter_events

    return [
        Batch(
            seq=e.seq,
            digest=e.after["batch_digest"],
            rows=int(e.after["stored"]),
            key=e.after["key"],
            time=e.time,
            actor=e.actor,
        )
        for e in iter_events(session, subject=model, action=INGEST_ACTION)
    ]


def verified_paths(home: Path, model: str, found: list[Batch]) -> list[Path]:
    """The batches' files, each re-hashed: a missing or edited one is named, never read."""
    paths = []
    for batch in found:
        path = batch_path(home, model, batch.digest)
        if not path.is_file():
            raise IntegrityError(f"the label batch sha256:{batch.digest[:12]} of {model} is missing ({path})")
        if sha256_file(path) != batch.digest:
            raise IntegrityError(
                f"the label batch {path} no longer hashes to sha256:{batch.digest[:12]}: it was edited after ingest"
            )
        paths.append(path)
    return paths


def _write(folder: Path, table: pa.Table) -> tuple[str, Path, bool]:
    """Write ``table`` as ``<sha256>.parquet`` in ``folder`` (synced, renamed into place);
    returns (digest, path, whether the file is new)."""
    for created in private_dir(folder):
        fsync_dir(created.parent)
    tmp = folder / f".batch-{uuid.uuid4().hex}.tmp"
    digest = hashlib.sha256()
    try:
        with os.fdopen(open_private(tmp), "wb") as handle:
            pq.write_table(table, handle, compression="zstd")
            handle.flush()
            os.fsync(handle.fileno())
        with open(tmp, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        path = folder / f"{digest.hexdigest()}.parquet"
        new = not path.exists()
        os.replace(tmp, path)
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest(), path, new


def _compare(new: pa.Table, existing: list[Path]) -> tuple[pa.Table, int, int, dict[str, Any] | None]:
    """Split ``new`` against the stored labels: (labels to store, replaced, unchanged, first conflict)."""
    if not existing:
        return new, 0, 0, None
    from scoregate.monitoring.outcomes import connect

    with connect() as con:
        con.register("new_labels", new)
        stored = _resolved_sql(existing)
        found = con.sql(
            f"""
            SELECT n.id, n."row" AS "row", CAST(n.label AS VARCHAR) AS new_label, CAST(s.label AS VARCHAR) AS old_label,
                   n.label IS NOT DISTINCT FROM s.label AS same
            FROM new_labels n JOIN ({stored}) s ON s.id = n.id AND s."row" = n."row"
            """
        ).to_arrow_table()
    if not found.num_rows:
        return new, 0, 0, None
    same = found.column("same").to_numpy(zero_copy_only=False)
    changed = found.filter(pc.invert(found.column("same")))
    first = changed.slice(0, 1).to_pylist()[0] if changed.num_rows else None
    unchanged_keys = found.filter(found.column("same"))
    if unchanged_keys.num_rows:
        keys = unchanged_keys.select(["id", "row"]).append_column("drop", pa.repeat(True, unchanged_keys.num_rows))
        marked = new.join(keys, ["id", "row"], join_type="left outer")
        new = marked.filter(pc.is_null(marked.column("drop"))).drop_columns(["drop"]).select(new.schema.names)
    return new, int((~same).sum()), int(same.sum()), first


def _resolved_sql(paths: list[Path]) -> str:
    """SQL for the stored labels, one per (id, row): the latest batch's."""
    files = ", ".join(f"'{_quote(p)}'" for p in paths)
    order = " ".join(f"WHEN '{_quote(p)}' THEN {i}" for i, p in enumerate(paths))
    return f"""
        SELECT id, "row", label, "at" FROM read_parquet([{files}], filename = true)
        QUALIFY row_number() OVER (PARTITION BY id, "row" ORDER BY CASE filename {order} END DESC) = 1
    """


def _quote(path: Path) -> str:
    return str(path).replace("'", "''")


def ingest(
    registry: Registry,
    ref: str,
    path: Path,
    columns: LabelColumns,
    *,
    key: str = REQUEST_KEY,
    replace: bool = False,
    now: dt.datetime | None = None,
) -> IngestResult:
    """Validate ``path`` and store its labels for the model ``ref`` names, in one audited step."""
    from scoregate.monitoring.performance import target_of

    check_key(key)
    version = registry.resolve(ref)
    registry.whoami().require(Permission.REGISTER, subject=version.name)  # before reading the file
    target = target_of(version.output_schema, version.ref)
    table = read_labels(Path(path), columns, target, now=now)
    source_sha = sha256_file(Path(path))
    home = Path(registry.settings.home)
    folder = model_folder(home, version.name)
    with registry.mutation(Permission.REGISTER, version.name) as (session, actor):
        model = registry.model_row(session, version.name)
        # one ingest of a model at a time (SQLite already holds its write lock)
        session.execute(select(ModelRow.id).where(ModelRow.id == model.id).with_for_update())
        found = batches(session, version.name)
        if found and found[0].key != key:
            raise ConflictError(
                f"the labels of {version.name} are keyed by {found[0].key!r}; this file was given --key {key!r}"
            )
        to_store, replaced, unchanged, conflict = _compare(table, verified_paths(home, version.name, found))
        if conflict is not None and not replace:
            raise ConflictError(
                f"{replaced:,} label(s) in {path} differ from stored ones (the first: id {conflict['id']!r} row "
                f"{conflict['row']}, stored {conflict['old_label']!r}, new {conflict['new_label']!r}); "
                "give --replace to replace them (audited)"
            )
        if not to_store.num_rows:
            return IngestResult(version.name, None, table.num_rows, 0, 0, unchanged)
        digest, written, new_file = _write(folder, to_store)
        try:
            registry.record_event(
                session,
                actor,
                INGEST_ACTION,
                version.name,
                before={"replaced": replaced} if replaced else None,
                after={
                    "batch_digest": digest,
                    "stored": to_store.num_rows,
                    "replaced": replaced,
                    "unchanged": unchanged,
                    "key": key,
                    "task": target.task.value,
                    "version": version.version,
                    "source": {"uri": str(Path(path).absolute()), "sha256": source_sha, "rows": table.num_rows},
                    "columns": {"id": columns.id, "label": columns.label, "at": columns.at, "row": columns.row},
                },
                reason="--replace" if replaced else None,
            )
            session.flush()
        except BaseException:
            if new_file:
                written.unlink(missing_ok=True)
            raise
    return IngestResult(version.name, digest, table.num_rows, to_store.num_rows, replaced, unchanged)


def stored_labels(registry: Registry, model: str) -> tuple[list[Batch], list[Path]]:
    """The model's batches and their verified files."""
    with registry.reading() as session:
        found = batches(session, model)
    return found, verified_paths(Path(registry.settings.home), model, found)
