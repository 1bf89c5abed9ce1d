"""Benchmark of the prediction log: what a request pays to append, what a flush costs.

Appends one-row requests of 20 floats (the serving benchmark's shape) and flushes them,
as the server's writer does every second; prints microseconds per appended row and
milliseconds per flush, medians of ``--repeats`` rounds.

    .venv/bin/python benchmarks/prediction_log.py [--rows 4500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from scoregate.registry.predictions import PredictionLog
from scoregate.serving.batcher import Outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4500, help="rows per flush (about one worker's second at 32 conns)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(20)]
    requests = [[dict(zip(names, map(float, rng.normal(size=20)), strict=True))] for _ in range(args.rows)]
    outputs = Outputs(["prediction", "proba_0", "proba_1"], ["i8", "f8", "f8"], [[1], [0.3], [0.7]])
    with tempfile.TemporaryDirectory() as root:
        log = PredictionLog(Path(root))
        append_us, flush_ms = [], []
        for _ in range(args.repeats + 1):  # the first round warms up
            start = time.perf_counter()
            for i, records in enumerate(requests):
                log.append("bench", 1, f"req-{i:016x}", records, outputs, 1.0, route="bench@production")
            appended = time.perf_counter()
            log.flush()
            append_us.append((appended - start) / args.rows * 1e6)
            flush_ms.append((time.perf_counter() - appended) * 1e3)
    print(f"append: {statistics.median(append_us[1:]):.2f} us per row (median of {args.repeats})")
    print(f"flush of {args.rows:,} rows: {statistics.median(flush_ms[1:]):.1f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
