"""A batch job from plan to verdict, on whichever engine: plan, run, resume, verify.

The functions here know the registry only for what a job needs of it (the version, its
artifact, verified); the job's record and audit events are the service's
(:mod:`scoregate.batch.service`). Every engine scores the same chunk plan through
:class:`~scoregate.batch.chunk.ChunkScorer` and commits through
:class:`~scoregate.batch.store.JobFolder`, so their outputs are the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from scoregate.batch.local import PoolSettings, Stop, run_chunks
from scoregate.batch.plan import (
    BatchOptions,
    Engine,
    Manifest,
    check_columns,
    fingerprint,
    input_files,
    plan_chunks,
)
from scoregate.batch.store import ChunkRecord, JobFolder, output_digest, read_part, sha256_path
from scoregate.errors import ConflictError, IntegrityError, InvalidInputError

#: What a progress callback gets: rows done (scored and rejected), rows in the job.
Progress = Callable[[int, int], None]


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # the reject rate went above the limit
    STOPPED = "stopped"  # a chunk failed twice, a worker could not start, or interrupted: resumable


@dataclass
class JobResult:
    job: str
    state: JobState
    message: str
    rows: int
    scored: int
    rejected: int
    chunks_done: int
    chunks_total: int
    seconds: float
    output_digest: str | None = None
    failed_chunk: int | None = None
    redone: list[int] = field(default_factory=list)

    @property
    def reject_rate(self) -> float:
        done = self.scored + self.rejected
        return self.rejected / done if done else 0.0


def new_job_id() -> str:
    return f"b{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


def plan(
    version: Any,
    input_url: str,
    output: Path,
    options: BatchOptions,
    *,
    who: str | None,
    storage: dict[str, Any] | None = None,
    job: str | None = None,
) -> tuple[JobFolder, Manifest]:
    """Fingerprint the inputs, cut them into chunks and write the manifest into a new OUTPUT folder."""
    storage = storage or {}
    schema = version.input_schema
    if "://" in str(output) or str(output).startswith("s3:"):
        raise InvalidInputError(f"invalid OUTPUT {output}: give a local (or mounted) folder; inputs may be s3://")
    output = Path(output).absolute()
    folder = JobFolder(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):  # before hashing anything
        raise ConflictError(
            f"OUTPUT {output} already exists and is not empty: give a new folder "
            "(or `scoregate batch resume JOB` to finish the job that wrote it)"
        )
    unknown = [c for c in options.keep if c.startswith("_")]
    if unknown:
        raise InvalidInputError(f"invalid --keep {unknown[0]!r}: names starting with _ are scoregate's own")
    if "://" not in input_url:
        input_url = str(Path(input_url).expanduser().absolute())  # a resume may run from another folder
    files = input_files(input_url, storage)
    inputs = [fingerprint(url, kind, options.chunk_rows, storage) for url, kind in files]
    check_columns(inputs, schema.feature_names, options.keep, storage)
    outputs = {o.name for o in schema.outputs}
    clash = [c for c in options.keep if c in outputs]
    if clash:
        raise InvalidInputError(f"invalid --keep {clash[0]!r}: the model has an output of that name")
    manifest = Manifest(
        job=job or new_job_id(),
        created_at=dt.datetime.now(dt.UTC),
        created_by=who,
        name=version.name,
        version=version.version,
        flavor=version.flavor,
        artifact_digest=version.artifact_digest,
        artifact_kind=version.artifact_kind,
        artifact_name=version.artifact_name,
        schema_digest=schema.contract_digest(),
        input_schema=schema.model_dump(mode="json"),
        input=input_url,
        output=str(output),
        options=options,
        inputs=inputs,
        chunks=plan_chunks(inputs, options.chunk_rows),
    )
    folder.create(manifest)
    return folder, manifest


def check_inputs(manifest: Manifest, storage: dict[str, Any] | None = None) -> None:
    """Refuse to go on when an input is not what it was when the job was planned."""
    storage = storage or {}
    files = [url for url, _ in input_files(manifest.input, storage)]
    planned = [f.url for f in manifest.inputs]
    if files != planned:
        added = sorted(set(files) - set(planned))
        gone = sorted(set(planned) - set(files))
        raise IntegrityError(
            f"the input of job {manifest.job} changed since it was planned: "
            + "; ".join([*(f"new file {u}" for u in added), *(f"file gone {u}" for u in gone)] or ["files reordered"])
            + ": refused (start a new job for the new input)"
        )
    for planned_file in manifest.inputs:
        now = fingerprint(planned_file.url, planned_file.format, manifest.options.chunk_rows, storage)
        if (now.size, now.sha256) != (planned_file.size, planned_file.sha256):
            raise IntegrityError(
                f"the input of job {manifest.job} changed since it was planned: {planned_file.url} was "
                f"{planned_file.size} bytes sha256:{planned_file.sha256[:16]}..., it is now {now.size} bytes "
                f"sha256:{now.sha256[:16]}...: refused (start a new job for the new input)"
            )


def check_version(manifest: Manifest, version: Any) -> None:
    if version.artifact_digest != manifest.artifact_digest:
        raise IntegrityError(
            f"{manifest.ref} has artifact sha256:{version.artifact_digest}, the job was planned with "
            f"sha256:{manifest.artifact_digest}: refused"
        )


def worker_init(registry: Any, folder: JobFolder, manifest: Manifest, storage: dict[str, Any]) -> dict[str, Any]:
    """What a worker is started with: the verified artifact, materialized locally once for all of them."""
    store = registry.artifacts
    blob = store.fetch(manifest.artifact_digest)
    artifact = store.materialize(manifest.artifact_digest, manifest.artifact_kind, manifest.artifact_name)
    return {"folder": str(folder.root), "artifact": str(artifact), "blob": str(blob), "storage": storage}


def run(
    registry: Any,
    folder: JobFolder,
    manifest: Manifest,
    *,
    engine: Engine = Engine.LOCAL,
    workers: int | None = None,
    chunk_timeout: float = 3600.0,
    memory_mb: int | None = None,
    storage: dict[str, Any] | None = None,
    on_progress: Progress | None = None,
    on_commit: Callable[[ChunkRecord], None] | None = None,
    ray_address: str | None = None,
) -> JobResult:
    """Score the chunks not committed yet; the result says whether the job is done, failed or stopped."""
    storage = storage or {}
    started = time.monotonic()
    folder.clean()
    done = folder.done()
    todo = [c.index for c in manifest.chunks if c.index not in done]
    total = manifest.total_rows
    budget = manifest.options.max_reject_rate * total
    counts = {"rows": sum(r.rows for r in done.values()), "rejected": sum(r.rejected for r in done.values())}
    if on_progress:
        on_progress(counts["rows"], total)
    folder.write_json(folder.meta / "status.json", {"state": JobState.RUNNING, "pid": os.getpid()})

    def committed(record: ChunkRecord) -> Stop | None:
        done[record.index] = record
        counts["rows"] += record.rows
        counts["rejected"] += record.rejected
        if on_progress:
            on_progress(counts["rows"], total)
        if on_commit:
            on_commit(record)
        if counts["rejected"] > budget:
            return Stop(_reject_message(counts["rejected"], total, manifest.options.max_reject_rate))
        return None

    cores = os.cpu_count() or 1
    n = workers or cores
    stop: Stop | None = None
    redone: list[int] = []
    if todo:
        if counts["rejected"] > budget:
            stop = Stop(_reject_message(counts["rejected"], total, manifest.options.max_reject_rate))
        elif engine is Engine.LOCAL:
            init = worker_init(registry, folder, manifest, storage)
            pool = PoolSettings(workers=n, chunk_timeout=chunk_timeout, memory_mb=memory_mb, threads=max(1, cores // n))
            outcome = run_chunks(todo, init, pool, committed)
            stop, redone = outcome.stop, outcome.retried
        else:
            from scoregate.batch import engines

            stop = engines.run(
                engine,
                registry,
                folder,
                manifest,
                workers=n,
                storage=storage,
                on_commit=committed,
                chunk_timeout=chunk_timeout,
                address=ray_address,
            )
    rejected = counts["rejected"]
    scored = sum(r.scored for r in done.values())
    if stop is None and len(done) == len(manifest.chunks):
        if rejected > budget:
            state, message = JobState.FAILED, _reject_message(rejected, total, manifest.options.max_reject_rate)
        else:
            state, message = JobState.DONE, f"scored {scored} rows, rejected {rejected}"
    elif stop is not None and stop.chunk is None and rejected > budget:
        state, message = JobState.FAILED, stop.message
    else:
        state = JobState.STOPPED
        message = (stop.message if stop else "interrupted") + f"; resume with `scoregate batch resume {manifest.job}`"
    digest = output_digest(list(done.values())) if state is not JobState.STOPPED else None
    result = JobResult(
        job=manifest.job,
        state=state,
        message=message,
        rows=total,
        scored=scored,
        rejected=rejected,
        chunks_done=len(done),
        chunks_total=len(manifest.chunks),
        seconds=round(time.monotonic() - started, 3),
        output_digest=digest,
        failed_chunk=stop.chunk if stop else None,
        redone=redone,
    )
    folder.write_json(
        folder.meta / "status.json",
        {"state": state, "message": message, "output_digest": digest, "scored": scored, "rejected": rejected},
    )
    return result


def _reject_message(rejected: int, total: int, rate: float) -> str:
    return (
        f"rejected {rejected} of {total} rows ({rejected / max(total, 1):.2%}), above --max-reject-rate "
        f"{rate:g} ({int(rate * total)} rows): the job failed; the rejects are in OUTPUT/_rejects"
    )


def progress(folder: JobFolder, manifest: Manifest) -> dict[str, Any]:
    """What another process sees of a job: chunks committed, rows done, the state last written."""
    done = folder.done()
    return {
        "chunks_done": len(done),
        "chunks_total": len(manifest.chunks),
        "rows_done": sum(r.rows for r in done.values()),
        "rows_total": manifest.total_rows,
        "scored": sum(r.scored for r in done.values()),
        "rejected": sum(r.rejected for r in done.values()),
        **folder.status(),
    }


@dataclass
class Verification:
    ok: bool
    problems: list[str]
    parts_checked: int
    rows_rescored: int


def verify(
    registry: Any,
    folder: JobFolder,
    manifest: Manifest,
    *,
    recorded_digest: str | None,
    sample_chunks: int = 3,
    sample_rows: int = 1000,
    seed: int | None = None,
    storage: dict[str, Any] | None = None,
) -> Verification:
    """Every part against its record and the record against the registry's digest; then a sample of
    chunks re-read from the input and re-scored in this process, row for row against the output."""
    from scoregate.batch.worker import load_chunk_scorer

    storage = storage or {}
    problems: list[str] = []
    done = folder.done()
    for record_path in folder.records.glob("[0-9]*.json"):
        index = int(record_path.stem)
        if index not in done:
            problems.append(f"chunk {index}: its part is missing or not the size its record gives")
    for index, record in sorted(done.items()):
        part = folder.root / record.part
        if sha256_path(part) != record.part_sha256:
            problems.append(f"chunk {index}: {record.part} does not hash to its recorded sha256 (altered)")
        if record.rejects_sha256 is not None:
            rejects = folder.rejects / f"part-{index:06d}.parquet"
            if not rejects.is_file() or sha256_path(rejects) != record.rejects_sha256:
                problems.append(f"chunk {index}: its rejects part is missing or altered")
    if len(done) != len(manifest.chunks):
        problems.append(f"{len(manifest.chunks) - len(done)} of {len(manifest.chunks)} chunks are not committed")
    if recorded_digest is not None and output_digest(list(done.values())) != recorded_digest:
        problems.append("the chunk records do not give the output digest the registry recorded (records altered)")
    rescored = 0
    if done:
        check_inputs(manifest, storage)
        init = worker_init(registry, folder, manifest, storage)
        scorer = load_chunk_scorer(init, manifest)
        rng = random.Random(seed)
        for index in sorted(rng.sample(sorted(done), min(sample_chunks, len(done)))):
            chunk = manifest.chunks[index]
            again = scorer.score(scorer.read(manifest.inputs[chunk.file], chunk, storage), chunk.first_row).outputs
            stored = read_part(folder.root / done[index].part, manifest.options.output_format)
            rows = sorted(rng.sample(range(again.num_rows), min(sample_rows, again.num_rows)))
            if stored.num_rows != again.num_rows:
                problems.append(f"chunk {index}: {stored.num_rows} output rows, re-scoring gives {again.num_rows}")
                continue
            picked = again.take(rows)
            kept = stored.take(rows).select(picked.column_names).cast(picked.schema)
            for name in picked.column_names:
                if not kept.column(name).equals(picked.column(name)):
                    problems.append(f"chunk {index}: column {name!r} differs from re-scoring the input")
            rescored += len(rows)
    return Verification(ok=not problems, problems=problems, parts_checked=len(done), rows_rescored=rescored)
