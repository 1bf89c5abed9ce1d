"""The prediction log: every scored row, journaled before its response and kept as Parquet.

It lives with the registry because it is a store: the server writes it, and
reproduction (governance) and monitoring read it.

A handler appends its rows to the column buffers of its model version: the inputs and
outputs are encoded as JSON there and then (orjson; a few microseconds a row in all), the
other columns are plain list appends. With a durability other than ``off`` the same rows
also become one journal record (:mod:`.journal`), which :meth:`PredictionLog.commit`
writes (and in ``sync`` durability syncs) before the server answers. A writer thread
wakes every ``flush_interval`` seconds (or as soon as ``flush_rows`` rows are waiting),
takes the buffers and the journal segment they belong to in one swap, hands the columns
to Arrow, which converts and compresses them in C++, writes one Parquet file per (model,
version, hour) into hive-style folders, syncs them, and only then deletes the segment::

    <home>/predictions/model=credit-risk/version=3/hour=2026-11-25T12/part-<segment>.parquet

Why encode on the request path: every thread of a worker shares one interpreter lock.
A writer that expanded a second of requests into rows in Python held it for tens of
milliseconds at a time, and every request in flight meanwhile waited for it (it
doubled the server's p99 under load); the same work spread over the requests, a
microsecond each, delays nobody.

Durability (``Durability``): ``sync`` (the default) answers a request only once its rows
are synced to the journal, so neither a crash of the process nor a power loss loses an
answered decision; ``os`` answers once the rows are written to the operating system
(a killed process loses nothing, a power loss up to the last flush interval); ``off``
keeps them in memory until the next flush (a crash loses up to a flush interval). Files
are written under a dot-name and renamed into place, so readers never see a
half-written segment; every file is 0600 in 0700 folders.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import secrets
import threading
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from scoregate.files import fsync_dir, open_private, private_dir
from scoregate.memory import give_back_memory
from scoregate.registry.journal import (
    JOURNAL_DIR,
    Entry,
    Journal,
    Segment,
    claim,
    encode_record,
    read_segment,
    remove_stale_locks,
    segments_by_owner,
)

log = logging.getLogger("scoregate.predictions")

ROW_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("client_request_id", pa.string()),
        ("row", pa.int32()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
        ("latency_ms", pa.float64()),
        ("shadow", pa.bool_()),
        ("route", pa.string()),
    ]
)
PARTITION_SCHEMA = pa.schema([("model", pa.string()), ("version", pa.int64()), ("hour", pa.string())])
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
#: Seconds between scans for journals that dead workers left behind.
RECOVER_INTERVAL = 5.0
#: A flush of at least this many rows hands the memory it used back to the OS afterwards.
LARGE_FLUSH_ROWS = 20_000


class Durability(StrEnum):
    """When a decision counts as logged, relative to its response."""

    SYNC = "sync"  # synced to the journal before the response: survives a crash and a power loss
    OS = "os"  # written to the OS before the response: survives a crash, not a power loss
    OFF = "off"  # in memory until the next flush: a crash loses up to a flush interval


class _Columns:
    """One model version's rows since the last flush, column by column."""

    __slots__ = (
        "client_request_id",
        "inputs",
        "latency_ms",
        "outputs",
        "request_id",
        "route",
        "row",
        "shadow",
        "timestamp",
    )

    def __init__(self) -> None:
        self.timestamp: list[float] = []
        self.request_id: list[str] = []
        self.client_request_id: list[str | None] = []
        self.row: list[int] = []
        self.inputs: list[bytes] = []
        self.outputs: list[bytes] = []
        self.latency_ms: list[float] = []
        self.shadow: list[bool] = []
        self.route: list[str] = []

    def add(self, entry: Entry) -> None:
        n = len(entry.inputs)
        self.timestamp.extend([entry.timestamp] * n)
        self.request_id.extend([entry.request_id] * n)
        self.client_request_id.extend([entry.client_request_id] * n)
        self.row.extend(range(entry.first_row, entry.first_row + n))
        self.latency_ms.extend([entry.latency_ms] * n)
        self.shadow.extend([entry.shadow] * n)
        self.route.extend([entry.route] * n)
        self.inputs.extend(entry.inputs)
        self.outputs.extend(entry.outputs)

    def by_hour(self) -> list[tuple[str, pa.Table]]:
        """The rows as Arrow tables, one per UTC hour (one unless the flush spans an hour)."""
        seconds = np.asarray(self.timestamp, dtype=np.float64)
        # orjson gives UTF-8 bytes: Arrow takes them as binary and checks them as text in one pass
        table = pa.table(
            [
                pa.array((seconds * 1e6).astype(np.int64), type=ROW_SCHEMA.field("timestamp").type),
                pa.array(self.request_id, type=pa.string()),
                pa.array(self.client_request_id, type=pa.string()),
                pa.array(self.row, type=pa.int32()),
                pa.array(self.inputs, type=pa.binary()).cast(pa.string()),
                pa.array(self.outputs, type=pa.binary()).cast(pa.string()),
                pa.array(self.latency_ms, type=pa.float64()),
                pa.array(self.shadow, type=pa.bool_()),
                pa.array(self.route, type=pa.string()),
            ],
            schema=ROW_SCHEMA,
        )
        hours = (seconds // 3600).astype(np.int64)
        if hours.min() == hours.max():
            return [(_hour_name(int(hours[0])), table)]
        return [(_hour_name(int(h)), table.filter(pa.array(hours == h))) for h in np.unique(hours)]


class PredictionLog:
    """Journaled, batched Parquet writer for scored rows (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        flush_interval: float = 1.0,
        flush_rows: int = 50_000,
        durability: Durability | str = Durability.SYNC,
        owner: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.flush_interval = float(flush_interval)
        self.flush_rows = int(flush_rows)
        self.durability = Durability(durability)
        #: Names this writer's journal and files; unique per process (64 random bits).
        self.owner = owner or secrets.token_hex(8)
        self._buffers: dict[tuple[str, int], _Columns] = {}
        self._pending: list[bytes] = []  # journal records appended and not yet written
        self._rows = 0
        self._lock = threading.Lock()  # handlers (loop and scoring threads) append, the writer swaps
        self._commit_lock = threading.Lock()  # one journal write at a time (commits and rotations)
        self._write_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._journal: Journal | None = None
        self._leftovers: list[Path] = []  # own segments whose compaction failed, retried by recover()
        self._files = itertools.count(1)
        self.rows_written = 0
        self.write_errors = 0

    @property
    def journal_dir(self) -> Path:
        return self.root / JOURNAL_DIR

    def start(self) -> None:
        """Open the journal and start the writer thread (which first compacts what dead workers left)."""
        self._open_journal()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def _open_journal(self) -> None:
        if self._journal is None and self.durability is not Durability.OFF:
            private_dir(self.root)
            self._journal = Journal(self.journal_dir, self.owner)

    def append(
        self,
        model: str,
        version: int,
        request_id: str,
        records: list[Any],
        outputs: Any,
        latency_ms: float,
        *,
        shadow: bool = False,
        route: str = "",
        client_request_id: str | None = None,
        first_row: int = 0,
    ) -> None:
        """Buffer one request's rows (``outputs`` is a :class:`~scoregate.serving.batcher.Outputs`);
        ``first_row`` numbers them when a large request is logged in slices.

        With a journal the rows are durable only after the next :meth:`commit`."""
        ts = time.time()
        dumps = orjson.dumps
        n = len(records)
        if n == 1:  # the common case: no per-row lists or dicts
            inputs = [dumps(records[0], option=_JSON_OPTIONS)]
            row = dict(zip(outputs.names, [column[0] for column in outputs.columns], strict=True))
            encoded = [dumps(row, option=_JSON_OPTIONS)]
        else:
            inputs = [dumps(record, option=_JSON_OPTIONS) for record in records]
            encoded = [dumps(row, option=_JSON_OPTIONS) for row in outputs.rows()]
        record = None
        if self.durability is not Durability.OFF:
            record = encode_record(
                ts, model, version, request_id, client_request_id, route, shadow, latency_ms, first_row, inputs, encoded
            )
            if self._journal is None:
                with self._commit_lock:
                    self._open_journal()
        with self._lock:
            columns = self._buffers.get((model, version))
            if columns is None:
                columns = self._buffers[(model, version)] = _Columns()
            if n == 1:
                columns.timestamp.append(ts)
                columns.request_id.append(request_id)
                columns.client_request_id.append(client_request_id)
                columns.row.append(first_row)
                columns.latency_ms.append(latency_ms)
                columns.shadow.append(shadow)
                columns.route.append(route)
            else:
                columns.timestamp.extend([ts] * n)
                columns.request_id.extend([request_id] * n)
                columns.client_request_id.extend([client_request_id] * n)
                columns.row.extend(range(first_row, first_row + n))
                columns.latency_ms.extend([latency_ms] * n)
                columns.shadow.extend([shadow] * n)
                columns.route.extend([route] * n)
            columns.inputs.extend(inputs)
            columns.outputs.extend(encoded)
            if record is not None:
                self._pending.append(record)
            self._rows += n
            rows = self._rows
        if rows >= self.flush_rows:
            self._wake.set()

    def commit(self) -> None:
        """Make every row appended so far durable as the durability asks (one write, one sync).

        Raises OSError when the journal cannot be written: the caller must not answer."""
        if self.durability is Durability.OFF:
            return
        with self._commit_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                segment = self._journal.segment if self._journal is not None else None
            if pending and segment is not None:
                try:
                    segment.write(pending, sync=self.durability is Durability.SYNC)
                except OSError:
                    self.write_errors += 1
                    raise

    def pending(self) -> int:
        """Rows buffered and not yet written to Parquet."""
        return self._rows

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer, write everything buffered, compact what dead workers left, drop the journal."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()
        self.recover()
        if self._journal is not None and not self._leftovers:
            self._journal.close()
            self._journal = None

    def _run(self) -> None:
        last_recovery = 0.0
        while not self._stop:
            now = time.monotonic()
            if now - last_recovery >= RECOVER_INTERVAL:
                last_recovery = now
                try:
                    self.recover()
                except Exception:  # pragma: no cover - keep serving; the next scan retries
                    log.exception("compacting journals left by other workers failed")
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                if self.flush() >= LARGE_FLUSH_ROWS:
                    give_back_memory()
            except Exception:  # pragma: no cover - disk full and friends: keep serving
                self.write_errors += 1
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write every buffered row to Parquet now; returns the number of rows written."""
        with self._write_lock:
            if not self._buffers:
                return 0
            journal = self._journal
            fresh = journal.new_segment() if journal is not None else None
            with self._commit_lock:
                with self._lock:
                    buffers, self._buffers = self._buffers, {}
                    self._rows = 0
                    pending, self._pending = self._pending, []
                    old: Segment | None = None
                    if journal is not None and fresh is not None and buffers:
                        old, journal.segment = journal.segment, fresh
                if old is not None and pending:
                    old.write(pending, sync=True)  # `os` durability's periodic sync too
            if fresh is not None and old is None:  # nothing to rotate: keep the current segment
                journal.retire(fresh)  # type: ignore[union-attr]
            if not buffers:
                return 0
            stem = old.stem if old is not None else f"{self.owner}-f{next(self._files):08d}"
            try:
                written = self._write_parquet(buffers, stem)
            except Exception:
                if old is not None:  # the rows stay in the journal; recover() retries
                    old.close()
                    self._leftovers.append(old.path)
                raise
            if old is not None:
                journal.retire(old)  # type: ignore[union-attr]
            self.rows_written += written
            return written

    def _write_parquet(self, buffers: dict[tuple[str, int], _Columns], stem: str) -> int:
        """Write and sync one Parquet file per (model, version, hour), named after ``stem``."""
        written = 0
        name = f"part-{stem}.parquet"
        for (model, version), columns in buffers.items():
            for hour, part in columns.by_hour():
                folder = self.root / f"model={model}" / f"version={version}" / f"hour={hour}"
                _durable_dirs(folder)
                tmp = folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
                fd = open_private(tmp)
                with os.fdopen(fd, "wb") as handle:
                    pq.write_table(part, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, folder / name)
                fsync_dir(folder)
                written += part.num_rows
        return written

    def recover(self) -> int:
        """Compact journal segments that dead workers (or a failed flush of ours) left; returns rows."""
        folder = self.journal_dir
        rows = 0
        with self._write_lock:
            for path in list(self._leftovers):
                rows += self._compact_segment(path)
                self._leftovers.remove(path)
            found = segments_by_owner(folder)
            for owner, paths in found.items():
                if owner == self.owner:
                    continue
                with claim(folder, owner) as claimed:
                    if not claimed:
                        continue  # its worker is alive and compacts them itself
                    for path in paths:
                        rows += self._compact_segment(path)
                    (folder / f"{owner}.lock").unlink(missing_ok=True)
            if folder.is_dir():
                remove_stale_locks(folder, set(found), self.owner)
        self.rows_written += rows
        return rows

    def _compact_segment(self, path: Path) -> int:
        entries, torn = read_segment(path)
        if torn:
            log.warning("journal %s: %d trailing bytes were never synced; ignored", path.name, torn)
        buffers: dict[tuple[str, int], _Columns] = {}
        for entry in entries:
            columns = buffers.get((entry.model, entry.version))
            if columns is None:
                columns = buffers[(entry.model, entry.version)] = _Columns()
            columns.add(entry)
        written = self._write_parquet(buffers, path.stem) if buffers else 0
        path.unlink(missing_ok=True)
        if entries:
            log.info("compacted %d rows from the journal %s", written, path.name)
        return written


def _durable_dirs(folder: Path) -> None:
    """Create ``folder`` (0700) and sync the parent of every folder created, so its entry survives."""
    for created in private_dir(folder):
        fsync_dir(created.parent)


def _hour_name(hour_number: int) -> str:
    return dt.datetime.fromtimestamp(hour_number * 3600, dt.UTC).strftime("%Y-%m-%dT%H")


def predictions_dataset(root: Path) -> Any:
    """The Parquet files under ``root`` as one Arrow dataset (the journal is a dot-folder, skipped)."""
    import pyarrow.dataset as ds

    return ds.dataset(
        root,
        format="parquet",
        schema=pa.unify_schemas([ROW_SCHEMA, PARTITION_SCHEMA]),
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
    )


def request_filter(request_id: str) -> Any:
    """Rows of the request whose server id, or client id, is ``request_id``."""
    import pyarrow.dataset as ds

    return (ds.field("request_id") == request_id) | (ds.field("client_request_id") == request_id)


def read_predictions(
    home: Path | str | Any,
    model: str | None = None,
    version: int | None = None,
    *,
    since: dt.datetime | None = None,
    request_id: str | None = None,
    decode: bool = True,
) -> Any:
    """Read the prediction log under ``home`` (a folder or :class:`~scoregate.config.Settings`).

    Returns a pandas DataFrame with the logged columns plus ``model``, ``version`` and
    ``hour``, oldest first; ``since`` (timezone-aware) keeps rows logged at or after it,
    ``request_id`` the rows of the request with that server id or client id. With
    ``decode`` the ``inputs`` and ``outputs`` JSON strings become dicts.
    """
    import pandas as pd
    import pyarrow.dataset as ds

    base = home if isinstance(home, (str, os.PathLike)) else home.home
    root = Path(base) / "predictions"
    columns = [*ROW_SCHEMA.names, *PARTITION_SCHEMA.names]
    if not root.is_dir():
        return pd.DataFrame(columns=columns)
    dataset = predictions_dataset(root)
    clauses = []
    if model is not None:
        clauses.append(ds.field("model") == model)
    if version is not None:
        clauses.append(ds.field("version") == int(version))
    if since is not None:
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        clauses.append(ds.field("timestamp") >= pa.scalar(since, type=ROW_SCHEMA.field("timestamp").type))
    if request_id is not None:
        clauses.append(request_filter(request_id))
    condition = None
    for clause in clauses:
        condition = clause if condition is None else condition & clause
    frame = dataset.to_table(filter=condition).to_pandas()
    frame = frame.sort_values(["timestamp", "request_id", "row"], kind="stable").reset_index(drop=True)
    if decode and len(frame):
        frame["inputs"] = [orjson.loads(v) for v in frame["inputs"]]
        frame["outputs"] = [orjson.loads(v) for v in frame["outputs"]]
    return frame
