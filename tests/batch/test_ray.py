"""The Ray engine on a real local cluster (``ray start --head``): the local engine's output, no hang, no orphan."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from scoregate.batch import job
from scoregate.batch.plan import BatchOptions, Engine
from scoregate.config import Settings
from scoregate.registry import Registry

from .conftest import applicants, write_parquet

pytest.importorskip("ray")
pytestmark = pytest.mark.timeout(600)


def _ours(marker: str) -> list[psutil.Process]:
    """The processes whose command line names ``marker``, and all their descendants: Ray's agents
    (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) rename themselves, so only the tree finds them."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in (proc.info["cmdline"] or [])):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update((child.pid, child) for child in proc.children(recursive=True))
    return list(found.values())


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A two-CPU head node of our own, in a temp folder of our own: stopped by killing exactly its processes
    (``ray stop`` would stop every Ray cluster of this user on the machine)."""
    ray = Path(sys.executable).with_name("ray")
    temp = f"/tmp/sgray-{uuid.uuid4().hex[:8]}"  # short: Ray's socket paths must fit 107 bytes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [str(ray), "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"127.0.0.1:{port}"
    finally:
        cluster = _ours(temp)  # the whole tree, taken before anything dies and is re-parented
        for proc in cluster:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _, alive = psutil.wait_procs(cluster, timeout=30)
        assert not alive and not _ours(temp), f"Ray processes outlived the cluster: {alive}"
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_gives_the_local_engines_output_and_never_hangs(
    tmp_path: Path, batch_home: Settings, float_model, ray_cluster: str
) -> None:
    frame = applicants(12_000, seed=21)
    frame.loc[[3, 9_000], "x2"] = float("inf")
    source = write_parquet(frame, tmp_path / "in.parquet", 2_000)
    registry = Registry.open(batch_home)
    options = BatchOptions(chunk_rows=2_000, keep=("id",))
    local_folder, local_manifest = job.plan(float_model, str(source), tmp_path / "local", options, who="t")
    local = job.run(registry, local_folder, local_manifest, workers=2)
    assert local.state is job.JobState.DONE

    # More workers than the cluster's CPUs: capped, not left pending forever.
    folder, manifest = job.plan(float_model, str(source), tmp_path / "ray", options, who="t")
    started = time.monotonic()
    result = job.run(registry, folder, manifest, engine=Engine.RAY, workers=8, ray_address=ray_cluster)
    assert result.state is job.JobState.DONE, result.message
    assert time.monotonic() - started < 300
    assert result.output_digest == local.output_digest  # the same bytes, part for part
    assert sorted(p.name for p in folder.root.glob("part-*")) == sorted(
        p.name for p in local_folder.root.glob("part-*")
    )
