"""The prediction log's writer on its own: hour partitions, and appends racing the flushes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scoregate.registry import predictions
from scoregate.registry.predictions import PredictionLog, read_predictions
from scoregate.serving.batcher import Outputs

HOUR = 1_795_000_000 // 3600 * 3600  # an hour boundary in 2026


def outputs(*probas: float) -> Outputs:
    return Outputs(["label", "proba_1"], ["i8", "f8"], [[int(p > 0.5) for p in probas], list(probas)])


def test_a_flush_across_an_hour_boundary_writes_one_partition_per_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([HOUR - 1.5, HOUR - 0.5, HOUR + 0.25])
    monkeypatch.setattr(predictions.time, "time", lambda: next(clock))
    log = PredictionLog(tmp_path / "predictions")
    log.append("credit", 3, "a", [{"x": 1.0}], outputs(0.9), 1.5, route="credit@production")
    log.append("credit", 3, "b", [{"x": 2.0}, {"x": None}], outputs(0.2, 0.7), 2.5, route="credit@production")
    log.append("credit", 3, "c", [{"x": 3.0}], outputs(0.4), 0.5, shadow=True, route="credit@production")
    assert log.pending() == 4
    assert log.flush() == 4 and log.pending() == 0
    hours = sorted(p.parent.name for p in (tmp_path / "predictions").rglob("*.parquet"))
    assert hours == ["hour=2026-11-18T10", "hour=2026-11-18T11"]
    frame = read_predictions(tmp_path, model="credit", version=3)
    assert frame["request_id"].tolist() == ["a", "b", "b", "c"]
    assert frame["row"].tolist() == [0, 0, 1, 0]
    assert frame["inputs"].tolist() == [{"x": 1.0}, {"x": 2.0}, {"x": None}, {"x": 3.0}]
    assert frame["outputs"].tolist() == [
        {"label": 1, "proba_1": 0.9},
        {"label": 0, "proba_1": 0.2},
        {"label": 1, "proba_1": 0.7},
        {"label": 0, "proba_1": 0.4},
    ]
    assert frame["hour"].tolist() == ["2026-11-18T10"] * 3 + ["2026-11-18T11"]
    assert frame["latency_ms"].tolist() == [1.5, 2.5, 2.5, 0.5]
    assert frame["shadow"].tolist() == [False, False, False, True]


def test_appends_from_many_threads_during_flushes_lose_and_tear_nothing(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "predictions", flush_interval=0.005)
    log.start()
    stop = threading.Event()
    counts = [0] * 4

    def handler(worker: int) -> None:
        i = 0
        while not stop.is_set() or i < 1500:  # at least 1,500 requests, and until the writer flushed
            rows = [{"worker": worker, "i": i}] * (1 + i % 3)
            log.append("m", 1 + worker % 2, f"{worker}-{i}", rows, outputs(*[i / 1500] * len(rows)), 1.0)
            i += 1
        counts[worker] = i

    threads = [threading.Thread(target=handler, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    written = {0}
    deadline = time.monotonic() + 60
    while len(written) < 4:  # three flushes that wrote rows while the handlers were appending
        assert time.monotonic() < deadline, "the writer never flushed"
        written.add(log.rows_written)
        time.sleep(0.001)
    stop.set()
    for t in threads:
        t.join()
    log.close()
    frame = read_predictions(tmp_path)
    assert len(frame) == sum(sum(1 + i % 3 for i in range(n)) for n in counts) == log.rows_written
    for request_id, inputs, version in zip(frame["request_id"], frame["inputs"], frame["version"], strict=True):
        worker, i = map(int, request_id.split("-"))
        assert inputs == {"worker": worker, "i": i} and version == 1 + worker % 2
