"""Reading one chunk of the input and scoring it: the work of a worker, whatever the engine.

A chunk is read on its own (a Parquet file's row groups, only the columns the job needs,
without pre-buffering, so memory follows the chunk and not the file; a text file's byte
range), validated and scored the way the server scores:

* a clean chunk takes :func:`scoregate.schema.prepare_frame`, the vectorised check of the
  same rules as the server's per-row :class:`~scoregate.schema.RecordValidator`, and
  :func:`scoregate.scoring.frame_predictor`, which hands the scorer the same input the
  server's :func:`~scoregate.scoring.records_predictor` builds;
* a chunk with any broken row (or a column of another type than its feature) is checked
  row by row with the server's own validator and its good rows scored through the
  server's own predictor; the broken rows go to the rejects with their violations.

So a row gets the same output, and the same verdict, in batch and over HTTP. A missing
value in a file (a null, or NaN in a float column) is a null, as ``prepare_frame`` reads it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from scoregate.batch.plan import Chunk, InputFile, InputFormat
from scoregate.errors import InvalidInputError, SchemaViolationError
from scoregate.flavors.base import Scorer
from scoregate.schema import FeatureType, ModelSchema, RecordValidator, Violation, prepare_frame
from scoregate.scoring import frame_predictor, output_arrays, records_predictor

#: The column of each output and reject row that gives its position in the job's input.
ROW_COLUMN = "_row"
VIOLATIONS_COLUMN = "_violations"
#: Parquet reads in record batches of at most this many rows (and a buffered stream, not pre-buffering).
READ_BATCH_ROWS = 65_536
READ_BUFFER = 1 << 20

_ARROW_FITS = {
    FeatureType.FLOAT: lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
    FeatureType.INT: lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
    FeatureType.BOOL: pa.types.is_boolean,
    FeatureType.CATEGORY: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
    FeatureType.STRING: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t),
    FeatureType.DATETIME: lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t),
}


@dataclass(frozen=True)
class TextRows:
    """Rows that are judged one by one: JSON values (JSON Lines, CSV text) and their kept columns."""

    records: list[Any]
    kept: pa.Table


@dataclass(frozen=True)
class Scored:
    """A chunk's outputs (``_row``, the kept columns, the model's outputs) and its rejects."""

    outputs: pa.Table
    rejects: pa.Table


class ChunkReader:
    """Reads chunks of one job: the features and the kept columns, nothing else."""

    def __init__(self, schema: ModelSchema, keep: Sequence[str]) -> None:
        self.schema = schema
        self.features = schema.feature_names
        self.keep = list(keep)

    @property
    def columns(self) -> list[str]:
        """The input columns a chunk reads: the features, then the kept columns not among them."""
        return self.features + [c for c in self.keep if c not in self.features]

    # --- reading ---------------------------------------------------------------------------------------

    def read(self, source: InputFile, chunk: Chunk, storage: dict[str, Any] | None = None) -> pa.Table | TextRows:
        """The chunk's rows: an Arrow table (Parquet, CSV) or JSON-like values (JSON Lines, CSV with bad values)."""
        fs, path = fsspec.core.url_to_fs(source.url, **(storage or {}))
        if source.format is InputFormat.PARQUET:
            return self._read_parquet(fs, path, chunk)
        with fs.open(path, "rb") as handle:
            handle.seek(chunk.start)
            data = handle.read(chunk.end - chunk.start)
            header = b""
            if source.format is InputFormat.CSV:
                handle.seek(0)
                header = handle.read(source.header_end)
        if source.format is InputFormat.JSONL:
            records = _json_lines(data, chunk)
            return TextRows(records, _table_of(records, self.keep))
        return self._read_csv(header, data, chunk, source.url)

    def _read_parquet(self, fs: Any, path: str, chunk: Chunk) -> pa.Table:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle, pre_buffer=False, buffer_size=READ_BUFFER)
            wanted = [c for c in self.columns if c in parquet.schema_arrow.names]
            batches = []
            skip, left = chunk.skip, chunk.rows
            size = min(READ_BATCH_ROWS, max(1, chunk.rows))
            for batch in parquet.iter_batches(batch_size=size, row_groups=chunk.row_groups, columns=wanted):
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                batch = batch.slice(skip, left)
                skip = 0
                batches.append(batch)
                left -= batch.num_rows
                if left <= 0:
                    break
            table = pa.Table.from_batches(batches, schema=parquet.schema_arrow.empty_table().select(wanted).schema)
        if table.num_rows != chunk.rows:
            raise InvalidInputError(f"chunk {chunk.index}: read {table.num_rows} rows, the plan has {chunk.rows}")
        return table

    def _read_csv(self, header: bytes, data: bytes, chunk: Chunk, url: str) -> pa.Table | TextRows:
        types = {f.name: _CSV_TYPES[f.type] for f in self.schema.features if f.type in _CSV_TYPES}
        wanted = self.columns
        try:
            table: pa.Table | TextRows = _parse_csv(header + data, wanted, types)
            rows = table.num_rows
        except pa.ArrowInvalid:  # a value that is not of its column's type: read as text, judged row by row
            text = _parse_csv(header + data, wanted, dict.fromkeys(wanted, pa.string()))
            rows = text.num_rows
            kept = text.select([c for c in self.keep]).append_column("_", pa.nulls(rows))
            table = TextRows(_coerced(text, self.schema), kept)
        if rows != chunk.rows:
            raise InvalidInputError(
                f"chunk {chunk.index} of {url}: {table.num_rows} CSV rows in {chunk.rows} lines (blank lines or "
                "line breaks inside quoted fields are not supported in batch: convert the file to Parquet)"
            )
        return table


class ChunkScorer(ChunkReader):
    """Scores chunks of one job with one loaded version."""

    def __init__(self, scorer: Scorer, schema: ModelSchema, keep: Sequence[str]) -> None:
        super().__init__(schema, keep)
        self.scorer = scorer
        self.validator = RecordValidator(schema)
        self._from_frame = frame_predictor(scorer, schema)
        self._from_records = records_predictor(scorer, self.validator)

    def score(self, rows: pa.Table | list[Any], first_row: int) -> Scored:
        if isinstance(rows, TextRows):
            return self._score_records(rows.records, first_row, rows.kept)
        if self._fits(rows.schema):
            try:
                frame = prepare_frame(self.schema, rows.select(self.features).to_pandas())
            except SchemaViolationError:
                pass  # some row breaks a rule: find which, row by row
            else:
                outputs = output_arrays(self._from_frame(frame), rows.num_rows)
                positions = np.arange(first_row, first_row + rows.num_rows, dtype=np.int64)
                return Scored(self._output_table(positions, rows, outputs), self._empty_rejects(rows))
        return self._score_records(records_of(rows, self.features), first_row, rows)

    def _fits(self, schema: pa.Schema) -> bool:
        return all(_ARROW_FITS[f.type](schema.field(f.name).type) for f in self.schema.features)

    def _score_records(self, records: list[Any], first_row: int, table: pa.Table) -> Scored:
        """The server's path: its validator on each row, its predictor on the good ones."""
        check = self.validator.check
        good: list[int] = []
        bad: list[tuple[int, list[Violation]]] = []
        for i, record in enumerate(records):
            if isinstance(record, _Unreadable):
                bad.append((i, [Violation("<row>", "json", record.message, first_row + i)]))
                continue
            problems = check(record, first_row + i)
            if problems:
                bad.append((i, problems))
            else:
                good.append(i)
        kept = [records[i] for i in good]
        outputs = output_arrays(self._from_records(kept), len(kept)) if kept else self._no_outputs()
        taken = table.take(pa.array(good, type=pa.int64()))
        positions = np.asarray(good, dtype=np.int64) + first_row
        bad_rows = pa.array([i for i, _ in bad], type=pa.int64())
        rejects = {ROW_COLUMN: pa.array(np.asarray([i for i, _ in bad], dtype=np.int64) + first_row)}
        for name in self.keep:
            rejects[name] = table.column(name).take(bad_rows)
        rejects[VIOLATIONS_COLUMN] = pa.array(
            [orjson.dumps([_violation(v) for v in problems]).decode() for _, problems in bad], type=pa.string()
        )
        return Scored(self._output_table(positions, taken, outputs), pa.table(rejects))

    def _output_table(self, positions: np.ndarray, rows: pa.Table, outputs: dict[str, np.ndarray]) -> pa.Table:
        columns: dict[str, Any] = {ROW_COLUMN: pa.array(positions, type=pa.int64())}
        for name in self.keep:
            columns[name] = rows.column(name)
        for name, values in outputs.items():
            columns[name] = pa.array(values, from_pandas=True) if values.dtype != object else pa.array(values.tolist())
        return pa.table(columns)

    def _empty_rejects(self, rows: pa.Table) -> pa.Table:
        columns: dict[str, Any] = {ROW_COLUMN: pa.array([], type=pa.int64())}
        for name in self.keep:
            columns[name] = pa.array([], type=rows.schema.field(name).type)
        columns[VIOLATIONS_COLUMN] = pa.array([], type=pa.string())
        return pa.table(columns)

    def _no_outputs(self) -> dict[str, np.ndarray]:
        """No row passed: the output columns still have their names and types, from one warm-up row."""
        from scoregate.serving.state import warmup_record

        record = warmup_record(self.schema)
        if self.validator.check(record, 0):
            return {}
        sample = output_arrays(self._from_records([record]), 1)
        return {name: values[:0] for name, values in sample.items()}


_CSV_TYPES = {
    FeatureType.FLOAT: pa.float64(),
    FeatureType.INT: pa.int64(),
    FeatureType.BOOL: pa.bool_(),
    FeatureType.CATEGORY: pa.string(),
    FeatureType.STRING: pa.string(),
}


def _parse_csv(data: bytes, wanted: list[str], types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(
        column_types={k: v for k, v in types.items() if k in wanted},
        include_columns=wanted,
        include_missing_columns=True,
        strings_can_be_null=True,
    )
    read = pacsv.ReadOptions(use_threads=False, block_size=max(1 << 20, len(data) + 1))
    return pacsv.read_csv(io.BytesIO(data), read_options=read, convert_options=convert)


class _Unreadable:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _json_lines(data: bytes, chunk: Chunk) -> list[Any]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if len(lines) != chunk.rows:
        raise InvalidInputError(f"chunk {chunk.index}: {len(lines)} lines, the plan has {chunk.rows}")
    records: list[Any] = []
    for line in lines:
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            records.append(_Unreadable(f"the line is not JSON: {str(exc)[:80]}"))
    return records


def records_of(table: pa.Table, features: list[str]) -> list[dict[str, Any]]:
    """The chunk's rows as JSON-like dicts (a float NaN is a null, as in a frame)."""
    columns = []
    for name in features:
        column = table.column(name)
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        elif pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns.append(column.to_pylist())
    return [dict(zip(features, values, strict=True)) for values in zip(*columns, strict=True)]


def _table_of(records: list[Any], keep: list[str]) -> pa.Table:
    columns = {}
    for name in keep:
        values = [r.get(name) if isinstance(r, dict) else None for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: kept as their JSON text
            columns[name] = pa.array([None if v is None else orjson.dumps(v).decode() for v in values])
    columns["_"] = pa.nulls(len(records))  # the row count, when nothing is kept
    return pa.table(columns)


def _violation(v: Violation) -> dict[str, Any]:
    return {"field": v.field, "rule": v.rule, "message": v.message}


def _coerced(table: pa.Table, schema: ModelSchema) -> list[dict[str, Any]]:
    """CSV text as JSON-like values: a number where the text is one, else the text itself (the
    validator then names it: ``expected a number, got str 'abc'``); an empty field is a null."""
    columns = []
    for feature in schema.features:
        values = table.column(feature.name).to_pylist()
        if feature.type in (FeatureType.FLOAT, FeatureType.INT):
            values = [_number(v) for v in values]
        elif feature.type is FeatureType.BOOL:
            values = [_BOOLS.get(v.lower(), v) if isinstance(v, str) else v for v in values]
        columns.append(values)
    names = schema.feature_names
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return value
    return number if math.isfinite(number) or text.lower() in ("inf", "-inf", "nan") else value
