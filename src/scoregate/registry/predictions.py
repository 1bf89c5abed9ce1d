"""The prediction log: every scored row, written off the hot path as Parquet.

It lives with the registry because it is a store: the server writes it, and
reproduction (governance) and monitoring read it.

Handlers only append one tuple per request to a deque. A writer thread wakes every
``flush_interval`` seconds (or as soon as ``flush_rows`` rows are waiting), expands
the requests into rows and writes one Parquet file per (model, version, hour) into
hive-style folders::

    <home>/predictions/model=credit-risk/version=3/hour=2026-11-25T12/part-<uuid>.parquet

Files are written under a dot-name and renamed into place, so readers never see a
half-written segment. A clean shutdown writes everything; a crash loses at most the
rows of the last flush interval.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("scoregate.predictions")

ROW_SCHEMA = pa.schema(
    [
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("inputs", pa.string()),
        ("outputs", pa.string()),
        ("latency_ms", pa.float64()),
        ("shadow", pa.bool_()),
        ("route", pa.string()),
    ]
)
PARTITION_SCHEMA = pa.schema([("model", pa.string()), ("version", pa.int64()), ("hour", pa.string())])


class PredictionLog:
    """Asynchronous, batched Parquet writer for scored rows."""

    def __init__(self, root: Path, *, flush_interval: float = 1.0, flush_rows: int = 50_000) -> None:
        self.root = Path(root)
        self.flush_interval = float(flush_interval)
        self.flush_rows = int(flush_rows)
        self._entries: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stop = False
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rows_written = 0
        self.write_errors = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

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
    ) -> None:
        """Queue one request's rows (``outputs`` is a :class:`~scoregate.serving.batcher.Outputs`)."""
        entries = self._entries
        entries.append((time.time(), model, version, request_id, records, outputs, latency_ms, shadow, route))
        if len(entries) >= self.flush_rows:
            self._wake.set()

    def pending(self) -> int:
        return len(self._entries)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write everything queued."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # pragma: no cover - disk full and friends: keep serving
                self.write_errors += 1
                log.exception("prediction log flush failed")

    def flush(self) -> int:
        """Write every queued entry now; returns the number of rows written."""
        with self._write_lock:
            entries = self._entries
            taken = [entries.popleft() for _ in range(len(entries))]
            if not taken:
                return 0
            partitions: dict[tuple[str, int, str], dict[str, list[Any]]] = {}
            dumps = orjson.dumps
            numpy_ok = orjson.OPT_SERIALIZE_NUMPY
            hours: dict[int, str] = {}
            for ts, model, version, request_id, records, outputs, latency_ms, shadow, route in taken:
                hour_number = int(ts // 3600)
                hour = hours.get(hour_number)
                if hour is None:
                    hour = hours[hour_number] = dt.datetime.fromtimestamp(hour_number * 3600, dt.UTC).strftime(
                        "%Y-%m-%dT%H"
                    )
                key = (model, version, hour)
                part = partitions.get(key)
                if part is None:
                    part = partitions[key] = {name: [] for name in ROW_SCHEMA.names}
                n = len(records)
                # Whole-request columns are extended in one step; only the JSON is per row.
                part["timestamp"].extend([ts] * n)
                part["request_id"].extend([request_id] * n)
                part["row"].extend(range(n))
                part["inputs"].extend([dumps(record, option=numpy_ok).decode() for record in records])
                part["outputs"].extend([dumps(row, option=numpy_ok).decode() for row in outputs.rows()])
                part["latency_ms"].extend([latency_ms] * n)
                part["shadow"].extend([shadow] * n)
                part["route"].extend([route] * n)
            for columns in partitions.values():
                # epoch seconds to microsecond timestamps in one vectorised step
                seconds = np.asarray(columns["timestamp"], dtype=np.float64)
                columns["timestamp"] = pa.array(
                    (seconds * 1e6).astype(np.int64), type=ROW_SCHEMA.field("timestamp").type
                )
            written = 0
            for (model, version, hour), columns in partitions.items():
                folder = self.root / f"model={model}" / f"version={version}" / f"hour={hour}"
                folder.mkdir(parents=True, exist_ok=True)
                table = pa.Table.from_pydict(columns, schema=ROW_SCHEMA)
                name = f"part-{uuid.uuid4().hex}.parquet"
                tmp = folder / f".{name}.tmp"
                pq.write_table(table, tmp)
                os.replace(tmp, folder / name)
                written += table.num_rows
            self.rows_written += written
            return written


def read_predictions(
    home: Path | str | Any,
    model: str | None = None,
    version: int | None = None,
    *,
    decode: bool = True,
) -> Any:
    """Read the prediction log under ``home`` (a folder or :class:`~scoregate.config.Settings`).

    Returns a pandas DataFrame with the logged columns plus ``model``, ``version`` and
    ``hour``; with ``decode`` the ``inputs`` and ``outputs`` JSON strings become dicts.
    """
    import pandas as pd
    import pyarrow.dataset as ds

    base = home if isinstance(home, (str, os.PathLike)) else home.home
    root = Path(base) / "predictions"
    columns = [*ROW_SCHEMA.names, *PARTITION_SCHEMA.names]
    if not root.is_dir():
        return pd.DataFrame(columns=columns)
    dataset = ds.dataset(
        root,
        format="parquet",
        schema=pa.unify_schemas([ROW_SCHEMA, PARTITION_SCHEMA]),
        partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
    )
    condition = None
    if model is not None:
        condition = ds.field("model") == model
    if version is not None:
        clause = ds.field("version") == int(version)
        condition = clause if condition is None else condition & clause
    frame = dataset.to_table(filter=condition).to_pandas()
    frame = frame.sort_values(["timestamp", "request_id", "row"], kind="stable").reset_index(drop=True)
    if decode and len(frame):
        frame["inputs"] = [orjson.loads(v) for v in frame["inputs"]]
        frame["outputs"] = [orjson.loads(v) for v in frame["outputs"]]
    return frame
