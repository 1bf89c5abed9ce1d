"""A batch job's plan: its inputs fingerprinted and cut into chunks before any row is scored.

The plan is made from what the inputs say about themselves (a Parquet footer's row
groups; for CSV and JSON Lines one streamed pass that hashes the file and notes where
every ``chunk_rows``-th line starts), so it is the same plan every time for the same
bytes. It is written once, in the manifest, before the first chunk: a resumed job reads
it back, re-fingerprints the inputs and refuses to go on if any changed, so the chunks it
still scores are cut from exactly the bytes the finished ones were.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from enum import StrEnum
from typing import Any

import fsspec
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from scoregate.errors import InvalidInputError

#: Bytes read at a time when hashing an input (and finding the line starts of a text one).
READ_BLOCK = 8 << 20
#: Largest rows per chunk: what one worker holds in memory at once.
MAX_CHUNK_ROWS = 5_000_000

MANIFEST_FORMAT = 1


class InputFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"


class OutputFormat(StrEnum):
    PARQUET = "parquet"
    CSV = "csv"


class Engine(StrEnum):
    LOCAL = "local"
    RAY = "ray"
    SPARK = "spark"


SUFFIXES = {".parquet": InputFormat.PARQUET, ".pq": InputFormat.PARQUET, ".csv": InputFormat.CSV}
SUFFIXES |= {".jsonl": InputFormat.JSONL, ".ndjson": InputFormat.JSONL}


class InputFile(BaseModel):
    """One input file as it was when the job was planned."""

    model_config = ConfigDict(frozen=True)

    url: str
    format: InputFormat
    size: int
    sha256: str
    rows: int
    #: Parquet: rows of each row group. Text: byte offset where the header ends (CSV) and
    #: where every chunk's first line starts, then the file's size.
    row_groups: list[int] | None = None
    header_end: int = 0
    line_starts: list[int] | None = None


class Chunk(BaseModel):
    """Rows ``first_row`` .. ``first_row + rows - 1`` of the job (positions over all inputs in order)."""

    model_config = ConfigDict(frozen=True)

    index: int
    file: int
    first_row: int
    rows: int
    #: Parquet: the row groups read, and the rows of them skipped first (a row group larger
    #: than a chunk is cut into several chunks).
    row_groups: list[int] | None = None
    skip: int = 0
    #: Text: the byte range of the chunk's lines.
    start: int = 0
    end: int = 0


class BatchOptions(BaseModel):
    """How a job scores: fixed in the manifest when planned, so a resume scores the same way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_rows: int = Field(100_000, ge=1, le=MAX_CHUNK_ROWS)
    keep: tuple[str, ...] = ()
    output_format: OutputFormat = OutputFormat.PARQUET
    max_reject_rate: float = Field(0.01, ge=0.0, le=1.0)
    log: bool = False


class Manifest(BaseModel):
    """Everything a job is, written before it starts: who asked, the version, the inputs, the chunks."""

    model_config = ConfigDict(frozen=True)

    format: int = MANIFEST_FORMAT
    job: str
    created_at: dt.datetime
    created_by: str | None
    name: str
    version: int
    flavor: str
    artifact_digest: str
    artifact_kind: str
    artifact_name: str
    schema_digest: str
    input_schema: dict[str, Any]
    input: str
    output: str
    options: BatchOptions
    inputs: list[InputFile]
    chunks: list[Chunk]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.inputs)


# --- finding the input files ----------------------------------------------------------------------


def input_files(url: str, storage_options: dict[str, Any] | None = None) -> list[tuple[str, InputFormat]]:
    """The files ``url`` names: one file, every data file of a folder, or a glob; sorted, one format."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if any(ch in path for ch in "*?["):
        paths = sorted(fs.glob(path))
    elif fs.isdir(path):
        paths = sorted(p for p in fs.find(path) if _format_of(p) is not None and not _hidden(p, path))
    elif fs.isfile(path):
        paths = [path]
    else:
        raise InvalidInputError(f"invalid INPUT {url}: no such file or folder")
    if not paths:
        raise InvalidInputError(f"invalid INPUT {url}: it holds no .parquet, .csv or .jsonl file")
    found: list[tuple[str, InputFormat]] = []
    for p in paths:
        kind = _format_of(p)
        if kind is None:
            raise InvalidInputError(f"invalid INPUT {url}: {p} is not .parquet, .csv or .jsonl")
        found.append((p if protocol in ("file", "local") else f"{protocol}://{p}", kind))
    kinds = {kind for _, kind in found}
    if len(kinds) > 1:
        raise InvalidInputError(f"invalid INPUT {url}: it mixes formats ({', '.join(sorted(kinds))}); use one")
    return found


def _format_of(path: str) -> InputFormat | None:
    name = path.rsplit("/", 1)[-1].lower()
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    return None


def _hidden(path: str, root: str) -> bool:
    relative = path[len(root) :].strip("/")
    return any(part.startswith((".", "_")) for part in relative.split("/"))


# --- fingerprints -----------------------------------------------------------------------------------


def fingerprint(
    url: str, kind: InputFormat, chunk_rows: int, storage_options: dict[str, Any] | None = None
) -> InputFile:
    """Size, SHA-256 and the row layout of one input file, in one streamed pass (plus the Parquet footer)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    digest = hashlib.sha256()
    size = 0
    lines = _LineStarts(chunk_rows, header=kind is InputFormat.CSV) if kind is not InputFormat.PARQUET else None
    try:
        with fs.open(path, "rb") as handle:
            while block := handle.read(READ_BLOCK):
                digest.update(block)
                if lines is not None:
                    lines.feed(block, size)
                size += len(block)
    except OSError as exc:
        raise InvalidInputError(f"cannot read input {url}: {exc}") from None
    if kind is InputFormat.PARQUET:
        try:
            with fs.open(path, "rb") as handle:
                meta = pq.ParquetFile(handle).metadata
        except Exception as exc:  # pyarrow raises ArrowInvalid and OSError for a damaged footer
            raise InvalidInputError(f"input {url} is not a readable Parquet file: {exc}") from None
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        return InputFile(
            url=url, format=kind, size=size, sha256=digest.hexdigest(), rows=sum(groups), row_groups=groups
        )
    assert lines is not None
    starts, rows, header_end = lines.finish(size)
    return InputFile(
        url=url,
        format=kind,
        size=size,
        sha256=digest.hexdigest(),
        rows=rows,
        header_end=header_end,
        line_starts=starts,
    )


class _LineStarts:
    """Where every ``every``-th data line starts, found while the file streams past.

    A line is what ends with a newline (or the file's end). CSV fields with line breaks
    inside quotes would be cut wrongly; a chunk whose parsed rows differ from its lines is
    refused when scored, naming the cause.
    """

    def __init__(self, every: int, *, header: bool) -> None:
        self.every = every
        self.header_end: int | None = None if header else 0
        self.lines = 0  # data lines seen so far
        self.starts: list[int] = [] if header else [0]
        self.last_byte = b"\n"

    def feed(self, block: bytes, offset: int) -> None:
        if not block:
            return
        position = 0
        if self.header_end is None:
            newline = block.find(b"\n")
            if newline < 0:
                self.last_byte = block[-1:]
                return
            self.header_end = offset + newline + 1
            self.starts.append(self.header_end)
            position = newline + 1
        while True:
            in_rest = block.count(b"\n", position)
            to_boundary = self.every - (self.lines % self.every)
            if in_rest < to_boundary:
                self.lines += in_rest
                break
            for _ in range(to_boundary):
                position = block.index(b"\n", position) + 1
            self.lines += to_boundary
            self.starts.append(offset + position)
        self.last_byte = block[-1:]

    def finish(self, size: int) -> tuple[list[int], int, int]:
        if self.header_end is None:  # no newline at all: a header only
            self.header_end = size
            self.starts.append(size)
        lines = self.lines
        if size > self.starts[-1] and self.last_byte != b"\n":
            lines += 1  # a last line without its newline
        if len(self.starts) > 1 and self.starts[-1] >= size:
            self.starts.pop()  # the file ends exactly at a boundary
        return [*self.starts, size], lines, self.header_end


# --- chunks -------------------------------------------------------------------------------------------


def plan_chunks(inputs: list[InputFile], chunk_rows: int) -> list[Chunk]:
    """Cut the inputs into chunks of at most ``chunk_rows`` rows, in order; no chunk spans two files."""
    chunks: list[Chunk] = []
    first = 0
    for number, f in enumerate(inputs):
        if f.format is InputFormat.PARQUET:
            assert f.row_groups is not None
            group: list[int] = []
            rows = 0
            for g, n in enumerate(f.row_groups):
                if n == 0:
                    continue
                if n > chunk_rows:  # a row group larger than a chunk: cut it
                    if group:
                        chunks.append(
                            Chunk(index=len(chunks), file=number, first_row=first, rows=rows, row_groups=group)
                        )
                        first += rows
                        group, rows = [], 0
                    for skip in range(0, n, chunk_rows):
                        take = min(chunk_rows, n - skip)
                        chunks.append(
                            Chunk(index=len(chunks), file=number, first_row=first, rows=take, row_groups=[g], skip=skip)
                        )
                        first += take
                    continue
                if rows + n > chunk_rows and group:
                    chunks.append(Chunk(index=len(chunks), file=number, first_row=first, rows=rows, row_groups=group))
                    first += rows
                    group, rows = [], 0
                group.append(g)
                rows += n
            if group:
                chunks.append(Chunk(index=len(chunks), file=number, first_row=first, rows=rows, row_groups=group))
                first += rows
            continue
        assert f.line_starts is not None
        remaining = f.rows
        for start, end in zip(f.line_starts, f.line_starts[1:], strict=False):
            take = min(chunk_rows, remaining)
            if take <= 0:
                break
            chunks.append(Chunk(index=len(chunks), file=number, first_row=first, rows=take, start=start, end=end))
            first += take
            remaining -= take
    return chunks


def check_columns(inputs: list[InputFile], features: list[str], keep: tuple[str, ...], storage: dict[str, Any]) -> None:
    """Refuse before the first chunk an input that lacks a feature or a kept column (every row would fail)."""
    for f in inputs:
        if f.format is InputFormat.JSONL:
            continue  # no header: a missing field is a rejected row
        fs, path = fsspec.core.url_to_fs(f.url, **storage)
        with fs.open(path, "rb") as handle:
            if f.format is InputFormat.PARQUET:
                names = set(pq.ParquetFile(handle).schema_arrow.names)
            else:
                import pyarrow.csv as pacsv

                header = handle.read(f.header_end)
                names = set(pacsv.read_csv(_bytes_io(header)).column_names) if header.strip() else set()
        missing = [c for c in features if c not in names]
        if missing:
            raise InvalidInputError(
                f"input {f.url} lacks the feature column(s) {', '.join(missing)}: every row would be rejected"
            )
        lacking = [c for c in keep if c not in names]
        if lacking:
            raise InvalidInputError(f"invalid --keep: input {f.url} has no column {', '.join(lacking)}")


def _bytes_io(data: bytes) -> Any:
    import io

    return io.BytesIO(data)
