"""Batch jobs as registry records: start, resume, list, show and verify, with audit events.

A job is a row of ``batch_jobs`` written with a ``batch.start`` audit event in the
transaction that plans it, and updated with ``batch.end`` (or ``batch.resume``) in the
transaction that records how it ended. ``verify`` checks the output folder against the
output digest the registry recorded, not against the folder's own records, which anyone
who can write the folder can rewrite. The tier's ``batch_requires_protected_alias``
policy rule is judged from the aliases the registry holds, when the job starts and again
when it resumes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scoregate.batch import job as jobs
from scoregate.batch.plan import BatchOptions, Engine, Manifest
from scoregate.batch.store import JobFolder
from scoregate.errors import ConflictError, IntegrityError, NotFoundError, PolicyViolationError
from scoregate.governance.audit_checks import check_rows
from scoregate.governance.tables import BatchJobRow
from scoregate.refs import ModelRef
from scoregate.registry.tables import AliasRow, ModelRow, VersionRow


@dataclass(frozen=True)
class JobRecord:
    job: str
    ref: str
    artifact_digest: str
    engine: str
    state: str
    input: str
    input_digest: str
    input_files: list[dict[str, Any]]
    output: str
    output_digest: str | None
    rows: int
    chunks: int
    scored: int
    rejected: int
    seconds: float
    runs: int
    message: str | None
    created_by: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    options: dict[str, Any]


def _input_digest(manifest: Manifest) -> str:
    digest = hashlib.sha256()
    for f in manifest.inputs:
        digest.update(f"{f.url}\0{f.size}\0{f.sha256}\n".encode())
    return digest.hexdigest()


class BatchService:
    def __init__(self, registry: Any) -> None:
        self.registry = registry

    # --- policy ------------------------------------------------------------------------------------

    def _check_policy(self, session: Any, name: str, version: int) -> None:
        model, row = self.registry.find(session, ModelRef(name, version=version))
        policy = self.registry.policy_in_force(session)
        tier = policy.tier(model.risk_tier)
        if not tier.batch_requires_protected_alias:
            return
        aliases = session.scalars(select(AliasRow).where(AliasRow.version_id == row.id)).all()
        check_rows(session, aliases)
        held = sorted(a.alias for a in aliases if a.alias in policy.protected_aliases)
        if not held:
            raise PolicyViolationError(
                f"{name}@{version} holds no protected alias ({', '.join(policy.protected_aliases)}): the policy for "
                f"risk tier {model.risk_tier or policy.default_tier!r} lets batch jobs score only with such a version",
                details=[{"rule": "batch_requires_protected_alias", "message": "no protected alias"}],
            )

    # --- jobs --------------------------------------------------------------------------------------

    def start(
        self,
        ref: str,
        input_url: str,
        output: str | Path,
        options: BatchOptions,
        *,
        engine: Engine = Engine.LOCAL,
        workers: int | None = None,
        chunk_timeout: float = 3600.0,
        memory_mb: int | None = None,
        storage: dict[str, Any] | None = None,
        on_progress: jobs.Progress | None = None,
        on_plan: Any = None,
        ray_address: str | None = None,
    ) -> jobs.JobResult:
        """Plan a job into a new OUTPUT folder, record it, run it, record how it ended."""
        version = self.registry.resolve(ModelRef.parse(ref, require_selector=True))
        with self.registry.reading() as session:
            self._check_policy(session, version.name, version.version)
        who = self.registry.whoami().name
        folder, manifest = jobs.plan(version, input_url, Path(output), options, who=who, storage=storage)
        with self.registry.mutation(None, version.ref) as (session, actor):
            self._check_policy(session, version.name, version.version)
            _, row = self.registry.find(session, ModelRef(version.name, version=version.version))
            record = BatchJobRow(
                job=manifest.job,
                version_id=row.id,
                artifact_digest=manifest.artifact_digest,
                engine=engine.value,
                state=jobs.JobState.RUNNING.value,
                input=manifest.input,
                input_files=[{"url": f.url, "size": f.size, "sha256": f.sha256} for f in manifest.inputs],
                input_digest=_input_digest(manifest),
                output=manifest.output,
                manifest_digest=folder.manifest_digest(),
                options={**options.model_dump(mode="json"), "workers": workers},
                rows=manifest.total_rows,
                chunks=len(manifest.chunks),
                created_by=actor.name,
            )
            session.add(record)
            session.flush()
            self.registry.record_event(
                session,
                actor,
                "batch.start",
                manifest.job,
                after={
                    "ref": manifest.ref,
                    "artifact_digest": manifest.artifact_digest,
                    "input_digest": record.input_digest,
                    "rows": manifest.total_rows,
                    "engine": engine.value,
                    "output": manifest.output,
                },
            )
        if on_plan is not None:
            on_plan(manifest)
        return self._run(folder, manifest, engine, workers, chunk_timeout, memory_mb, storage, on_progress, ray_address)

    def resume(
        self,
        job_id: str,
        *,
        workers: int | None = None,
        chunk_timeout: float = 3600.0,
        memory_mb: int | None = None,
        storage: dict[str, Any] | None = None,
        on_progress: jobs.Progress | None = None,
        ray_address: str | None = None,
    ) -> jobs.JobResult:
        """Finish a stopped or killed job: the same plan, the same version, the same input bytes."""
        row = self._row(job_id)
        if row.state in (jobs.JobState.DONE, jobs.JobState.FAILED):
            raise ConflictError(f"batch job {job_id} is {row.state}: nothing to resume ({row.message})")
        folder = JobFolder(Path(row.output))
        manifest = self._manifest(folder, row)
        version = self.registry.resolve(ModelRef(manifest.name, version=manifest.version))
        jobs.check_version(manifest, version)
        with self.registry.reading() as session:
            self._check_policy(session, manifest.name, manifest.version)
        jobs.check_inputs(manifest, storage)
        with self.registry.mutation(None, manifest.ref) as (session, actor):
            stored = self._locked(session, job_id)
            stored.state = jobs.JobState.RUNNING.value
            stored.runs += 1
            self.registry.record_event(session, actor, "batch.resume", job_id, after={"run": stored.runs})
        engine = Engine(row.engine)
        return self._run(folder, manifest, engine, workers, chunk_timeout, memory_mb, storage, on_progress, ray_address)

    def _run(
        self,
        folder: JobFolder,
        manifest: Manifest,
        engine: Engine,
        workers: int | None,
        chunk_timeout: float,
        memory_mb: int | None,
        storage: dict[str, Any] | None,
        on_progress: jobs.Progress | None,
        ray_address: str | None = None,
    ) -> jobs.JobResult:
        try:
            result = jobs.run(
                self.registry,
                folder,
                manifest,
                engine=engine,
                workers=workers,
                chunk_timeout=chunk_timeout,
                memory_mb=memory_mb,
                storage=storage,
                on_progress=on_progress,
                ray_address=ray_address,
            )
        except BaseException as exc:  # recorded as stopped, resumable; then raised as it was
            self._finish(manifest.job, jobs.JobState.STOPPED, f"interrupted: {type(exc).__name__}", None, None)
            raise
        if manifest.options.log and result.state is not jobs.JobState.STOPPED:
            from scoregate.batch.logging import log_outputs

            log_outputs(self.registry.settings, folder, manifest)
        self._finish(manifest.job, result.state, result.message, result, result.output_digest)
        return result

    def _finish(
        self, job_id: str, state: jobs.JobState, message: str, result: jobs.JobResult | None, digest: str | None
    ) -> None:
        with self.registry.mutation(None, job_id) as (session, actor):
            row = self._locked(session, job_id)
            row.state = state.value
            row.message = message
            row.output_digest = digest
            if result is not None:
                row.scored, row.rejected = result.scored, result.rejected
                row.seconds = round(row.seconds + result.seconds, 3)
            row.finished_at = dt.datetime.now(dt.UTC)
            self.registry.record_event(
                session,
                actor,
                "batch.end",
                job_id,
                after={
                    "state": state.value,
                    "scored": row.scored,
                    "rejected": row.rejected,
                    "output_digest": digest,
                    "seconds": row.seconds,
                },
                reason=message,
            )

    def _manifest(self, folder: JobFolder, row: Any) -> Manifest:
        """The job's manifest, refused unless it is byte for byte the one the registry recorded."""
        if folder.manifest_digest() != row.manifest_digest:
            raise IntegrityError(
                f"the manifest in {folder.meta} is not the one batch job {row.job} recorded (it was edited or "
                "replaced): refused"
            )
        manifest = folder.manifest()
        if manifest.job != row.job or _input_digest(manifest) != row.input_digest:
            raise IntegrityError(f"the manifest in {folder.meta} is not batch job {row.job}'s: refused")
        return manifest

    def _locked(self, session: Any, job_id: str) -> BatchJobRow:
        row = session.scalars(select(BatchJobRow).where(BatchJobRow.job == job_id).with_for_update()).one_or_none()
        if row is None:
            raise NotFoundError(f"no batch job {job_id!r}")
        check_rows(session, [row])
        return row

    def _row(self, job_id: str) -> BatchJobRow:
        with self.registry.reading() as session:
            row = session.scalars(select(BatchJobRow).where(BatchJobRow.job == job_id)).one_or_none()
            if row is None:
                raise NotFoundError(f"no batch job {job_id!r} (see `scoregate batch list`)")
            check_rows(session, [row])
            session.expunge(row)
            return row

    def get(self, job_id: str) -> JobRecord:
        with self.registry.reading() as session:
            row = session.scalars(select(BatchJobRow).where(BatchJobRow.job == job_id)).one_or_none()
            if row is None:
                raise NotFoundError(f"no batch job {job_id!r} (see `scoregate batch list`)")
            check_rows(session, [row])
            return self._record(session, row)

    def list(self, limit: int = 50, *, model: str | None = None) -> list[JobRecord]:
        """The newest ``limit`` jobs, of every model or of ``model``."""
        query = select(BatchJobRow).order_by(BatchJobRow.id.desc()).limit(limit)
        if model is not None:
            query = query.join(VersionRow, VersionRow.id == BatchJobRow.version_id)
            query = query.join(ModelRow, ModelRow.id == VersionRow.model_id).where(ModelRow.name == model)
        with self.registry.reading() as session:
            rows = session.scalars(query).all()
            check_rows(session, rows)
            return [self._record(session, row) for row in rows]

    def _record(self, session: Any, row: BatchJobRow) -> JobRecord:
        version = session.get(VersionRow, row.version_id)
        ref = f"{version.model.name}@{version.version}"
        return JobRecord(
            job=row.job,
            ref=ref,
            artifact_digest=row.artifact_digest,
            engine=row.engine,
            state=row.state,
            input=row.input,
            input_digest=row.input_digest,
            input_files=list(row.input_files),
            output=row.output,
            output_digest=row.output_digest,
            rows=row.rows,
            chunks=row.chunks,
            scored=row.scored,
            rejected=row.rejected,
            seconds=row.seconds,
            runs=row.runs,
            message=row.message,
            created_by=row.created_by,
            created_at=row.created_at,
            finished_at=row.finished_at,
            options=dict(row.options),
        )

    def progress(self, job_id: str) -> dict[str, Any]:
        record = self.get(job_id)
        folder = JobFolder(Path(record.output))
        return jobs.progress(folder, folder.manifest())

    def verify(
        self, job_id: str, *, sample_chunks: int = 3, sample_rows: int = 1000, seed: int | None = None
    ) -> jobs.Verification:
        record = self.get(job_id)
        folder = JobFolder(Path(record.output))
        manifest = self._manifest(folder, self._row(job_id))
        if record.output_digest is None:
            raise NotFoundError(f"batch job {job_id} has no recorded output digest (state {record.state})")
        return jobs.verify(
            self.registry,
            folder,
            manifest,
            recorded_digest=record.output_digest,
            sample_chunks=sample_chunks,
            sample_rows=sample_rows,
            seed=seed,
        )
