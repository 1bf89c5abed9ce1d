"""Batch scoring against a plain pyarrow + predict_proba loop, measured in the same run.

One Parquet file of N rows x 20 floats (row groups of 100,000), a HistGradientBoosting
classifier with 100 iterations. Each contender runs as its own process tree, timed by
wall clock and by the CPU seconds of all its processes (``RUSAGE_CHILDREN``, which
counts the workers too once they are waited for); peak RSS per process is the baseline's
own and, for scoregate, each worker's as recorded in the chunk records. Then a kill -9
halfway and a resume, to price the restart. Ray runs when it is installed, on a head
node of its own (killed by process id afterwards).

Run: ``.venv/bin/python benchmarks/batch.py [--rows 5000000] [--skip-ray]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BASELINE = r"""
import resource, sys, time, joblib, numpy as np, pyarrow.parquet as pq
model = joblib.load(sys.argv[1])
rows = 0
t = time.monotonic()
for batch in pq.ParquetFile(sys.argv[2]).iter_batches(batch_size=100_000):
    X = np.column_stack([c.to_numpy() for c in batch.columns])
    model.predict_proba(X)
    rows += batch.num_rows
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_inputs(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    import joblib
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.ensemble import HistGradientBoostingClassifier

    names = [f"f{i}" for i in range(20)]
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (50_000, 20))
    train[0], train[1] = -8, 8  # the schema's ranges cover every scored row
    y = (train[:, 0] + train[:, 1] * train[:, 2] > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0).fit(train, y)
    joblib.dump(model, folder / "model.joblib")
    pd.DataFrame(train, columns=names).assign(default=y).to_parquet(folder / "train.parquet", index=False)
    path = folder / "applicants.parquet"
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        block = rng.normal(0, 1, (n, 20)).clip(-7.9, 7.9)
        table = pa.table({name: block[:, i] for i, name in enumerate(names)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    assert writer is not None
    writer.close()
    return folder / "model.joblib", folder / "train.parquet", path


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of the whole process tree, stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {done.stdout[-500:]} {done.stderr[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def worker_rss(output: Path) -> float:
    records = [json.loads(p.read_text()) for p in (output / "_scoregate" / "chunks").glob("*.json")]
    return max((r.get("peak_rss_mb") or 0.0) for r in records)


def first_chunk_s(output: Path, started_at: float) -> float:
    records = [json.loads(p.read_text()) for p in (output / "_scoregate" / "chunks").glob("*.json")]
    import datetime as dt

    first = min(dt.datetime.fromisoformat(r["committed_at"]).timestamp() for r in records)
    return first - started_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    # A timeout's SIGTERM must run the cleanup below (Ray's daemons are killed there, by process id).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="sg-batch-bench-"))
    env = {**os.environ, "SCOREGATE_HOME": str(work / "home"), "PYTHONPATH": os.pathsep.join(sys.path)}
    py = sys.executable
    try:
        model, train, data = make_inputs(work, args.rows)
        print(f"{args.rows} rows x 20 floats, {data.stat().st_size / 1e6:.0f} MB Parquet; {os.cpu_count()} cores")
        subprocess.run(
            [py, "-m", "scoregate", "register", "bench", str(model), "--flavor", "sklearn", "--train-data",
             str(train), "--target", "default"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        results: list[tuple[str, float, float, float]] = []
        wall, cpu, out = timed([py, "-c", BASELINE, str(model), str(data)], env)
        rows, rss = out.split()
        assert int(rows) == args.rows
        results.append(("pyarrow + predict_proba, 1 process", wall, cpu, float(rss)))
        extra = {}
        for workers in (1, 2):
            output = work / f"out{workers}"
            started = time.time()
            wall, cpu, _ = timed(
                [py, "-m", "scoregate", "batch", "bench@1", str(data), str(output), "--workers", str(workers)], env
            )
            results.append((f"scoregate batch, {workers} worker(s)", wall, cpu, worker_rss(output)))
            extra[f"first chunk, {workers} worker(s)"] = first_chunk_s(output, started)
        # kill -9 halfway, then resume: the CPU a restart costs
        output = work / "killed"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(
            [py, "-m", "scoregate", "batch", "bench@1", str(data), str(output), "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        chunks = max(1, args.rows // 100_000)
        while len(list((output / "_scoregate" / "chunks").glob("*.json"))) < chunks // 2:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(0.5)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        killed_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        job = json.loads((output / "_scoregate" / "manifest.json").read_text())["job"]
        wall, cpu, _ = timed([py, "-m", "scoregate", "batch", "resume", job, "--workers", "2"], env)
        uninterrupted = results[-1][2]
        extra["resume after kill -9: extra CPU"] = (killed_cpu + cpu) / uninterrupted - 1
        if not args.skip_ray:
            ray_result = run_ray(py, env, data, work)
            if ray_result is not None:
                results.append(ray_result)
        base_wall, base_cpu = results[0][1], results[0][2]
        base_rate = args.rows / base_cpu
        header = f"{'contender':38} {'rows/s':>10} {'CPU s':>8} {'rows/CPU-s':>11} {'vs base':>8} {'wall x':>7}"
        print(f"{header} {'peak RSS MB':>12}")
        for name, wall, cpu, rss in results:
            rate = args.rows / cpu
            print(f"{name:38} {args.rows / wall:>10,.0f} {cpu:>8.1f} {rate:>11,.0f} {rate / base_rate:>8.2f} "
                  f"{base_wall / wall:>7.2f} {rss:>12.0f}")  # fmt: skip
        for key, value in extra.items():
            print(f"{key}: {value:.3f}" + (" s" if "first" in key else ""))
        print(f"load average: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_ray(py: str, env: dict[str, str], data: Path, work: Path) -> tuple[str, float, float, float] | None:
    try:
        import psutil
        import ray  # noqa: F401
    except ImportError:
        return None
    temp = f"/tmp/sgbr-{uuid.uuid4().hex[:6]}"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_bin = str(Path(py).with_name("ray"))
    subprocess.run(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    try:
        output = work / "ray"
        # The CPU of Ray's own daemons and actors is not in RUSAGE_CHILDREN: sum it from their processes.
        ours = [p for p in psutil.process_iter(["cmdline"]) if any(temp in c for c in (p.info["cmdline"] or []))]
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in ours)
        wall, cpu, _ = timed(
            [py, "-m", "scoregate", "batch", "bench@1", str(data), str(output), "--workers", "2", "--engine", "ray",
             "--ray-address", f"127.0.0.1:{port}"],
            env,
        )  # fmt: skip
        daemons = 0.0
        for p in ours:
            with contextlib.suppress(psutil.Error):
                daemons += sum(p.cpu_times()[:2])
        records = [json.loads(p.read_text()) for p in (output / "_scoregate" / "chunks").glob("*.json")]
        actors: dict[int, float] = {}
        for r in records:  # each actor's own CPU seconds, as it last reported them (it is killed at the end)
            actors[r["worker"]] = max(actors.get(r["worker"], 0.0), r["cpu_s"] or 0.0)
        total = cpu + (daemons - cpu0) + sum(actors.values())
        return ("scoregate batch --engine ray, 2 actors", wall, total, worker_rss(output))
    finally:
        # the whole tree, taken before anything dies: Ray's agents rename themselves (no temp in their cmdline)
        cluster: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["cmdline"]):
            if any(temp in c for c in (p.info["cmdline"] or [])):
                cluster[p.pid] = p
                with contextlib.suppress(psutil.Error):
                    cluster.update((c.pid, c) for c in p.children(recursive=True))
        for p in cluster.values():
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(list(cluster.values()), timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
