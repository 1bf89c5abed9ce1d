"""Benchmark of batch drift: speed against a plain NumPy baseline in the same run, memory flat in rows.

Writes Parquet files of standard-normal float columns (one column of the current data
shifted by 0.5 sd) and measures, with the same core the CLI uses:

- **drift against a stored profile** (the product's path: the profile was computed at
  registration): read the current file in batches, count, compute every statistic;
- **drift with the reference built in the same run** (``--reference FILE``): profile the
  reference file (three passes) then the above, the like-for-like comparison with
- **the NumPy baseline**: read both files whole, then per column exact reference
  deciles, ten-bin PSI and the exact two-sample KS (``scipy.stats.ks_2samp``);
- the same at 1M x 100 columns;
- **peak memory** (the high-water RSS, VmHWM, of a child process) of drift against a stored
  profile and of building a profile, at 1M and 10M rows x 20 columns;
- the CLI end to end (``scoregate monitor drift``, a child process, imports included).

``--evidently`` also times Evidently's ``DataDriftPreset`` in a venv of its own (created
under ``--cache``, never the project's), as the issue's anchor.

    .venv/bin/python benchmarks/monitoring.py [--rows 1000000] [--big-rows 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


# -- data -------------------------------------------------------------------------------------------------


def write_data(path: Path, rows: int, columns: int, *, seed: int, shift: float = 0.0) -> Path:
    """Standard-normal float columns ``f00``.. written in row groups of 1M; ``f00`` shifted by ``shift``."""
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    names = [f"f{i:02d}" for i in range(columns)]
    schema = pa.schema([(n, pa.float64()) for n in names])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            data = {name: rng.normal(size=n) for name in names}
            data["f00"] += shift
            writer.write_table(pa.table(data, schema=schema))
    tmp.replace(path)
    return path


def columns_of(path: Path) -> list:  # type: ignore[type-arg]
    from scoregate.monitoring.counts import Kind
    from scoregate.monitoring.profile import Role
    from scoregate.monitoring.sources import Column
    from scoregate.schema import FeatureType

    return [(Column(n, Kind.NUMERIC), FeatureType.FLOAT, Role.INPUT) for n in pq.read_schema(path).names]


# -- the measured work --------------------------------------------------------------------------------------


def build_profile(reference: Path):  # type: ignore[no-untyped-def]
    from scoregate.monitoring.profile import build_profile as build
    from scoregate.monitoring.sources import FileSource, worker_pool

    columns = columns_of(reference)
    source = FileSource(reference, [c for c, _, _ in columns])
    with worker_pool() as pool:
        return build(columns, source.batches, pool=pool)


def drift(profile, current: Path):  # type: ignore[no-untyped-def]
    from scoregate.monitoring.drift import CurrentData, compare
    from scoregate.monitoring.profile import Role
    from scoregate.monitoring.sources import Column, FileSource, worker_pool

    acc = profile.accumulator(Role.INPUT)
    source = FileSource(current, [Column(b.name, b.kind) for b in acc.bins])
    with worker_pool() as pool:
        for batch in source.batches():
            acc.update(batch, pool=pool)
    current = CurrentData(source="file", uri=source.uri, sha256=source.sha256, rows=acc.rows)
    return compare(profile, acc, current=current)


def numpy_baseline(reference: Path, current: Path) -> dict[str, tuple[float, float]]:
    """Quantile-bin PSI and exact KS, the plain way: whole columns in memory."""
    from scipy import stats

    ref, cur = pq.read_table(reference), pq.read_table(current)
    out = {}
    for name in ref.column_names:
        r, c = ref.column(name).to_numpy(), cur.column(name).to_numpy()
        edges = np.quantile(r, np.arange(1, 10) / 10)
        pr = np.bincount(np.searchsorted(edges, r, side="right"), minlength=10) + 0.5
        pc = np.bincount(np.searchsorted(edges, c, side="right"), minlength=10) + 0.5
        pr, pc = pr / pr.sum(), pc / pc.sum()
        out[name] = (float(((pc - pr) * np.log(pc / pr)).sum()), float(stats.ks_2samp(r, c).statistic))
    return out


def timed(function, *args, repeats: int = 1):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# -- child processes ---------------------------------------------------------------------------------------


def child(argv: list[str]) -> dict[str, float]:
    """Run this script's ``--child`` mode in a fresh process: its wall time, work time and peak RSS (MiB)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", *argv], stdout=subprocess.PIPE, text=True, check=True)
    return {"wall_s": time.perf_counter() - start, **json.loads(done.stdout.strip().splitlines()[-1])}


def run_child(mode: str, args: list[str]) -> None:
    from scoregate.monitoring.profile import ReferenceProfile

    start = time.perf_counter()
    if mode == "drift":
        profile = ReferenceProfile.from_json(Path(args[0]).read_bytes())
        drift(profile, Path(args[1]))
    elif mode == "profile":
        build_profile(Path(args[0]))
    print(json.dumps({"work_s": time.perf_counter() - start, "peak_rss_mib": _peak_rss_mib()}))


def _peak_rss_mib() -> float:
    """This process's high-water RSS (VmHWM): ``wait4``'s ru_maxrss would count the parent's pages too,
    since Linux carries the maximum across the fork and exec of a child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def cli(home: Path, *args: object) -> float:
    env = {**os.environ, "SCOREGATE_HOME": str(home)}
    scoregate = Path(sys.executable).with_name("scoregate")
    start = time.perf_counter()
    subprocess.run([str(scoregate), *map(str, args)], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def cli_end_to_end(folder: Path, reference: Path, current: Path) -> dict[str, float]:
    """Register a python-flavor stand-in with a 20-float schema, then time the two commands."""
    names = pq.read_schema(reference).names
    (folder / "scorer.py").write_text("class Scorer:\n    def predict(self, frame):\n        return frame.iloc[:, 0]\n")
    schema = {"features": [{"name": n, "type": "float"} for n in names]}
    (folder / "schema.json").write_text(json.dumps(schema))
    home = folder / "home"
    cli(home, "register", "bench", folder / "scorer.py", "--flavor", "python", "--schema", folder / "schema.json")
    return {
        "reference_s": cli(home, "monitor", "reference", "bench@1", reference, "--no-score"),
        "drift_s": cli(home, "monitor", "drift", "bench@1", "--current", current, "--no-score"),
    }


# -- Evidently, in its own venv -------------------------------------------------------------------------

EVIDENTLY_SCRIPT = """
import sys, time, json
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
start = time.perf_counter()
Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
work = time.perf_counter() - start
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"work_s": work, "peak_rss_mib": int(hwm.split()[1]) / 1024}))
"""


def evidently(cache: Path, reference: Path, current: Path) -> dict[str, float]:
    venv = cache / "evidently-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Evidently 0.7 imports pandas internals that pandas 3 removed
    wanted = ["evidently>=0.7,<0.8", "pandas>=2,<3", "pyarrow"]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True, capture_output=True)
    script = cache / "evidently_drift.py"
    script.write_text(EVIDENTLY_SCRIPT)
    start = time.perf_counter()
    done = subprocess.run([str(python), str(script), str(reference), str(current)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit("the Evidently run failed")
    return {"wall_s": time.perf_counter() - start, **json.loads(done.stdout.strip().splitlines()[-1])}


# -- main ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000, help="rows of the memory-flatness run")
    parser.add_argument("--wide", type=int, default=100, help="columns of the wide run (0 to skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="folder for the data files (kept; default temporary)")
    parser.add_argument("--evidently", action="store_true", help="also time Evidently's DataDriftPreset (own venv)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "scoregate-bench")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], args.child[1:])
        return
    with tempfile.TemporaryDirectory(prefix="scoregate-bench-") as tmp:
        folder = args.data or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        report(args, folder)


def report(args: argparse.Namespace, folder: Path) -> None:
    rows = args.rows
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")
    ref = write_data(folder / f"ref-{rows}x20.parquet", rows, 20, seed=1)
    cur = write_data(folder / f"cur-{rows}x20.parquet", rows, 20, seed=2, shift=0.5)

    base_s, base = timed(numpy_baseline, ref, cur, repeats=args.repeats)
    build_s, profile = timed(build_profile, ref, repeats=args.repeats)
    drift_s, result = timed(drift, profile, cur, repeats=args.repeats)
    both_s = build_s + drift_s
    print(f"\n{rows:,} reference + {rows:,} current rows x 20 floats, Parquet (median of {args.repeats}):")
    print(f"  numpy baseline (decile PSI + exact KS)     {base_s:7.2f} s")
    print(f"  drift against the stored profile           {drift_s:7.2f} s   {base_s / drift_s:5.1f}x faster")
    print(f"  profile the reference (3 passes)           {build_s:7.2f} s")
    print(f"  drift with --reference FILE (both)         {both_s:7.2f} s   {base_s / both_s:5.1f}x faster")
    worst_psi = max(abs(c.statistics["psi"] - base[c.name][0]) for c in result.columns)
    worst_ks = max(abs(c.statistics["ks"] - base[c.name][1]) for c in result.columns)
    print(f"  agreement with the baseline: PSI within {worst_psi:.1e}, KS within {worst_ks:.1e}")
    print(f"  flagged: {', '.join(c.name for c in result.drifted) or 'none'} (f00 is shifted by 0.5 sd)")
    print(f"  profile size: {len(profile.canonical_json()) / 1024:.0f} KiB for 20 columns")

    if args.wide:
        wide_ref = write_data(folder / f"ref-{rows}x{args.wide}.parquet", rows, args.wide, seed=3)
        wide_cur = write_data(folder / f"cur-{rows}x{args.wide}.parquet", rows, args.wide, seed=4, shift=0.5)
        wide_base, _ = timed(numpy_baseline, wide_ref, wide_cur)
        wide_build, wide_profile = timed(build_profile, wide_ref)
        wide_drift, _ = timed(drift, wide_profile, wide_cur)
        print(f"\n{rows:,} + {rows:,} rows x {args.wide} floats (one run):")
        print(f"  numpy baseline                             {wide_base:7.2f} s")
        ratio = wide_base / wide_drift
        print(f"  drift against the stored profile           {wide_drift:7.2f} s   {ratio:5.1f}x faster")
        print(f"  drift with --reference FILE (both)         {wide_build + wide_drift:7.2f} s")

    profile_file = folder / "profile.json"
    profile_file.write_bytes(profile.canonical_json())
    big = write_data(folder / f"cur-{args.big_rows}x20.parquet", args.big_rows, 20, seed=5, shift=0.5)
    big_ref = write_data(folder / f"ref-{args.big_rows}x20.parquet", args.big_rows, 20, seed=6)
    print("\npeak memory of a child process (VmHWM), x 20 floats:")
    for label, mode, small_args, big_args in (
        ("drift against a stored profile", "drift", [profile_file, cur], [profile_file, big]),
        ("profile a reference", "profile", [ref], [big_ref]),
    ):
        a, b = child([mode, *map(str, small_args)]), child([mode, *map(str, big_args)])
        print(
            f"  {label:32s} {rows:>11,} rows: {a['peak_rss_mib']:5.0f} MiB ({a['work_s']:5.1f} s)   "
            f"{args.big_rows:>11,} rows: {b['peak_rss_mib']:5.0f} MiB ({b['work_s']:5.1f} s)   "
            f"ratio {b['peak_rss_mib'] / a['peak_rss_mib']:.2f}"
        )

    e2e = cli_end_to_end(folder, ref, cur)
    print(
        f"\nCLI end to end (a process each, imports and registry included): monitor reference "
        f"{e2e['reference_s']:.2f} s, monitor drift {e2e['drift_s']:.2f} s"
    )

    if args.evidently:
        anchor = evidently(args.cache, ref, cur)
        print(
            f"\nEvidently DataDriftPreset: {anchor['work_s']:.1f} s ({anchor['peak_rss_mib']:.0f} MiB peak RSS); "
            f"scoregate with --reference is {anchor['work_s'] / both_s:.0f}x faster"
        )
    print(f"\nload after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
