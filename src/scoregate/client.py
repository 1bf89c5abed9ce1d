"""The Python API: ``scoregate.Client`` does from a notebook what the CLI does from a shell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.config import Settings
from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S
from scoregate.refs import ModelRef
from scoregate.registry import AliasRecord, LoadedModel, ModelSummary, ModelVersion, Registry
from scoregate.schema import ModelSchema, OutputField


class Client:
    """Entry point for the registry.

    >>> client = Client()                                   # ~/.scoregate, SQLite + local artifacts
    >>> v = client.register("credit-risk", "model.joblib", flavor="sklearn", train_data="train.parquet",
    ...                     target="default")
    >>> client.set_alias(v.ref, "staging")
    >>> client.load("credit-risk@staging").predict(rows)
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        database_url: str | None = None,
        artifacts_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.load(home=home, database_url=database_url, artifacts_url=artifacts_url)
        self.registry = Registry(self.settings)

    def register(
        self,
        name: str,
        artifact: str | Path,
        *,
        flavor: str,
        train_data: str | Path | None = None,
        target: str | None = None,
        schema: ModelSchema | Mapping[str, Any] | None = None,
        outputs: Sequence[OutputField | Mapping[str, Any]] | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        risk_tier: str | None = None,
        parent_version: int | None = None,
        latency_budget_ms: float = 300.0,
        timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    ) -> ModelVersion:
        """Register a version; loading and scoring the training sample must take under ``timeout`` s."""
        if schema is not None and not isinstance(schema, ModelSchema):
            schema = ModelSchema.model_validate(schema)
        return self.registry.register(
            name,
            Path(artifact),
            flavor=flavor,
            train_data=train_data,
            target=target,
            schema=schema,
            outputs=[OutputField.model_validate(o) for o in outputs] if outputs else None,
            metrics=metrics,
            params=params,
            tags=tags,
            description=description,
            owner=owner,
            risk_tier=risk_tier,
            parent_version=parent_version,
            latency_budget_ms=latency_budget_ms,
            timeout=timeout,
        )

    def get(self, ref: str) -> ModelVersion:
        return self.registry.resolve(ref)

    def load(self, ref: str) -> LoadedModel:
        return self.registry.load(ref)

    def predict(self, ref: str, data: pd.DataFrame | list[dict[str, Any]]) -> pd.DataFrame:
        return self.load(ref).predict(data)

    def set_alias(self, ref: str, alias: str, *, overwrite: bool = True) -> AliasRecord:
        """Point ``alias`` at the version ``ref`` names (``credit-risk@3`` or ``credit-risk@staging``)."""
        version = self.registry.resolve(ModelRef.parse(ref, require_selector=True))
        return self.registry.set_alias(version.name, alias, version.version, overwrite=overwrite)

    def delete_alias(self, name: str, alias: str) -> None:
        self.registry.delete_alias(name, alias)

    def retire(self, ref: str, *, reason: str) -> ModelVersion:
        return self.registry.retire(ref, reason=reason)

    def list_models(self) -> list[ModelSummary]:
        return self.registry.list_models()

    def list_versions(self, name: str) -> list[ModelVersion]:
        return self.registry.list_versions(name)

    def batch(
        self,
        ref: str,
        input: str | Path,
        output: str | Path,
        *,
        workers: int | None = None,
        keep: Sequence[str] = (),
        chunk_rows: int = 100_000,
        format: str = "parquet",
        max_reject_rate: float = 0.01,
        engine: str = "local",
        log: bool = False,
        chunk_timeout: float = 3600.0,
    ) -> Any:
        """Score a file, folder or glob in batch (see ``scoregate batch``); returns the job's result."""
        from scoregate.batch.plan import BatchOptions, Engine, OutputFormat
        from scoregate.batch.service import BatchService

        options = BatchOptions(
            chunk_rows=chunk_rows,
            keep=tuple(keep),
            output_format=OutputFormat(format),
            max_reject_rate=max_reject_rate,
            log=log,
        )
        return BatchService(self.registry).start(
            ref, str(input), output, options, engine=Engine(engine), workers=workers, chunk_timeout=chunk_timeout
        )

    def batch_resume(self, job: str, *, workers: int | None = None) -> Any:
        from scoregate.batch.service import BatchService

        return BatchService(self.registry).resume(job, workers=workers)

    def batch_verify(self, job: str, *, sample_chunks: int = 3, sample_rows: int = 1000) -> Any:
        from scoregate.batch.service import BatchService

        return BatchService(self.registry).verify(job, sample_chunks=sample_chunks, sample_rows=sample_rows)

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
