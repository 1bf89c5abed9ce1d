"""The prediction log joined with its labels, by DuckDB.

One SQL query scans the version's Parquet log (only the columns it needs; the outputs'
JSON is parsed by DuckDB in C++), resolves the model's label batches to one label per
key (the latest batch wins: a replacement), and left-joins them, so every prediction
comes back, labelled or not (the estimate needs the unlabelled ones). DuckDB runs it
in parallel, in bounded memory, spilling to a temporary folder when the join does not
fit: the bound is :data:`MEMORY_LIMIT`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.monitoring.labels import REQUEST_KEY, _quote, _resolved_sql, input_field
from scoregate.monitoring.performance import Target, Task
from scoregate.monitoring.sources import THREADS

#: DuckDB's memory bound for a join; beyond it, it spills to a temporary folder.
MEMORY_LIMIT = "2GB"


@contextmanager
def connect() -> Iterator[Any]:
    import duckdb

    with tempfile.TemporaryDirectory(prefix="scoregate-duckdb-") as spill:
        con = duckdb.connect(
            ":memory:",
            config={
                "threads": max(THREADS, 1),
                "memory_limit": MEMORY_LIMIT,
                "temp_directory": spill,
                "enable_external_access": True,
            },
        )
        try:
            yield con
        finally:
            con.close()


@dataclass(frozen=True)
class Joined:
    """Every logged prediction of a version in a window, with its label when there is one."""

    timestamp_us: np.ndarray  # int64, the prediction's time
    labelled: np.ndarray  # bool
    label: np.ndarray  # class names (object) or values (float64); meaningless where not labelled
    label_at_us: np.ndarray  # int64; meaningless where not labelled
    scores: np.ndarray | None  # (n, classes) float64 for a classifier; NaN where not logged
    predicted: np.ndarray | None  # the logged prediction (class names or float64), None if not logged
    matched_labels: int  # distinct labels matched to a prediction here
    reused_labels: int  # labels matched to more than one prediction (a reused id)

    @property
    def rows(self) -> int:
        return len(self.timestamp_us)


def _json(column: str, field: str) -> str:
    path = '$."' + field.replace('"', '\\"') + '"'
    return f"json_extract_string({column}, '{path.replace(chr(39), chr(39) * 2)}')"


def join(
    log_folder: Path,
    target: Target,
    key: str | None,
    label_files: list[Path],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    logged: set[str] | None = None,
) -> Joined:
    """``log_folder`` is ``<home>/predictions/model=<name>/version=<n>``; ``logged`` the output
    names the version declares (a prediction column is read only when declared)."""
    files = sorted(Path(log_folder).glob("hour=*/*.parquet"))
    if not files:
        raise NotFoundError(f"no logged predictions under {log_folder}")
    clauses = []
    params: list[Any] = []
    if since is not None:
        clauses.append("timestamp >= ?")
        params.append(since.astimezone(dt.UTC))
    if until is not None:
        clauses.append("timestamp < ?")
        params.append(until.astimezone(dt.UTC))
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    outputs = []
    if target.task is Task.REGRESSION:
        outputs.append(f"TRY_CAST({_json('outputs', 'prediction')} AS DOUBLE) AS pred")
    else:
        outputs += [f"TRY_CAST({_json('outputs', s)} AS DOUBLE) AS s{i}" for i, s in enumerate(target.scores)]
        if target.prediction and (logged is None or target.prediction in logged):
            outputs.append(f"{_json('outputs', target.prediction)} AS pred")
    has_pred = any(o.endswith(" AS pred") for o in outputs)
    field = input_field(key) if key else None
    key_column = f", {_json('inputs', field)} AS k" if field else ""
    log_files = ", ".join(f"'{_quote(p)}'" for p in files)
    log_sql = f"""
        SELECT epoch_us(timestamp) AS ts, request_id, client_request_id, "row", {", ".join(outputs)}{key_column}
        FROM read_parquet([{log_files}], hive_partitioning = false) {where}
    """
    if label_files:
        labels = _resolved_sql(label_files)
        if key is None or key == REQUEST_KEY:
            joins = """LEFT JOIN lab a ON a.id = log.request_id AND a."row" = log."row"
                       LEFT JOIN lab b ON b.id = log.client_request_id AND b."row" = log."row" AND a.id IS NULL"""
        else:
            joins = 'LEFT JOIN lab a ON a.id = log.k AND a."row" = 0 LEFT JOIN lab b ON FALSE'
        label_cols = """coalesce(a.label, b.label) AS label, epoch_us(coalesce(a.at, b.at)) AS at,
                        (a.id IS NOT NULL OR b.id IS NOT NULL) AS labelled,
                        hash(coalesce(a.id, b.id), coalesce(a."row", b."row")) AS lkey"""
    else:
        value = "NULL::DOUBLE" if target.task is Task.REGRESSION else "NULL::VARCHAR"
        labels, joins = None, ""
        label_cols = f"{value} AS label, NULL::BIGINT AS at, FALSE AS labelled, NULL::UBIGINT AS lkey"
    picked = ", ".join(o.rsplit(" AS ", 1)[1] for o in outputs)
    sql = f"""
        WITH log AS ({log_sql}){f", lab AS ({labels})" if labels else ""}
        SELECT log.ts, {picked}, {label_cols}
        FROM log {joins}
    """
    try:
        with connect() as con:
            table = con.sql(sql, params=params or None).to_arrow_table()
    except Exception as exc:  # duckdb.Error: a damaged log or label file
        import duckdb

        if isinstance(exc, duckdb.Error):
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InvalidInputError(f"cannot join the prediction log {log_folder} with its labels: {first}") from None
        raise
    if table.num_rows == 0:
        raise NotFoundError(f"no logged predictions under {log_folder} in the window")
    labelled = table.column("labelled").to_numpy(zero_copy_only=False).astype(bool)
    regression = target.task is Task.REGRESSION
    label = table.column("label").to_numpy(zero_copy_only=False)
    label = label.astype(np.float64) if regression else np.asarray(label, dtype=object)
    scores = None
    if not regression:
        scores = np.column_stack(
            [table.column(f"s{i}").to_numpy(zero_copy_only=False).astype(np.float64) for i in range(len(target.scores))]
        )
    predicted = None
    if has_pred:
        raw = table.column("pred")
        predicted = raw.to_numpy(zero_copy_only=False).astype(np.float64) if regression else _classes(raw, target)
    keys = table.column("lkey").to_numpy(zero_copy_only=False)[labelled]
    unique, counts = np.unique(keys.astype(np.uint64), return_counts=True) if len(keys) else (keys, keys)
    at = table.column("at").to_numpy(zero_copy_only=False)
    return Joined(
        timestamp_us=table.column("ts").to_numpy(zero_copy_only=False).astype(np.int64),
        labelled=labelled,
        label=label,
        label_at_us=np.where(labelled, np.nan_to_num(at.astype(np.float64)), 0).astype(np.int64),
        scores=scores,
        predicted=predicted,
        matched_labels=len(unique),
        reused_labels=int(np.sum(counts > 1)) if len(keys) else 0,
    )


def _classes(raw: Any, target: Target) -> np.ndarray:
    """Logged predictions (JSON text: ``1``, ``"yes"``, ``true``) as the class names of the scores,
    mapped once per distinct value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    folded = {c.casefold(): c for c in target.classes}
    distinct = pc.unique(raw).to_pylist()

    def name(value: str | None) -> str | None:
        if value is None or value in target.classes:
            return value
        try:
            number = float(value)
            return str(int(number)) if number == int(number) else value
        except (ValueError, OverflowError):
            return folded.get(value.casefold(), value)

    mapped = pa.array([name(v) for v in distinct], pa.string())
    return np.asarray(
        mapped.take(pc.index_in(raw, value_set=pa.array(distinct, pa.string()))).to_numpy(zero_copy_only=False),
        dtype=object,
    )
