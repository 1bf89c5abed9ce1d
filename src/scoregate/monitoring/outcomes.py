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
import pyarrow.compute as pc

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.monitoring.labels import REQUEST_KEY, _quote, _resolved_sql, input_field
from scoregate.monitoring.performance import Target, Task
from scoregate.monitoring.sources import THREADS

#: DuckDB's memory bound for a join; beyond it, it spills to a temporary folder.
MEMORY_LIMIT = "2GB"
#: Predictions one join may bring back: the joined rows are held in memory (about 50 bytes
#: each for a binary classifier), so a longer window is refused with the way to narrow it.
MAX_ROWS = 60_000_000


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


def _path(field: str) -> str:
    """A JSON path naming one member, as an SQL string literal."""
    path = '$."' + field.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "'" + path.replace("'", "''") + "'"


def join(
    log_folder: Path,
    target: Target,
    key: str | None,
    label_files: list[Path],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    logged: set[str] | None = None,
    max_rows: int | None = None,
) -> Joined:
    """``log_folder`` is ``<home>/predictions/model=<name>/version=<n>``; ``logged`` the output
    names the version declares (a prediction column is read only when declared)."""
    max_rows = max_rows or MAX_ROWS
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
    # one JSON parse per row: every output the join needs is extracted by one list of paths
    names = ["prediction"] if target.task is Task.REGRESSION else list(target.scores)
    has_pred = target.task is Task.REGRESSION or bool(
        target.prediction and (logged is None or target.prediction in logged)
    )
    if target.task is not Task.REGRESSION and has_pred:
        names.append(target.prediction)  # type: ignore[arg-type]
    paths = ", ".join(_path(n) for n in names)
    field = input_field(key) if key else None
    key_column = f", json_extract_string(inputs, {_path(field)}) AS k" if field else ""
    log_files = ", ".join(f"'{_quote(p)}'" for p in files)
    log_sql = f"""
        SELECT epoch_us(timestamp) AS ts, request_id, client_request_id, "row",
               json_extract_string(outputs, [{paths}]) AS o{key_column}
        FROM read_parquet([{log_files}], hive_partitioning = false) {where}
    """
    if target.task is Task.REGRESSION:
        picked = "TRY_CAST(log.o[1] AS DOUBLE) AS pred"
    else:
        picked = ", ".join(f"TRY_CAST(log.o[{i + 1}] AS DOUBLE) AS s{i}" for i in range(len(target.scores)))
        if has_pred:
            picked += f", log.o[{len(target.scores) + 1}] AS pred"
    if label_files:
        labels = _resolved_sql(label_files)
        if key is None or key == REQUEST_KEY:
            joins = (
                'LEFT JOIN lab a ON a.id = log.request_id AND a."row" = log."row" '
                'LEFT JOIN lab b ON b.id = log.client_request_id AND b."row" = log."row"'
            )
        else:
            joins = 'LEFT JOIN lab a ON a.id = log.k AND a."row" = 0 LEFT JOIN lab b ON FALSE'
        # a classifier's labels come back as the index of their class (validated at ingest)
        value = "coalesce(a.label, b.label)"
        if target.task is not Task.REGRESSION:
            classes = ", ".join("'" + c.replace("'", "''") + "'" for c in target.classes)
            value = f"CAST(list_position([{classes}], {value}) - 1 AS INTEGER)"
        label_cols = f"""{value} AS label, epoch_us(coalesce(a."at", b."at")) AS "at",
                        (a.id IS NOT NULL OR b.id IS NOT NULL) AS labelled,
                        CASE WHEN a.id IS NOT NULL THEN hash(a.id, a."row") ELSE hash(b.id, b."row") END AS lkey"""
    else:
        value = "NULL::DOUBLE" if target.task is Task.REGRESSION else "NULL::INTEGER"
        labels, joins = None, ""
        label_cols = f'{value} AS label, NULL::BIGINT AS "at", FALSE AS labelled, NULL::UBIGINT AS lkey'
    sql = f"""
        WITH log AS ({log_sql}){f", lab AS ({labels})" if labels else ""}
        SELECT log.ts, {picked}, {label_cols}
        FROM log {joins}
    """
    try:
        with connect() as con:
            count_sql = f"SELECT count(*) FROM read_parquet([{log_files}], hive_partitioning = false) {where}"
            ((rows,),) = con.sql(count_sql, params=params or None).fetchall()
            if rows > max_rows:
                raise InvalidInputError(
                    f"{rows:,} logged predictions in the window, more than the {max_rows:,} one computation "
                    "takes: give --since or --between to narrow it"
                )
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
    raw_label = table.column("label")
    if regression:
        label = raw_label.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        index = pc.fill_null(raw_label, -1).to_numpy()
        names = np.asarray([*target.classes, None], dtype=object)
        label = names[np.where(index < 0, len(target.classes), index)]
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
    at = pc.fill_null(table.column("at"), 0).to_numpy()
    return Joined(
        timestamp_us=table.column("ts").to_numpy(zero_copy_only=False).astype(np.int64),
        labelled=labelled,
        label=label,
        label_at_us=at.astype(np.int64),
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
