"""Benchmark of the scoring server: HistGradientBoosting, 20 float features, one row per request.

Trains the benchmark model twice, on a numpy array and on a DataFrame (what most users
fit on: the model then checks feature names), registers both in a throw-away registry,
serves each with ``scoregate.serving.run`` (validation and the prediction log on) in a
subprocess and drives it with wrk (Lua script, on loopback) at 1, 8 and 32 connections.

In one run it prints, each with its ratios:

1. the array-fitted model with the log's durability ``sync`` (every decision synced to
   disk before its response) and live monitoring on (5 s windows, so windows are written
   and the gauges recomputed during the run), the same with monitoring off and with
   durability ``off``, so the cost of each is a ratio, and a bare ASGI server with greedy batching on the same model
   (``bare_server.py``: no validation, log or metrics), the anchor of the server's own
   overhead; the issue's targets; how evenly the workers shared the load;
2. the DataFrame-fitted model, durability ``sync``;
3. with ``--vs-mlserver``: MLServer 1.7 (``mlserver-sklearn``, adaptive batching on) serving
   the same DataFrame-fitted model, against scoregate, with 1 and then 2 workers each, at
   32 connections. MLServer is installed once, pinned, into its own virtual environment
   under ``benchmarks/.cache/`` (with the scikit-learn, numpy and pandas versions of this
   one, so the model loads the same), never into the project's.

The servers compared in a section run side by side and wrk drives them in turn at each
connection count, so the machine's other load falls on all of them alike.

    .venv/bin/python benchmarks/serving.py [--workers 2] [--duration 10] [--connections 1,8,32] [--vs-mlserver]

Needs ``wrk`` on PATH (``apt-get install -y wrk``). Runs on a shared machine are noisy:
the ratios within one run are what to compare.
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
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import numpy as np

N_FEATURES = 20
NAMES = [f"f{i}" for i in range(N_FEATURES)]
MLSERVER_VERSION = "1.7.1"
#: MLServer 1.7.1's inference workers call asyncio.get_event_loop() at start, which uvloop 0.22 refuses.
MLSERVER_EXTRA_PINS = ("uvloop==0.21.0",)
MLSERVER_BATCH = {"max_batch_size": 32, "max_batch_time": 0.005}  # adaptive batching: up to 32 rows or 5 ms
CACHE = Path(__file__).parent / ".cache"
LUA = r"""
local bodies = {}
local i = 0
local n = 0
local path = "/"
init = function(args)
  path = args[2]
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end
request = function()
  i = (i % n) + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50=%d p95=%d p99=%d\n",
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

Results = dict[int, tuple[float, float, float]]  # connections -> (req/s, p50 ms, p99 ms)


def train(home: Path) -> tuple[Any, Any, np.ndarray, Path]:
    """The benchmark model fitted on an array and on a DataFrame (same data, same seed)."""
    import joblib
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, N_FEATURES))
    y = (x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    on_array = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y)
    frame = pd.DataFrame(x, columns=NAMES)
    on_frame = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(frame, y)
    joblib.dump(on_array, home / "bench.joblib")
    joblib.dump(on_frame, home / "bench-frame.joblib")
    frame["label"] = y
    data = home / "train.parquet"
    frame.to_parquet(data, index=False)
    return on_array, on_frame, x, data


def median_call(call: Any, rows: list[Any], repeats: int = 2000) -> float:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        for row in rows[:200]:
            call(row)
        times = []
        for i in range(repeats):
            row = rows[i % len(rows)]
            start = time.perf_counter()
            call(row)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


@dataclass
class Server:
    """One server to drive: how to start it and where to send the requests."""

    label: str
    command: list[str]
    port: int
    path: str
    bodies: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    log: Path | None = None  # a chatty server's output, kept out of the report


class Series:
    """wrk at each connection count against servers started together and driven in turn.

    Taking the servers in turn at each connection count, rather than one whole series
    after the other, spreads the other load of a shared machine over all of them, so the
    ratios between them hold better than their absolute figures."""

    def __init__(self, script: Path, connections: list[int], duration: int, threads: int) -> None:
        self.script = script
        self.connections, self.duration, self.threads = connections, duration, threads

    def wrk(self, server: Server, conns: int, seconds: int) -> tuple[float, float, float, float, int]:
        command = ["wrk", f"-t{min(self.threads, conns)}", f"-c{conns}", f"-d{seconds}s", "-s", str(self.script)]
        url = f"http://127.0.0.1:{server.port}"
        out = subprocess.run(
            [*command, url, "--", str(server.bodies), server.path], check=True, capture_output=True, text=True
        ).stdout
        match = re.search(r"RESULT requests=(\d+) duration_us=(\d+) errors=(\d+) p50=(\d+) p95=(\d+) p99=(\d+)", out)
        if match is None:
            print(out)
            raise RuntimeError("could not parse wrk output")
        requests, duration, errors, p50, p95, p99 = map(int, match.groups())
        return requests / (duration / 1e6), p50 / 1e3, p95 / 1e3, p99 / 1e3, errors

    def run(self, servers: list[Server], one_row: float, connections: list[int] | None = None) -> dict[str, Results]:
        started = []
        outputs = []
        results: dict[str, Results] = {s.label: {} for s in servers}
        try:
            for s in servers:
                output = s.log.open("w") if s.log is not None else None
                outputs.append(output)
                started.append(
                    subprocess.Popen(
                        s.command, start_new_session=True, env=s.env, cwd=s.cwd, stdout=output, stderr=output
                    )
                )
            for s, proc in zip(servers, started, strict=True):
                wait_ready(f"http://127.0.0.1:{s.port}", proc)
                self.wrk(s, 8, 2)  # warm every worker
            width = max(len(s.label) for s in servers)
            head = (
                f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} {'p50/in-proc':>11}"
            )
            print(f"{'server':<{width}} {head}")
            for conns in connections or self.connections:
                for s in servers:
                    rps, p50, p95, p99, errors = self.wrk(s, conns, self.duration)
                    results[s.label][conns] = (rps, p50, p99)
                    print(
                        f"{s.label:<{width}} {conns:>5} {rps:>9.0f} {p50:>8.3f} {p95:>8.3f} {p99:>8.3f} {errors:>6} "
                        f"{p50 / 1e3 / one_row:>10.2f}x",
                        flush=True,
                    )
        finally:
            for proc in started:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in started:
                try:
                    proc.wait(90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            for output in outputs:
                if output is not None:
                    output.close()
        return results


#: Seconds per live monitoring window in the benchmark: short, so windows close during a run.
MONITORING_WINDOW = 5


def scoregate_command(
    home: Path, port: int, workers: int, ref: str, durability: str, threads: int, *, monitoring: bool = True
) -> list[str]:
    code = (
        "from scoregate.config import Settings; from scoregate.serving import run; "
        f"run(Settings(home={str(home)!r}), '127.0.0.1', {port}, workers={workers}, models=[{ref!r}], "
        f"log_durability={durability!r}, scorer_threads={threads!r}, log_level='warning', "
        f"monitoring={monitoring!r}, monitoring_window={MONITORING_WINDOW})"
    )
    return [sys.executable, "-c", code]


def report_targets(results: Results, one_row_ms: float) -> None:
    """The issue's targets on 2 cores, against this run's own figures."""
    if 1 in results:
        added = results[1][1] - one_row_ms
        verdict = "met" if added <= 0.5 else "NOT met"
        print(f"target 1 connection, p50 at most 0.5 ms above in-process: +{added:.3f} ms ({verdict})")
    if 32 in results:
        rps, _p50, p99 = results[32]
        verdict = "met" if rps >= 4000 and p99 < 25 else "NOT met"
        print(f"target 32 connections, >= 4,000 req/s with p99 < 25 ms: {rps:,.0f} req/s, p99 {p99:.2f} ms ({verdict})")


def report_monitoring(on: Results, off: Results) -> None:
    """The issue's targets for live monitoring, against the same run with it off."""
    if 32 in on and 32 in off:
        share = on[32][0] / off[32][0]
        verdict = "met" if share >= 0.95 else "NOT met"
        print(f"target 32 connections, monitoring on >= 95% of off: {100 * share:.1f}% ({verdict})")
    if 1 in on and 1 in off:
        added = (on[1][1] - off[1][1]) * 1e3
        verdict = "met" if added <= 10 else "NOT met"
        print(f"target 1 connection, at most 10 us added at p50: {added:+.0f} us ({verdict}; wrk rounds to 1 us)")


def compare(title: str, results: Results, anchor: Results) -> None:
    print(title)
    for conns, (rps, p50, p99) in results.items():
        if conns not in anchor:
            continue
        a_rps, a_p50, a_p99 = anchor[conns]
        print(
            f"{conns:>5} conns: req/s {rps / a_rps:.2f}x, p50 {p50 / a_p50:.2f}x, p99 {p99 / a_p99:.2f}x "
            f"({p50 - a_p50:+.3f} ms at p50)"
        )


def balance(home: Path, model: str) -> str:
    """How the workers shared the requests of the last run (a server id starts with its worker's prefix)."""
    from scoregate.serving import read_predictions

    ids = read_predictions(home, model=model)["request_id"]
    counts = Counter(i[:16] for i in ids)
    if not counts:
        return "no requests logged"
    total = sum(counts.values())
    shares = ", ".join(f"{100 * c / total:.0f}%" for _, c in counts.most_common())
    return f"{len(counts)} worker(s) answered {total:,} requests: {shares}"


# -- MLServer ------------------------------------------------------------------------------------


def mlserver_env() -> Path:
    """A virtual environment with MLServer, made once and kept under benchmarks/.cache/."""
    pins = {name: installed(name) for name in ("scikit-learn", "numpy", "pandas", "joblib")}
    tag = "-".join(
        [
            MLSERVER_VERSION,
            *(f"{k}{v}" for k, v in sorted(pins.items())),
            *(p.replace("==", "") for p in MLSERVER_EXTRA_PINS),
        ]
    )
    venv = CACHE / f"mlserver-{tag}"
    binary = venv / "bin" / "mlserver"
    if binary.exists():
        return venv
    print(f"installing MLServer {MLSERVER_VERSION} into {venv} (once)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            *(f"{k}=={v}" for k, v in pins.items()),
            *MLSERVER_EXTRA_PINS,
        ],
        check=True,
    )
    return venv


def mlserver_command(venv: Path, folder: Path, model: Path, port: int, workers: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": workers,
                "debug": False,
            }
        )
    )
    model_folder = folder / "bench"
    model_folder.mkdir(exist_ok=True)
    shutil.copy(model, model_folder / "model.joblib")
    (model_folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bench",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
                **MLSERVER_BATCH,
            }
        )
    )
    return [str(venv / "bin" / "mlserver"), "start", str(folder)]


def v2_bodies(path: Path, x: np.ndarray, *, for_mlserver: bool) -> None:
    with path.open("w") as handle:
        for row in x[:1000]:
            inputs = [
                {"name": n, "shape": [1], "datatype": "FP64", "data": [float(v)]}
                for n, v in zip(NAMES, row, strict=True)
            ]
            body: dict[str, Any] = {"inputs": inputs}
            if for_mlserver:  # a DataFrame with the feature names (PandasCodec), and its probabilities
                body["parameters"] = {"content_type": "pd"}
                body["outputs"] = [{"name": "predict_proba"}]
            handle.write(json.dumps(body) + "\n")


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
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare ASGI server (bare_server.py)")
    parser.add_argument("--no-durability-off", action="store_true", help="skip the series with durability off")
    parser.add_argument("--no-monitoring-off", action="store_true", help="skip the series with monitoring off")
    parser.add_argument("--vs-mlserver", action="store_true", help="MLServer 1.7 on the DataFrame-fitted model")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    import pandas as pd

    from scoregate.config import Settings
    from scoregate.monitoring.service import record_reference
    from scoregate.registry import Registry

    print(f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    home = Path(tempfile.mkdtemp(prefix="scoregate-bench-"))
    on_array, on_frame, x, data = train(home)
    registry = Registry.open(Settings(home=home))
    for name, artifact in (("bench", "bench.joblib"), ("bench-frame", "bench-frame.joblib")):
        mv = registry.register(
            name, home / artifact, flavor="sklearn", train_data=data, target="label", risk_tier="low"
        )
        registry.set_alias(name, "production", mv.version)
        record_reference(registry, mv.ref, data)  # the profile live monitoring counts against
    registry.close()

    rows = [x[i : i + 1] for i in range(1000)]
    frames = [pd.DataFrame(r, columns=NAMES) for r in rows]
    one_row = median_call(on_array.predict_proba, rows)
    frame_row = median_call(on_frame.predict_proba, frames)
    print(
        f"in-process predict_proba, one row (median): array-fitted on an array {one_row * 1e3:.3f} ms, "
        f"DataFrame-fitted on a DataFrame {frame_row * 1e3:.3f} ms"
    )

    bodies = home / "bodies.jsonl"
    with bodies.open("w") as handle:
        for row in x[:1000]:
            handle.write(json.dumps({"rows": [dict(zip(NAMES, map(float, row), strict=True))]}) + "\n")
    script = home / "bench.lua"
    script.write_text(LUA)
    connections = [int(c) for c in args.connections.split(",")]
    series = Series(script, connections, args.duration, args.threads)
    v2_scoregate = home / "v2.jsonl"
    v2_bodies(v2_scoregate, x, for_mlserver=False)

    def scoregate(
        label: str, ref: str, durability: str, workers: int, *, v2: bool = False, monitoring: bool = True
    ) -> Server:
        # a home of its own (a copy of the registry), so its prediction log holds its own requests only
        own = home / "servers" / label
        shutil.copytree(home, own, ignore=shutil.ignore_patterns("servers", "mlserver-*"))
        port = free_port()
        command = scoregate_command(own, port, workers, ref, durability, args.scorer_threads, monitoring=monitoring)
        name = ref.split("@")[0]
        if v2:
            return Server(label, command, port, f"/v2/models/{name}/infer", v2_scoregate)
        return Server(label, command, port, f"/models/{ref}/predict", bodies)

    print(f"\n1. array-fitted model: scoregate, {args.workers} worker(s), validation on, log durability sync, live")
    print(f"   monitoring on ({MONITORING_WINDOW} s windows); the same with monitoring off; with durability off (the")
    print("   decisions of the last second are lost on a crash); and a bare ASGI server (benchmarks/bare_server.py:")
    print("   no validation, log or metrics), driven in turn at each connection count")
    servers = [scoregate("sync", "bench@production", "sync", args.workers)]
    if not args.no_monitoring_off:
        servers.append(scoregate("no-monitoring", "bench@production", "sync", args.workers, monitoring=False))
    if not args.no_durability_off:
        servers.append(scoregate("off", "bench@production", "off", args.workers))
    if not args.no_baseline:
        bare_port = free_port()
        bare = [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_server:app",
            *("--port", str(bare_port), "--workers", str(args.workers), "--log-level", "warning"),
            *("--loop", "uvloop", "--http", "httptools", "--no-access-log", "--app-dir", str(Path(__file__).parent)),
        ]
        env = {**os.environ, "BARE_MODEL": str(home / "bench.joblib")}
        servers.append(Server("bare", bare, bare_port, "/", bodies, env=env))
    first = series.run(servers, one_row)
    synced = first["sync"]
    print("scoregate, durability sync:")
    report_targets(synced, one_row * 1e3)
    print(f"worker balance (all connection counts): {balance(home / 'servers' / 'sync', 'bench')}")
    if "no-monitoring" in first:
        compare("live monitoring on / off (durability sync), same run:", synced, first["no-monitoring"])
        report_monitoring(synced, first["no-monitoring"])
        windows = list((home / "servers" / "sync" / "monitoring" / "live").rglob("*.json"))
        print(f"live windows written by the monitored server: {len(windows)}")
    if "off" in first:
        compare("durability sync / off, same run:", synced, first["off"])
    if "bare" in first:
        compare("scoregate (durability sync) / bare server, same run:", synced, first["bare"])

    print(f"\n2. DataFrame-fitted model: scoregate, {args.workers} worker(s), validation on, log durability sync")
    framed = series.run([scoregate("frame", "bench-frame@production", "sync", args.workers)], one_row)["frame"]
    compare("DataFrame-fitted / array-fitted (section 1), same run:", framed, synced)

    if args.vs_mlserver:
        venv = mlserver_env()
        v2_ml = home / "v2-mlserver.jsonl"
        v2_bodies(v2_ml, x, for_mlserver=True)
        print(
            f"\n3. DataFrame-fitted model: scoregate against MLServer {MLSERVER_VERSION} ({MLSERVER_BATCH}), 32 conns:"
        )
        print("   scoregate plain JSON and V2 (durability sync), MLServer V2 with the pandas codec, in turn")
        ml_env = {**os.environ, "OMP_NUM_THREADS": str(args.scorer_threads)}
        ml_env.pop("PYTHONPATH", None)
        for workers in (1, 2):
            print(f"   {workers} worker(s) each")
            port = free_port()
            folder = home / f"mlserver-{workers}"  # its working folder: MLServer writes .metrics/ there
            command = mlserver_command(venv, folder, home / "bench-frame.joblib", port, workers)
            servers = [
                scoregate(f"scoregate-{workers}", "bench-frame@production", "sync", workers),
                scoregate(f"scoregate-v2-{workers}", "bench-frame@production", "sync", workers, v2=True),
                Server("mlserver", command, port, "/v2/models/bench/infer", v2_ml, ml_env, folder, folder / "log"),
            ]
            runs = series.run(servers, one_row, [32])
            m_rps, _, m_p99 = runs["mlserver"][32]
            for label in (f"scoregate-{workers}", f"scoregate-v2-{workers}"):
                rps, _, p99 = runs[label][32]
                verdict = "met" if rps >= 5 * m_rps and p99 <= m_p99 / 5 else "NOT met"
                print(
                    f"   {label} / MLServer, {workers} worker(s): {rps / m_rps:.2f}x the requests, "
                    f"p99 {p99:.1f} ms against {m_p99:.1f} ms ({m_p99 / p99:.1f}x lower); "
                    f"target 5x and a fifth: {verdict}"
                )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
