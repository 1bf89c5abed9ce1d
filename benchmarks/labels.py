"""Benchmark of performance monitoring: the prediction log joined with its labels, then the metrics.

Writes a prediction log in the server's layout (one Parquet file per model, version and
hour; the outputs as JSON text, as the server logs them) of ``--rows`` single-row
requests over 30 days, and one label batch for ``--labelled`` of them (shuffled, landing
up to 90 days late), then times with the code ``monitor performance`` runs:

- **the join** (:func:`scoregate.monitoring.outcomes.join`: DuckDB scans the log, parses
  the outputs' JSON, resolves the labels and left-joins them, every prediction back);
- **the metrics** per day (sklearn's realized metrics and the CBPE estimate with its band);
- **the anchor**, in the same run: pyarrow reads the same columns whole, pandas merges
  them with the labels and ``json.loads`` nothing (the scores are read from a numeric
  column written beside the JSON for it, so the anchor does strictly less work).

The issue's target: joining 10M logged predictions with their labels in at most 60 s.

    .venv/bin/python benchmarks/labels.py [--rows 10000000] [--labelled 0.8] [--cache DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scoregate.monitoring import outcomes
from scoregate.monitoring.labels import label_schema
from scoregate.monitoring.measure import summarize
from scoregate.monitoring.performance import PerformanceSettings, Period, Target, Task, fit_calibrator
from scoregate.registry.predictions import ROW_SCHEMA

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
HOURS = 30 * 24
TARGET = Target(Task.BINARY, ("0", "1"), ("proba_0", "proba_1"), "prediction")


def write_log(folder: Path, rows: int, seed: int) -> np.ndarray:
    """The log under ``folder`` (model=bench/version=1), the positive scores as one array."""
    rng = np.random.default_rng(seed)
    done = folder / "done"
    scores_path = folder / "scores.npy"
    if done.exists():
        return np.load(scores_path)
    per_hour = -(-rows // HOURS)
    base = folder / "model=bench" / "version=1"
    all_scores = []
    for hour in range(HOURS):
        first = hour * per_hour
        n = min(per_hour, rows - first)
        if n <= 0:
            break
        score = 1 / (1 + np.exp(-rng.normal(-0.5, 1.6, n)))
        all_scores.append(score)
        ids = pc.binary_join_element_wise("req-", pa.array(np.arange(first, first + n)).cast(pa.string()), "")
        p1 = pa.array(np.round(score, 6)).cast(pa.string())
        p0 = pa.array(np.round(1 - score, 6)).cast(pa.string())
        pred = pa.array((score >= 0.5).astype(np.int64)).cast(pa.string())
        outputs = pc.binary_join_element_wise('{"prediction":', pred, ',"proba_0":', p0, ',"proba_1":', p1, "}", "")
        stamp = int(START.timestamp() * 1e6) + hour * 3_600_000_000 + np.sort(rng.integers(0, 3_600_000_000, n))
        table = pa.table(
            [
                pa.array(stamp, pa.timestamp("us", tz="UTC")),
                ids,
                pa.nulls(n, pa.string()),
                pa.array(np.zeros(n, dtype=np.int32)),
                pa.array(['{"x":1.0}'] * n, pa.string()),
                outputs,
                pa.array(np.full(n, 1.0)),
                pa.array(np.zeros(n, dtype=bool)),
                pa.array([""] * n, pa.string()),
            ],
            schema=ROW_SCHEMA,
        )
        name = (START + dt.timedelta(hours=hour)).strftime("%Y-%m-%dT%H")
        part = base / f"hour={name}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-bench.parquet")
    scores = np.concatenate(all_scores)
    np.save(scores_path, scores)
    done.touch()
    return scores


def write_labels(path: Path, scores: np.ndarray, share: float, seed: int) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(seed + 1)
    n = len(scores)
    pick = rng.permutation(n)[: int(n * share)]  # shuffled: labels land in any order
    y = (rng.random(len(pick)) < scores[pick]).astype(np.int64)
    per_hour = -(-n // HOURS)
    made = int(START.timestamp() * 1e6) + (pick // per_hour) * 3_600_000_000
    late = rng.integers(0, 90 * 86_400_000_000, len(pick))
    schema = label_schema(Task.BINARY)
    table = pa.table(
        [
            pc.binary_join_element_wise("req-", pa.array(pick).cast(pa.string()), ""),
            pa.array(np.zeros(len(pick), dtype=np.int32)),
            pa.array(y).cast(pa.string()),
            pa.array(made + late, pa.int64()).cast(schema.field("at").type),
        ],
        schema=schema,
    )
    pq.write_table(table, path, compression="zstd")
    return path


def anchor(log: Path, labels: Path) -> float:
    """pyarrow reads the same columns whole, pandas merges (no JSON parsing at all)."""
    import pyarrow.dataset as ds

    start = time.perf_counter()
    frame = (
        ds.dataset(log, format="parquet", ignore_prefixes=[".", "done", "scores"])
        .to_table(columns=["timestamp", "request_id", "row"])
        .to_pandas()
    )
    known = pq.read_table(labels).to_pandas()
    merged = frame.merge(known, left_on=["request_id", "row"], right_on=["id", "row"], how="left")
    assert len(merged) == len(frame)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--labelled", type=float, default=0.8, help="Share of the predictions with a label.")
    parser.add_argument("--cache", type=Path, default=None, help="Keep the generated data here between runs.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = args.cache or Path(tempfile.mkdtemp(prefix="scoregate-labels-bench-"))
    folder = folder / f"rows={args.rows}"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scores = write_log(folder / "log", args.rows, args.seed)
    labels = write_labels(folder / "labels.parquet", scores, args.labelled, args.seed)
    print(
        f"data: {args.rows:,} logged predictions, {int(args.rows * args.labelled):,} labels "
        f"({time.perf_counter() - t0:.1f} s to write or find)"
    )

    start = time.perf_counter()
    joined = outcomes.join(folder / "log" / "model=bench" / "version=1", TARGET, "request", [labels])
    join_s = time.perf_counter() - start
    assert joined.rows == args.rows and joined.labelled.sum() == int(args.rows * args.labelled)

    rng = np.random.default_rng(args.seed + 2)
    ref = 1 / (1 + np.exp(-rng.normal(-0.5, 1.6, 20_000)))
    settings = PerformanceSettings()
    calibrator = fit_calibrator(ref, rng.random(len(ref)) < ref, uri="reference", sha256=None, settings=settings)
    start = time.perf_counter()
    periods, overall = summarize(TARGET, joined, calibrator, settings, Period.DAY)
    metrics_s = time.perf_counter() - start
    anchor_s = anchor(folder / "log", labels)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"join (DuckDB, JSON outputs parsed, every prediction back): {join_s:.1f} s "
        f"({args.rows / join_s / 1e6:.2f} M rows/s); target <= 60 s: {'met' if join_s <= 60 else 'MISSED'}"
    )
    print(f"metrics and estimate for {len(periods)} days + overall: {metrics_s:.1f} s")
    print(
        f"anchor (pyarrow read + pandas merge, no JSON): {anchor_s:.1f} s; the join takes "
        f"{join_s / anchor_s:.2f}x the anchor's time"
    )
    print(
        f"overall: realized roc_auc {overall.realized['roc_auc']:.4f}, estimated "
        f"{overall.estimated['roc_auc'].value:.4f}; matched {overall.matched_share:.1%}, "
        f"lag p50 {overall.lag.median_days:.1f} d"
    )  # type: ignore[union-attr]
    print(f"peak RSS of this process: {peak:,.0f} MiB (the anchor's pandas frames included)")


if __name__ == "__main__":
    main()
