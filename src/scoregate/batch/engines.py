"""Engines beyond one machine: the same chunk plan and per-chunk commits, run on Ray (Spark: ``spark``).

Each Ray actor is a batch worker: it takes the artifact from the object store (the
bytes the driver verified), checks their digest again, loads the version once and
scores whole chunks with :class:`~scoregate.batch.chunk.ChunkScorer`, committing each to
the job's folder exactly as a local worker does (so the folder must be on storage every
node sees). Plain actors rather than Ray Data's ``map_batches``: no read tasks compete
with the actors for CPUs (Ray Data's actor pools deadlock when actors hold every CPU,
ray#44687), and a chunk stays the unit of commit and retry.

Never hangs: actors take one CPU each and are never more than the cluster's free CPUs (a
pending actor would wait forever), an actor must be ready within ``START_TIMEOUT_S``, a
chunk within the chunk timeout; every actor is killed at the end, whatever happened.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scoregate.batch.local import ATTEMPTS, START_TIMEOUT_S, Stop
from scoregate.batch.plan import Engine, Manifest
from scoregate.batch.store import ChunkRecord, JobFolder
from scoregate.batch.worker import unpack_artifact
from scoregate.errors import ConfigurationError


class RayChunkWorker:
    """The actor's body (wrapped with ``ray.remote`` when the engine starts)."""

    def __init__(self, folder: str, blob: bytes, storage: dict[str, Any], threads: int) -> None:
        from scoregate.batch.worker import load_chunk_scorer

        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
        self.folder = JobFolder(Path(folder))
        self.manifest = self.folder.manifest()
        self.storage = storage
        self._tmp = tempfile.mkdtemp(prefix="scoregate-ray-")
        artifact = unpack_artifact(blob, self.manifest, Path(self._tmp))
        if threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(threads)
        init = {"artifact": str(artifact), "blob": str(Path(self._tmp) / "blob")}
        self.scorer = load_chunk_scorer(init, self.manifest)

    def ready(self) -> int:
        return os.getpid()

    def score(self, index: int, attempt: int) -> str:
        from scoregate.batch.worker import score_chunk

        return score_chunk(self.scorer, self.folder, self.manifest, index, attempt, self.storage).model_dump_json()


def run(
    engine: Engine,
    registry: Any,
    folder: JobFolder,
    manifest: Manifest,
    *,
    workers: int,
    storage: dict[str, Any],
    on_commit: Callable[[ChunkRecord], Stop | None],
    chunk_timeout: float = 3600.0,
    address: str | None = None,
) -> Stop | None:
    if engine is Engine.RAY:
        return _run_ray(registry, folder, manifest, workers, storage, on_commit, chunk_timeout, address)
    if engine is Engine.SPARK:
        from scoregate.batch.spark import run_spark

        return run_spark(registry, folder, manifest, workers=workers, storage=storage, on_commit=on_commit)
    raise ConfigurationError(f"unknown engine {engine.value!r}: use local, ray or spark")


def _run_ray(
    registry: Any,
    folder: JobFolder,
    manifest: Manifest,
    workers: int,
    storage: dict[str, Any],
    on_commit: Callable[[ChunkRecord], Stop | None],
    chunk_timeout: float,
    address: str | None,
) -> Stop | None:
    try:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
    except ImportError:
        raise ConfigurationError("--engine ray needs Ray: pip install 'ray[data]'") from None
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigurationError(
            "--engine ray needs a running cluster: start one (`ray start --head`) and set RAY_ADDRESS or --ray-address"
        )
    store = registry.artifacts
    blob = store.fetch(manifest.artifact_digest).read_bytes()  # verified on fetch
    done = folder.done()
    pending = collections.deque(c.index for c in manifest.chunks if c.index not in done)
    path = [p for p in sys.path if p]
    ray.init(
        address=address,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(path), "ARROW_DEFAULT_MEMORY_POOL": "system"}},
        log_to_driver=False,
        configure_logging=False,
    )
    actors: list[Any] = []
    try:
        free = int(ray.available_resources().get("CPU", 0))
        if free < 1:
            return Stop(f"the Ray cluster at {address} has no free CPU for a worker")
        count = max(1, min(workers, free, len(pending)))
        remote = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(RayChunkWorker)
        blob_ref = ray.put(blob)

        def new_actor() -> Any:
            return remote.remote(str(folder.root), blob_ref, storage, 1)

        actors = [new_actor() for _ in range(count)]
        try:
            ray.get([a.ready.remote() for a in actors], timeout=START_TIMEOUT_S)
        except GetTimeoutError:
            return Stop(f"Ray workers were not ready within {START_TIMEOUT_S:g} s")
        except (RayActorError, RayTaskError) as exc:
            return Stop(f"a Ray worker could not start: {_one_line(exc)}")
        failures: collections.Counter[int] = collections.Counter()
        running: dict[Any, tuple[Any, int, float]] = {}  # ref -> (actor, chunk, started)
        idle = list(actors)
        while pending or running:
            while idle and pending:
                actor = idle.pop()
                index = pending.popleft()
                running[actor.score.remote(index, failures[index] + 1)] = (actor, index, time.monotonic())
            finished, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            now = time.monotonic()
            for ref in list(running):
                actor, index, started = running[ref]
                if ref not in finished and now - started <= chunk_timeout:
                    continue
                del running[ref]
                try:
                    if ref not in finished:
                        raise TimeoutError(f"not done within --chunk-timeout {chunk_timeout:g} s")
                    record = ChunkRecord.model_validate_json(ray.get(ref))
                except (RayActorError, RayTaskError, TimeoutError) as exc:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
                    actors.remove(actor)
                    failures[index] += 1
                    if failures[index] >= ATTEMPTS:
                        return Stop(f"chunk {index} failed {ATTEMPTS} times: {_one_line(exc)}", chunk=index)
                    pending.appendleft(index)
                    replacement = new_actor()
                    actors.append(replacement)
                    idle.append(replacement)
                    continue
                idle.append(actor)
                stop = on_commit(record)
                if stop is not None:
                    return stop
        return None
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        ray.shutdown()


def _one_line(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return (text[-1] if text else type(cause).__name__)[:300]
