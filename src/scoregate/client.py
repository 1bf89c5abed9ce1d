"""The Python API: ``scoregate.Client`` does from a notebook what the CLI does from a shell."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.config import Settings
from scoregate.errors import InvalidInputError
from scoregate.flavors import detect_flavor
from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S
from scoregate.refs import ModelRef
from scoregate.registry import AliasRecord, LoadedModel, ModelSummary, ModelVersion, Registry
from scoregate.registry.mlflow_import import ImportReport, fetch_mlflow_artifact, import_mlflow, is_mlflow_uri
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
        url: str | None = None,
        token: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings.load(
            home=home, database_url=database_url, artifacts_url=artifacts_url, url=url, token=token
        )
        if self.settings.url is not None:  # a client of the registry service (SCOREGATE_URL)
            from scoregate.remote import RemoteRegistry

            self.registry: Registry = RemoteRegistry(self.settings)  # type: ignore[assignment]
        else:
            self.registry = Registry(self.settings)

    def register(
        self,
        name: str,
        artifact: str | Path,
        *,
        flavor: str | None = None,
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
        profile: bool = True,
    ) -> ModelVersion:
        """Register a version; loading and scoring the training sample must take under ``timeout`` s.

        With ``train_data`` (Parquet or CSV) and ``profile``, every training row is then profiled
        and the reference profile bound to the version (a warning is logged when it cannot be).
        ``artifact`` may be an MLflow ``models:/``, ``runs:/`` or ``mlflow-artifacts:/`` URI, fetched
        through MLflow's client (``MLFLOW_TRACKING_URI``), with tags pointing back to it; ``flavor``
        may be left out for an MLflow model directory (it holds an ``MLmodel`` file)."""
        if schema is not None and not isinstance(schema, ModelSchema):
            schema = ModelSchema.model_validate(schema)
        with contextlib.ExitStack() as stack:
            local, lineage = Path(artifact), {}
            if is_mlflow_uri(str(artifact)):
                local, lineage = stack.enter_context(fetch_mlflow_artifact(str(artifact)))
            version = self.registry.register(
                name,
                local,
                flavor=flavor or detect_flavor(local),
                train_data=train_data,
                target=target,
                schema=schema,
                outputs=[OutputField.model_validate(o) for o in outputs] if outputs else None,
                metrics=metrics,
                params=params,
                tags={**lineage, **(tags or {})},
                description=description,
                owner=owner,
                risk_tier=risk_tier,
                parent_version=parent_version,
                latency_budget_ms=latency_budget_ms,
                timeout=timeout,
            )
        if train_data is not None and profile:
            from scoregate.monitoring.service import profile_at_registration

            profile_at_registration(self.registry, version, train_data)
        return version

    def import_mlflow(self, tracking_uri: str, *, model: str | None = None) -> ImportReport:
        """Bring an MLflow Model Registry over (see :mod:`scoregate.registry.mlflow_import`); idempotent."""
        return import_mlflow(self.registry, tracking_uri, model=model)

    def get(self, ref: str) -> ModelVersion:
        return self.registry.resolve(ref)

    def load(self, ref: str) -> LoadedModel:
        return self.registry.load(ref)

    def predict(self, ref: str, data: Any) -> pd.DataFrame:
        """Score ``data``: a DataFrame, a pyarrow Table, a list of dicts, a dict of lists, one dict
        or a 2-D array in the schema's order (:mod:`scoregate.inputs`)."""
        return self.load(ref).predict(data)

    def set_alias(
        self,
        ref: str | None = None,
        alias: str | None = None,
        *,
        name: str | None = None,
        version: int | str | None = None,
        overwrite: bool = True,
    ) -> AliasRecord:
        """Point ``alias`` at a version: ``set_alias("credit-risk@3", "staging")``, or as MLflow's
        ``set_registered_model_alias`` does, ``set_alias(name="credit-risk", alias="staging", version=3)``.
        ``ref`` may also name an alias (``credit-risk@staging``): the version it points at."""
        if alias is None:
            raise InvalidInputError("set_alias needs the alias to set (set_alias('name@3', 'staging'))")
        ref = _one_ref(ref, name, version, "set_alias", "set_alias('name@3', 'staging')")
        target = self.registry.resolve(ModelRef.parse(ref, require_selector=True))
        return self.registry.set_alias(target.name, alias, target.version, overwrite=overwrite)

    def delete_alias(self, ref: str | None = None, alias: str | None = None, *, name: str | None = None) -> None:
        """Delete an alias: ``delete_alias("credit-risk@staging")``, or MLflow's way,
        ``delete_alias(name="credit-risk", alias="staging")`` (``delete_alias("credit-risk", "staging")`` too)."""
        if ref is not None and name is not None:
            raise InvalidInputError("delete_alias takes the reference or name=, not both")
        text = ref if ref is not None else name
        if text is None:
            raise InvalidInputError("delete_alias needs a reference: delete_alias('name@staging')")
        parsed = ModelRef.parse(text if alias is None else f"{text}@{alias}", require_selector=True)
        if parsed.alias is None:
            raise InvalidInputError(f"delete_alias needs an alias, not a version: {parsed} names a version")
        self.registry.delete_alias(parsed.name, parsed.alias)

    def set_tag(self, ref: str, key: str, value: str) -> None:
        """Set a tag of the version ``ref`` names (audited)."""
        self.registry.set_tag(ref, key, value)

    def delete_tag(self, ref: str, key: str) -> None:
        self.registry.delete_tag(ref, key)

    def set_description(self, ref: str, description: str | None) -> None:
        """The description of a model (``"credit-risk"``) or of a version (``"credit-risk@3"``), audited."""
        self.registry.set_description(ref, description)

    def search_models(
        self,
        name: str | None = None,
        *,
        owner: str | None = None,
        risk_tier: str | None = None,
        alias: str | None = None,
    ) -> list[ModelSummary]:
        """Models by name (a glob such as ``"credit-*"``), owner, risk tier or alias."""
        return self.registry.search_models(name=name, owner=owner, risk_tier=risk_tier, alias=alias)

    def search_versions(
        self,
        name: str | None = None,
        *,
        flavor: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        alias: str | None = None,
        max_results: int = 1000,
    ) -> list[ModelVersion]:
        """Versions, newest first, by model name (a glob), flavor, status, tags (every key: value) or alias."""
        return self.registry.search_versions(
            name=name, flavor=flavor, status=status, tags=tags, alias=alias, max_results=max_results
        )

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


def _one_ref(ref: str | None, name: str | None, version: int | str | None, call: str, example: str) -> str:
    """``ref``, or the reference MLflow-style ``name=`` and ``version=`` keywords make."""
    if ref is not None:
        if name is not None or version is not None:
            raise InvalidInputError(f"{call} takes a reference or name= and version=, not both")
        return ref
    if name is None or version is None:
        raise InvalidInputError(f"{call} needs a reference: {example}")
    return f"{name}@{version}"
