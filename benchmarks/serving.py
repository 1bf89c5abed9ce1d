"""Benchmark of the scoring server: HistGradientBoosting, 20 float features, one row per request.

Trains the benchmark model on numpy, registers it in a throw-away registry, serves it
with ``scoregate.serving.run`` (validation and prediction log on) in a subprocess and
drives it with wrk (Lua script, on loopback) at 1, 8 and 32 connections. Prints
req/s, p50/p95/p99, the ratio to in-process ``predict_proba`` on one row, the issue's
targets, and then the same series against a bare ASGI server with greedy batching
(``bare_server.py``: no validation, log or metrics) with the ratios between the two.

    .venv/bin/python benchmarks/serving.py [--workers 2] [--duration 10] [--connections 1,8,32]

Needs ``wrk`` on PATH (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

N_FEATURES = 20
LUA = r"""
local bodies = {}
local i = 0
local n = 0
init = function(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end
request = function()
  i = (i % n) + 1
  return wrk.format("POST", "/models/bench@production/predict", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50=%d p95=%d p99=%d\n",
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def train(home: Path) -> tuple[object, np.ndarray, Path]:
    import joblib
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES))
    y = (x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)
    artifact = home / "bench.joblib"
    joblib.dump(model, artifact)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(N_FEATURES)])
    frame["label"] = y
    data = home / "train.parquet"
    frame.to_parquet(data, index=False)
    return model, x, data


def in_process_one_row(model: object, x: np.ndarray, repeats: int = 3000) -> float:
    row = x[:1]
    for _ in range(200):
        model.predict_proba(row)  # type: ignore[attr-defined]
    times = []
    for i in range(repeats):
        row = x[i % 1000 : i % 1000 + 1]
        start = time.perf_counter()
        model.predict_proba(row)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def in_process_flavor_one_row(registry: object, x: np.ndarray, repeats: int = 1000) -> float:
    """The sklearn flavor's predict (labels and probabilities) on a one-row frame, one OpenMP thread."""
    import pandas as pd
    from threadpoolctl import threadpool_limits

    scorer = registry.load("bench@production").scorer  # type: ignore[attr-defined]
    names = [f"f{i}" for i in range(N_FEATURES)]
    times = []
    with threadpool_limits(1):
        for i in range(repeats):
            frame = pd.DataFrame(x[i % 1000 : i % 1000 + 1], columns=names)
            start = time.perf_counter()
            scorer.predict(frame)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_source(settings: object) -> object:
    """``--no-registry``: the same model from its joblib file, through the sklearn flavor."""
    from scoregate.flavors import load_scorer
    from scoregate.schema import ModelSchema
    from scoregate.serving import InMemorySource

    home = Path(settings.home)  # type: ignore[attr-defined]
    source = InMemorySource()
    schema = ModelSchema.model_validate_json((home / "schema.json").read_text())
    source.add("bench", 1, load_scorer("sklearn", home / "bench.joblib"), schema)
    source.set_alias("bench", "production", 1)
    return source


class _FlavorOnly:
    def __init__(self, home: Path) -> None:
        from scoregate.flavors import load_scorer

        self.scorer = load_scorer("sklearn", home / "bench.joblib")

    def load(self, ref: str) -> object:
        return self

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


HEADER = f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'p50/in-proc':>11}"


class Series:
    """wrk at each connection count against a server started for the series."""

    def __init__(self, script: Path, bodies: Path, connections: list[int], duration: int, threads: int) -> None:
        self.script, self.bodies = script, bodies
        self.connections, self.duration, self.threads = connections, duration, threads

    def wrk(self, url: str, conns: int, seconds: int) -> str:
        command = ["wrk", f"-t{min(self.threads, conns)}", f"-c{conns}", f"-d{seconds}s", "-s", str(self.script)]
        return subprocess.run(
            [*command, url, "--", str(self.bodies)], check=True, capture_output=True, text=True
        ).stdout

    def run(self, command: list[str], port: int, one_row: float) -> dict[int, tuple[float, float, float]]:
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(command, start_new_session=True)
        results: dict[int, tuple[float, float, float]] = {}
        try:
            wait_ready(url)
            self.wrk(url, 8, 2)  # warm every worker
            print(
                f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'p50/in-proc':>11}"
            )
            for conns in self.connections:
                out = self.wrk(url, conns, self.duration)
                match = re.search(
                    r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+) p50=(\d+) p95=(\d+) p99=(\d+)", out
                )
                if match is None:
                    print(out)
                    raise RuntimeError("could not parse wrk output")
                requests, duration, errors, p50, p95, p99 = map(int, match.groups())
                rps = requests / (duration / 1e6)
                results[conns] = (rps, p50 / 1e3, p99 / 1e3)
                print(
                    f"{conns:>5} {rps:>9.0f} {p50 / 1e3:>8.3f} {p95 / 1e3:>8.3f} {p99 / 1e3:>8.3f} {errors:>6} "
                    f"{p50 / 1e6 / one_row:>10.2f}x"
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        return results


def report_targets(results: dict[int, tuple[float, float, float]], one_row_ms: float) -> None:
    """The issue's targets on 2 cores, against this run's own figures."""
    if 1 in results:
        added = results[1][1] - one_row_ms
        verdict = "met" if added <= 0.5 else "NOT met"
        print(f"target 1 connection, p50 at most 0.5 ms above in-process: +{added:.3f} ms ({verdict})")
    if 32 in results:
        rps, _p50, p99 = results[32]
        verdict = "met" if rps >= 4000 and p99 < 25 else "NOT met"
        print(f"target 32 connections, >= 4,000 req/s with p99 < 25 ms: {rps:,.0f} req/s, p99 {p99:.2f} ms ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (one is far from a bottleneck and leaves the second core to the server)",
    )
    parser.add_argument("--scorer-threads", type=int, default=1, help="OpenMP threads per scoring thread")
    parser.add_argument("--no-log", action="store_true", help="turn the prediction log off")
    parser.add_argument("--no-registry", action="store_true", help="serve from the joblib file, not a registry")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare ASGI server (bare_server.py)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    from scoregate.config import Settings

    home = Path(tempfile.mkdtemp(prefix="scoregate-bench-"))
    model, x, data = train(home)
    settings = Settings(home=home)
    source = None
    if args.no_registry:
        import pandas as pd

        from scoregate.schema import infer_schema

        schema = infer_schema(pd.read_parquet(data), target="label")
        (home / "schema.json").write_text(schema.model_dump_json())
        registry: object = _FlavorOnly(home)
        source = "serving:bench_source"
        os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    else:
        from scoregate.registry import Registry

        registry = Registry.open(settings)
        mv = registry.register(
            "bench", home / "bench.joblib", flavor="sklearn", train_data=data, target="label", risk_tier="low"
        )
        registry.set_alias("bench", "production", mv.version)

    one_row = in_process_one_row(model, x)
    flavor_row = in_process_flavor_one_row(registry, x)
    names = [f"f{i}" for i in range(N_FEATURES)]
    bodies = home / "bodies.jsonl"
    with bodies.open("w") as handle:
        for row in x[:1000]:
            handle.write(json.dumps({"rows": [dict(zip(names, map(float, row), strict=True))]}) + "\n")
    script = home / "bench.lua"
    script.write_text(LUA)

    port = free_port()
    code = (
        "from scoregate.config import Settings; from scoregate.serving import run; "
        f"run(Settings(home={str(home)!r}), '127.0.0.1', {port}, workers={args.workers}, "
        f"log_predictions={not args.no_log}, scorer_threads={args.scorer_threads!r}, log_level='warning', "
        f"source={source!r})"
    )
    print(f"in-process predict_proba, one row (median): {one_row * 1e3:.3f} ms")
    print(f"in-process flavor scorer.predict (what the server calls), one row, 1 thread: {flavor_row * 1e3:.3f} ms")
    print(f"scoregate: {args.workers} worker(s), validation on, prediction log {'off' if args.no_log else 'on'}")
    series = Series(script, bodies, [int(c) for c in args.connections.split(",")], args.duration, args.threads)
    results = series.run([sys.executable, "-c", code], port, one_row)
    print(f"p50 overhead at 1 connection is the p50 above minus {one_row * 1e3:.3f} ms")
    report_targets(results, one_row * 1e3)
    if not args.no_baseline:
        print(f"bare ASGI server (benchmarks/bare_server.py): {args.workers} worker(s), no validation, log or metrics")
        bare_port = free_port()
        bare = [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_server:app",
            *("--port", str(bare_port), "--workers", str(args.workers), "--log-level", "warning"),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--app-dir", str(Path(__file__).parent)),
        ]
        os.environ["BARE_MODEL"] = str(home / "bench.joblib")
        baseline = series.run(bare, bare_port, one_row)
        print("scoregate / bare server, same run:")
        for conns, (rps, p50, p99) in results.items():
            b_rps, b_p50, b_p99 = baseline[conns]
            print(
                f"{conns:>5} conns: req/s {rps / b_rps:.2f}x, p50 {p50 / b_p50:.2f}x, p99 {p99 / b_p99:.2f}x "
                f"({p50 - b_p50:+.3f} ms at p50)"
            )
    from scoregate.serving import read_predictions

    logged = read_predictions(home, model="bench")
    print(f"prediction log rows after shutdown: {len(logged)}")
    registry.close()  # type: ignore[attr-defined]
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
