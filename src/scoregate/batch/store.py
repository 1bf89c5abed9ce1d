"""A job's folder: the output parts, the rejects, the manifest and one commit record per chunk.

```
OUTPUT/part-000000.parquet ...      the scored rows, a part per chunk (a Parquet dataset)
OUTPUT/_rejects/part-000000.parquet the rows that broke the version's rules, with the violations
OUTPUT/_scoregate/manifest.json     the plan, written once before the first chunk
OUTPUT/_scoregate/chunks/000000.json the commit record of a chunk: digests and row counts
OUTPUT/_scoregate/status.json       the job's state as its coordinator last saw it
```

Readers of the dataset (pyarrow, Spark, DuckDB) skip names starting with ``_`` or ``.``.
A chunk is committed in this order: its parts are written under ``.``-names, fsynced and
renamed into place, then its record is written the same way. A chunk is done exactly when
its record exists, so a crash at any moment leaves each chunk either done (record and
parts in place) or not (at most a part without a record, rewritten identically when the
chunk is scored again); temporary files of a crashed run are removed when it resumes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from scoregate.batch.plan import Manifest, OutputFormat
from scoregate.errors import ConflictError, InvalidInputError, NotFoundError
from scoregate.files import fsync_dir

META = "_scoregate"
REJECTS = "_rejects"


class ChunkRecord(BaseModel):
    """What committing a chunk wrote."""

    model_config = ConfigDict(frozen=True)

    index: int
    rows: int
    scored: int
    rejected: int
    part: str
    part_sha256: str
    part_bytes: int
    rejects_sha256: str | None = None
    attempt: int = 1
    worker: int | None = None
    #: The worker's peak resident memory when it committed the chunk (MB).
    peak_rss_mb: float | None = None
    #: The worker's CPU seconds so far when it committed the chunk (the benchmark sums a Ray actor's).
    cpu_s: float | None = None
    seconds: float = 0.0
    committed_at: dt.datetime


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def output_digest(records: list[ChunkRecord]) -> str:
    """One digest of a job's whole output: each chunk's part and rejects digests, in chunk order."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: r.index):
        digest.update(f"{r.index}:{r.part_sha256}:{r.rejects_sha256 or '-'}\n".encode())
    return digest.hexdigest()


class JobFolder:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.meta = self.root / META
        self.records = self.meta / "chunks"
        self.rejects = self.root / REJECTS

    # --- the manifest ------------------------------------------------------------------------------

    def create(self, manifest: Manifest) -> None:
        """Make the folder for a new job: OUTPUT must be new or empty (a job never writes into other files)."""
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise ConflictError(
                f"OUTPUT {self.root} already exists and is not empty: give a new folder "
                "(or `scoregate batch resume JOB` to finish the job that wrote it)"
            )
        if not self.root.parent.is_dir():
            raise InvalidInputError(f"invalid OUTPUT {self.root}: the folder {self.root.parent} does not exist")
        for folder in (self.root, self.meta, self.records, self.rejects):
            folder.mkdir(exist_ok=True)
        self.write_json(self.meta / "manifest.json", manifest.model_dump(mode="json"))

    def manifest(self) -> Manifest:
        path = self.meta / "manifest.json"
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"{self.root} holds no batch job (no {META}/manifest.json)") from None
        except ValueError as exc:
            raise InvalidInputError(f"the manifest {path} is not valid: {str(exc).splitlines()[0]}") from None

    def manifest_digest(self) -> str:
        """SHA-256 of the manifest file as written: the registry keeps it, so an edited plan is caught."""
        try:
            return sha256_path(self.meta / "manifest.json")
        except FileNotFoundError:
            raise NotFoundError(f"{self.root} holds no batch job (no {META}/manifest.json)") from None

    def write_json(self, path: Path, value: Any) -> None:
        self._commit(path, json.dumps(value, indent=1, sort_keys=True).encode())

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.meta / "status.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return {}

    # --- chunks --------------------------------------------------------------------------------------

    def part_name(self, index: int, output_format: OutputFormat) -> str:
        return f"part-{index:06d}.{output_format.value}"

    def done(self) -> dict[int, ChunkRecord]:
        """The committed chunks: a record whose part is in place at its recorded size."""
        found: dict[int, ChunkRecord] = {}
        for path in self.records.glob("[0-9]*.json"):
            try:
                record = ChunkRecord.model_validate_json(path.read_bytes())
            except ValueError:
                continue  # a damaged record: the chunk is scored again
            part = self.root / record.part
            if part.is_file() and part.stat().st_size == record.part_bytes:
                found[record.index] = record
        return found

    def commit(
        self,
        index: int,
        outputs: pa.Table,
        rejects: pa.Table,
        output_format: OutputFormat,
        **record: Any,
    ) -> ChunkRecord:
        """Write a chunk's parts and then its record, each atomically."""
        rejects_digest = None
        if rejects.num_rows:
            data = _parquet_bytes(rejects)
            rejects_digest = hashlib.sha256(data).hexdigest()
            self._commit(self.rejects / f"part-{index:06d}.parquet", data)
        name = self.part_name(index, output_format)
        data = _parquet_bytes(outputs) if output_format is OutputFormat.PARQUET else _csv_bytes(outputs)
        self._commit(self.root / name, data)
        committed = ChunkRecord(
            index=index,
            rows=outputs.num_rows + rejects.num_rows,
            scored=outputs.num_rows,
            rejected=rejects.num_rows,
            part=name,
            part_sha256=hashlib.sha256(data).hexdigest(),
            part_bytes=len(data),
            rejects_sha256=rejects_digest,
            committed_at=dt.datetime.now(dt.UTC),
            **record,
        )
        self._commit(self.records / f"{index:06d}.json", committed.model_dump_json().encode())
        return committed

    def clean(self) -> None:
        """Remove what a crashed run left half-written (never a committed part or record)."""
        for folder in (self.root, self.rejects, self.meta, self.records):
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)

    def _commit(self, path: Path, data: bytes) -> None:
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def _parquet_bytes(table: pa.Table) -> bytes:
    """A part's bytes: the same table always gives the same bytes (no timestamps in Parquet's footer)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def read_part(path: Path, output_format: OutputFormat) -> pa.Table:
    if output_format is OutputFormat.PARQUET:
        return pq.read_table(path)
    return pacsv.read_csv(path)
