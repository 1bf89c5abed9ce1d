"""Where monitored rows come from: Parquet and CSV files, read in record batches.

Memory stays flat in rows: Parquet is read batch by batch with buffered column reads
(``pre_buffer`` off, so a row group is never loaded whole ahead of time), CSV through
Arrow's streaming reader with the column types fixed by the schema (so a later block
cannot change a column's type, and a stray word in a numeric column is named). A file
is re-readable, because building a profile takes three passes; it is hashed on the first.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from scoregate.errors import InvalidInputError
from scoregate.monitoring.counts import Kind, describe

#: Rows per record batch: large enough that per-batch Python overhead vanishes, small
#: enough that a batch of 100 float columns is 50 MB.
BATCH_ROWS = 65_536
_READ_BUFFER = 1 << 20
#: Threads that count columns in parallel in batch monitoring (two cores is the design point).
THREADS = min(4, os.cpu_count() or 1)


@contextmanager
def worker_pool() -> Iterator[ThreadPoolExecutor | None]:
    """Threads for counting columns in parallel; None on one core."""
    if THREADS < 2:
        yield None
        return
    with ThreadPoolExecutor(THREADS, thread_name_prefix="monitor") as pool:
        yield pool


FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass(frozen=True, slots=True)
class Column:
    """A column a reader must deliver, and how it will be binned."""

    name: str
    kind: Kind
    boolean: bool = False  # true/false values: CSV text such as "True" is parsed, not taken as a label


@dataclass
class FileSource:
    """A Parquet or CSV file, read in record batches of the named columns; re-readable.

    Each full read also hashes the file (SHA-256, on a separate thread), so a result can
    name exactly the bytes it was computed from.
    """

    path: Path
    columns: Sequence[Column]
    optional: Sequence[Column] = ()  # read when present (output columns), else left out
    batch_rows: int = BATCH_ROWS
    sha256: str | None = field(default=None, init=False)
    rows: int | None = field(default=None, init=False)
    _hashed: tuple[int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise InvalidInputError(
                f"cannot read {self.path}: unsupported extension {self.path.suffix or '(none)'!r}; "
                f"use one of {', '.join(FORMATS)}"
            )
        if not self.path.is_file():
            raise InvalidInputError(f"cannot read {self.path}: no such file")
        names = self._names()
        missing = [c.name for c in self.columns if c.name not in names]
        if missing:
            raise InvalidInputError(f"{self.path} lacks the feature column(s) {', '.join(missing)}")
        self.present = [*self.columns, *(c for c in self.optional if c.name in names)]

    @property
    def uri(self) -> str:
        return str(self.path.absolute())

    def _names(self) -> list[str]:
        try:
            if self.format == "parquet":
                return list(pq.read_schema(self.path).names)
            reader = pacsv.open_csv(self.path, read_options=pacsv.ReadOptions(block_size=1 << 16))
            return list(reader.schema.names)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidInputError(f"cannot read {self.path}: {_first_line(exc)}") from None

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows, batch by batch. The first read also hashes the file; later reads (a profile
        takes three) check by size and modification time that it is still the file hashed."""
        stamp = self._stamp()
        digest = None
        if self.sha256 is None:
            digest = _Hasher(self.path)
            digest.start()
        elif stamp != self._hashed:
            raise InvalidInputError(f"{self.path} changed while it was being read")
        rows = 0
        try:
            reader = self._parquet() if self.format == "parquet" else self._csv()
            for batch in reader:
                rows += batch.num_rows
                if batch.num_rows:
                    yield batch
        except pa.ArrowException as exc:
            raise InvalidInputError(f"cannot read {self.path}: {_first_line(exc)}") from None
        finally:
            if digest is not None:
                digest.join()
        if rows == 0:
            raise InvalidInputError(f"{self.path} has no rows")
        if self._stamp() != stamp or (self.rows is not None and rows != self.rows):
            raise InvalidInputError(f"{self.path} changed while it was being read")
        self.rows = rows
        if digest is not None:
            self.sha256, self._hashed = digest.hexdigest, stamp

    def _stamp(self) -> tuple[int, int]:
        info = self.path.stat()
        return info.st_size, info.st_mtime_ns

    def _parquet(self) -> Iterator[pa.RecordBatch]:
        handle = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=_READ_BUFFER)
        schema = handle.schema_arrow
        for column in self.present:
            _check_type(self.path, column, schema.field(column.name).type)
        yield from handle.iter_batches(batch_size=self.batch_rows, columns=[c.name for c in self.present])

    def _csv(self) -> Iterator[pa.RecordBatch]:
        types = {c.name: pa.bool_() if c.boolean else _CSV_TYPES[c.kind] for c in self.present}
        reader = pacsv.open_csv(
            self.path,
            read_options=pacsv.ReadOptions(block_size=8 << 20),
            convert_options=pacsv.ConvertOptions(
                include_columns=[c.name for c in self.present], column_types=types, strings_can_be_null=True
            ),
        )
        yield from reader


_CSV_TYPES = {Kind.NUMERIC: pa.float64(), Kind.CATEGORICAL: pa.string(), Kind.UNTRACKED: pa.string()}


def _check_type(path: Path, column: Column, kind: pa.DataType) -> None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_null(kind):
        return
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ok = {
        Kind.NUMERIC: numeric,
        Kind.CATEGORICAL: text or pa.types.is_boolean(kind) or pa.types.is_integer(kind),
        Kind.UNTRACKED: True,
    }[column.kind]
    if not ok:
        wanted = "numbers" if column.kind is Kind.NUMERIC else "category labels"
        raise InvalidInputError(f"{path}: column {column.name!r} holds {describe(kind)}, expected {wanted}")


class _Hasher(threading.Thread):
    """SHA-256 of a file on its own thread (hashlib releases the interpreter lock)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True, name="monitor-sha256")
        self.path = path
        self.hexdigest: str | None = None

    def run(self) -> None:
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            while chunk := handle.read(_READ_BUFFER):
                digest.update(chunk)
        self.hexdigest = digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
