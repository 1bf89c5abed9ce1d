"""The prediction log as a source of current data: one version's rows in a time window.

The log (``registry/predictions.py``) keeps each row's inputs and outputs as JSON text.
They are decoded here a record batch at a time by Arrow's JSON reader (C++, with the
column types fixed by the schema), not by ``json.loads`` per row: the batch's strings are
joined into one newline-delimited buffer and parsed in one call. That costs about a
microsecond a row; a columnar layout of the inputs in the log (a column per feature)
would remove the parse altogether and is the change to make when live monitoring reads
the log at high rates.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.json as pajson

from scoregate.errors import InvalidInputError, NotFoundError
from scoregate.monitoring.counts import Kind
from scoregate.monitoring.sources import BATCH_ROWS
from scoregate.registry.predictions import PARTITION_SCHEMA, ROW_SCHEMA
from scoregate.schema import FeatureType

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([1-9][0-9]{0,6})([smhdw])")


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``15m``, ``24h``, ``7d`` ... before ``now``; ValueError naming the rule."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid --since {text!r}: expected a positive whole number and a unit (s, m, h, d, w), e.g. 24h"
        )
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)


def _instant(text: str, option: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid {option} {text!r}: expected an ISO 8601 date or date-time, e.g. 2026-11-25T12:00"
        ) from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_between(start: str, end: str) -> tuple[dt.datetime, dt.datetime]:
    """Two ISO 8601 instants (UTC when no offset is given), the first before the second."""
    a, b = _instant(start, "--between start"), _instant(end, "--between end")
    if not a < b:
        raise ValueError(f"invalid --between: {start} is not before {end}")
    return a, b


@dataclass(frozen=True, slots=True)
class LogColumn:
    name: str
    kind: Kind
    type: FeatureType

    @property
    def arrow_type(self) -> pa.DataType:
        if self.kind is Kind.NUMERIC:
            return pa.float64()
        if self.type is FeatureType.BOOL:
            return pa.bool_()
        if self.type is FeatureType.INT:
            return pa.int64()
        return pa.string()


@dataclass
class LogSource:
    """Rows of one model version from the prediction log under ``home``, in a time window."""

    home: Path
    model: str
    version: int
    inputs: Sequence[LogColumn]
    outputs: Sequence[LogColumn]
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    batch_rows: int = BATCH_ROWS
    rows: int = field(default=0, init=False)

    @property
    def uri(self) -> str:
        return str(Path(self.home) / "predictions" / f"model={self.model}" / f"version={self.version}")

    def batches(self) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
        """(inputs, outputs) record batches, decoded from the logged JSON."""
        folder = Path(self.uri)
        if not folder.is_dir():
            raise NotFoundError(f"no logged predictions of {self.model}@{self.version} (no folder {folder})")
        dataset = ds.dataset(
            Path(self.home) / "predictions",
            format="parquet",
            schema=pa.unify_schemas([ROW_SCHEMA, PARTITION_SCHEMA]),
            partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
            exclude_invalid_files=False,
            ignore_prefixes=["."],
        )
        condition = (ds.field("model") == self.model) & (ds.field("version") == self.version)
        stamp = ROW_SCHEMA.field("timestamp").type
        if self.since is not None:
            condition &= ds.field("timestamp") >= pa.scalar(self.since, type=stamp)
        if self.until is not None:
            condition &= ds.field("timestamp") < pa.scalar(self.until, type=stamp)
        input_schema = pa.schema([(c.name, c.arrow_type) for c in self.inputs])
        output_schema = pa.schema([(c.name, c.arrow_type) for c in self.outputs])
        self.rows = 0
        try:
            scanner = dataset.scanner(columns=["inputs", "outputs"], filter=condition, batch_size=self.batch_rows)
            for batch in scanner.to_batches():
                if not batch.num_rows:
                    continue
                self.rows += batch.num_rows
                yield _decode(batch.column(0), input_schema), _decode(batch.column(1), output_schema)
        except pa.ArrowException as exc:
            raise InvalidInputError(f"cannot read the prediction log {folder}: {str(exc).splitlines()[0]}") from None
        if self.rows == 0:
            raise NotFoundError(f"no logged predictions of {self.model}@{self.version} in the window")


def _decode(text: pa.Array, schema: pa.Schema) -> pa.RecordBatch:
    """Parse a column of JSON objects into a record batch of ``schema`` in one Arrow call."""
    if not len(schema):
        return pa.RecordBatch.from_arrays([], schema=schema)
    lines = pc.binary_join_element_wise(text, pa.scalar("\n"), pa.scalar(""))
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    body = lines.buffers()[2][int(offsets[0]) : int(offsets[-1])]
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pajson.read_json(pa.BufferReader(body), parse_options=options)
    if table.num_rows != len(text):
        raise InvalidInputError(f"the prediction log gave {table.num_rows} decoded rows for {len(text)}")
    return table.select(schema.names).combine_chunks().to_batches(max_chunksize=len(text))[0]
