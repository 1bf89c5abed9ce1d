"""The local engine: exactly-once output, rejects, the reject-rate limit, crashes, kill -9 and resume, verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoregate.batch import job
from scoregate.batch.plan import BatchOptions
from scoregate.config import Settings
from scoregate.errors import ConflictError, IntegrityError
from scoregate.registry import Registry

from .conftest import applicants, write_parquet

KEEP = ("id", "customer_id")


def start(settings: Settings, version, source: Path, output: Path, **options):  # type: ignore[no-untyped-def]
    return job.plan(version, str(source), output, BatchOptions(keep=KEEP, **options), who="tester")


def dataset(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas().sort_values("_row").reset_index(drop=True)


def test_every_row_once_scored_as_in_process_with_bad_rows_in_rejects(
    tmp_path: Path, batch_home: Settings, float_model
) -> None:
    frame = applicants(30_000, seed=3)
    frame.loc[[5, 12_345], "x2"] = np.inf  # broken rows, in two chunks
    frame.loc[20_000, "x4"] = np.nan  # a null in a feature that is not nullable
    source = write_parquet(frame, tmp_path / "in.parquet", 7_000)
    registry = Registry.open(batch_home)
    folder, manifest = start(batch_home, float_model, source, tmp_path / "out", chunk_rows=10_000)
    result = job.run(registry, folder, manifest, workers=2)
    assert result.state is job.JobState.DONE, result.message
    out = dataset(tmp_path / "out")
    rejects = dataset(tmp_path / "out" / "_rejects")
    assert sorted([*out["_row"], *rejects["_row"]]) == list(range(len(frame)))  # every row exactly once
    assert {5, 12_345, 20_000} <= set(rejects["_row"])
    assert rejects.set_index("_row").loc[5, "_violations"].count('"rule":"finite"') == 1
    assert (out["id"] == out["_row"]).all() and (rejects["customer_id"] == rejects["_row"].map("c{:07d}".format)).all()
    expected = registry.load(float_model.ref).predict(frame.iloc[out["_row"]].reset_index(drop=True))
    for name in expected.columns:
        assert np.array_equal(out[name].to_numpy(), expected[name].to_numpy())
    assert result.scored == len(out) and result.rejected == len(rejects)
    assert job.verify(registry, folder, manifest, recorded_digest=result.output_digest).ok


def test_reject_rate_above_the_limit_fails_the_job(tmp_path: Path, batch_home: Settings, float_model) -> None:
    frame = applicants(20_000, seed=4)
    frame.loc[frame.index[::50], "x0"] = np.inf  # 2% broken
    source = write_parquet(frame, tmp_path / "in.parquet", 5_000)
    registry = Registry.open(batch_home)
    folder, manifest = start(batch_home, float_model, source, tmp_path / "out", chunk_rows=5_000, max_reject_rate=0.01)
    result = job.run(registry, folder, manifest, workers=1)
    assert result.state is job.JobState.FAILED
    assert "above --max-reject-rate 0.01" in result.message
    folder2, manifest2 = start(
        batch_home, float_model, source, tmp_path / "out2", chunk_rows=5_000, max_reject_rate=0.05
    )
    assert job.run(registry, folder2, manifest2, workers=1).state is job.JobState.DONE


def test_a_chunk_that_kills_its_worker_is_retried_once_then_named(
    tmp_path: Path, batch_home: Settings, crasher
) -> None:
    frame = applicants(6_000, seed=5)
    frame.loc[4_321, "x0"] = 77.0  # in chunk 2 of 1,000-row chunks... (rows 4,000-4,999: chunk 4)
    source = write_parquet(frame, tmp_path / "in.parquet", 1_000)
    registry = Registry.open(batch_home)
    folder, manifest = start(batch_home, crasher, source, tmp_path / "out", chunk_rows=1_000)
    result = job.run(registry, folder, manifest, workers=2)
    assert result.state is job.JobState.STOPPED
    assert result.failed_chunk == 4 and result.redone == [4]
    assert "chunk 4 failed 2 times" in result.message and "exit code 3" in result.message
    assert "scoregate batch resume" in result.message
    assert 4 not in folder.done()
    assert _orphans() == []


def test_kill_9_mid_job_then_resume_gives_the_uninterrupted_output(
    tmp_path: Path, batch_home: Settings, float_model
) -> None:
    frame = applicants(60_000, seed=6)
    frame.loc[[10, 33_333], "x1"] = -np.inf
    source = write_parquet(frame, tmp_path / "in.parquet", 2_000)
    registry = Registry.open(batch_home)
    reference_folder, reference = start(batch_home, float_model, source, tmp_path / "ref", chunk_rows=2_000)
    uninterrupted = job.run(registry, reference_folder, reference, workers=1)
    assert uninterrupted.state is job.JobState.DONE

    folder, manifest = start(batch_home, float_model, source, tmp_path / "out", chunk_rows=2_000)
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(batch_home.home), str(folder.root)],
        start_new_session=True,  # its own process group: kill -9 takes the coordinator and its workers
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.records.glob("*.json"))) < 5:
            assert runner.poll() is None, "the job ended before it was killed"
            assert time.monotonic() < deadline, "no chunk committed in 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait()
    time.sleep(0.2)  # the workers die with their coordinator (PR_SET_PDEATHSIG)
    committed = len(folder.done())
    assert 0 < committed < len(manifest.chunks)
    resumed = job.run(registry, folder, folder.manifest(), workers=2)
    assert resumed.state is job.JobState.DONE
    assert resumed.output_digest == uninterrupted.output_digest  # the same bytes, part for part
    out = dataset(folder.root)
    rejects = dataset(folder.rejects)
    assert sorted([*out["_row"], *rejects["_row"]]) == list(range(len(frame)))
    assert out.equals(dataset(reference_folder.root))
    assert _orphans() == []


RUNNER = """
import sys
from pathlib import Path
from scoregate.batch import job
from scoregate.batch.store import JobFolder
from scoregate.config import Settings
from scoregate.registry import Registry
folder = JobFolder(Path(sys.argv[2]))
job.run(Registry.open(Settings(home=Path(sys.argv[1]))), folder, folder.manifest(), workers=2)
"""


def test_an_input_changed_before_resume_is_refused(tmp_path: Path, batch_home: Settings, float_model) -> None:
    frame = applicants(4_000, seed=7)
    source = write_parquet(frame, tmp_path / "in.parquet", 1_000)
    folder, manifest = start(batch_home, float_model, source, tmp_path / "out", chunk_rows=1_000)
    frame.loc[3_999, "x0"] = 0.5  # one value of the last row group
    write_parquet(frame, source, 1_000)
    with pytest.raises(IntegrityError, match=r"changed since it was planned: .*in.parquet was"):
        job.check_inputs(manifest)
    (tmp_path / "extra").mkdir()
    with pytest.raises(ConflictError, match="already exists and is not empty"):
        start(batch_home, float_model, source, folder.root, chunk_rows=1_000)


def test_verify_catches_a_tampered_part_and_a_forged_record(tmp_path: Path, batch_home: Settings, float_model) -> None:
    source = write_parquet(applicants(6_000, seed=8), tmp_path / "in.parquet", 2_000)
    registry = Registry.open(batch_home)
    folder, manifest = start(batch_home, float_model, source, tmp_path / "out", chunk_rows=2_000)
    result = job.run(registry, folder, manifest, workers=1)
    part = folder.root / "part-000001.parquet"
    table = pq.read_table(part).to_pandas()
    table.loc[0, "proba_1"] = 0.5
    table.to_parquet(part, index=False)  # another score in one row: the size changes too
    check = job.verify(registry, folder, manifest, recorded_digest=result.output_digest, sample_chunks=3)
    assert not check.ok and any("chunk 1" in p for p in check.problems)

    # A forger who also rewrites the chunk record to match is caught by the recorded output digest.
    from scoregate.batch.store import ChunkRecord, sha256_path

    path = folder.records / "000001.json"
    old = ChunkRecord.model_validate_json(path.read_bytes())
    forged = old.model_copy(update={"part_sha256": sha256_path(part), "part_bytes": part.stat().st_size})
    path.write_text(forged.model_dump_json())
    check = job.verify(
        registry, folder, manifest, recorded_digest=result.output_digest, sample_chunks=3, sample_rows=2_000
    )
    assert not check.ok
    assert any("output digest the registry recorded" in p for p in check.problems)
    assert any("column 'proba_1' differs" in p for p in check.problems)


def test_workers_score_a_file_larger_than_their_memory_cap(tmp_path: Path, batch_home: Settings, float_model) -> None:
    """Each worker may hold 700 MB of data (RLIMIT_DATA; imports take about 300 MB of it); the file is larger
    and every byte of it is read (a 2 KB payload column is kept), a chunk at a time."""
    rng = np.random.default_rng(9)
    rows, cap_mb = 400_000, 700
    path = tmp_path / "big.parquet"
    import pyarrow as pa

    writer = None
    for start_id in range(0, rows, 20_000):
        frame = applicants(20_000, seed=start_id, start_id=start_id)
        payload = [rng.bytes(1024).hex() for _ in range(20_000)]
        table = pa.Table.from_pandas(frame.assign(customer_id=payload), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table, row_group_size=20_000)
    assert writer is not None
    writer.close()
    assert path.stat().st_size > cap_mb << 20
    probe = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(cap_mb), str(path)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "MemoryError" in probe.stderr + probe.stdout  # the cap binds
    registry = Registry.open(batch_home)
    folder, manifest = start(batch_home, float_model, path, tmp_path / "out", chunk_rows=10_000)
    result = job.run(registry, folder, manifest, workers=2, memory_mb=cap_mb)
    assert result.state is job.JobState.DONE, result.message
    assert result.scored + result.rejected == rows
    assert pq.ParquetFile(folder.root / "part-000003.parquet").metadata.num_rows + (folder.done()[3].rejected) == 10_000


READ_ALL = """
import os
os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
import sys
from scoregate.batch.worker import limit_memory
limit_memory(int(sys.argv[1]))
import pyarrow.parquet as pq
try:
    pq.read_table(sys.argv[2]).to_pandas()
except MemoryError as exc:
    print("MemoryError", exc)
    sys.exit(1)
except Exception as exc:  # pyarrow reports a failed allocation as ArrowMemoryError
    print("MemoryError" if "memory" in str(exc).lower() or "alloc" in str(exc).lower() else "other", exc)
    sys.exit(1)
"""


def _orphans() -> list[int]:
    """Batch workers still alive whose coordinator is gone (or this test process's own left behind)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if "scoregate.batch.worker" in cmdline and (proc.info["ppid"] in (1, os.getpid())):
            found.append(proc.pid)
    return found
