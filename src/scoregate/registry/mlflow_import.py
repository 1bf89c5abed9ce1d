"""MLflow as a source: ``models:/``, ``runs:/`` and ``mlflow-artifacts:/`` references, and the
import of an MLflow Model Registry (``scoregate import mlflow``).

Both go through MLflow's own client (the ``mlflow`` extra), so whatever tracking server,
database or artifact store MLflow reaches, scoregate reaches; nothing of MLflow's storage
layout is re-implemented here.

The import brings each registered model, every version (the artifact, its signature as
the schema, its description and tags), the source run's metrics and params, and tags that
point back to MLflow (``mlflow.run_id``, ``mlflow.experiment_id``, ``mlflow.source``, the
MLflow version number) so lineage leads to the run. It is idempotent: a version already
imported (same model, same ``mlflow.version`` tag) is skipped, so a second run adds only
what is new. Aliases move through :meth:`Registry.set_alias`, so a protected alias
(``production``) still meets the governance policy: where it does not, the import leaves
a pending request (the version's ``mlflow.pending_alias`` tag, audited) that the next
import tries again, through the policy again. It never bypasses it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scoregate.errors import ConfigurationError, InvalidInputError, NotFoundError, PolicyViolationError, ScoregateError
from scoregate.registry.database import redact

__all__ = ["MLFLOW_SCHEMES", "ImportReport", "fetch_mlflow_artifact", "import_mlflow", "is_mlflow_uri"]

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
PENDING_TAG = "mlflow.pending_alias"
VERSION_TAG = "mlflow.version"
_TAG_VALUE_MAX = 5000


def is_mlflow_uri(text: str) -> bool:
    return isinstance(text, str) and text.startswith(MLFLOW_SCHEMES)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigurationError(
            "MLflow references and `scoregate import mlflow` need MLflow: pip install 'scoregate[mlflow]'"
        ) from None
    return mlflow


@contextlib.contextmanager
def _tracking(uri: str | None) -> Iterator[Any]:
    """MLflow's client pointed at ``uri`` (else MLFLOW_TRACKING_URI), the global URIs restored after."""
    mlflow = _mlflow()
    before_tracking = mlflow.get_tracking_uri() if uri else None
    before_registry = mlflow.get_registry_uri() if uri else None
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    try:
        yield mlflow
    finally:
        if uri:
            mlflow.set_tracking_uri(before_tracking)
            mlflow.set_registry_uri(before_registry)


def _download(mlflow: Any, uri: str, into: Path) -> Path:
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into))
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        raise NotFoundError(f"MLflow cannot fetch {uri!r}: {type(exc).__name__}: {text}") from None
    return Path(local)


@contextlib.contextmanager
def fetch_mlflow_artifact(uri: str, tracking_uri: str | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
    """A local copy of the MLflow model ``uri`` names (removed afterwards) and lineage tags for it."""
    if not is_mlflow_uri(uri):
        raise InvalidInputError(f"{uri[:100]!r} is not an MLflow reference ({', '.join(MLFLOW_SCHEMES)}...)")
    folder = Path(tempfile.mkdtemp(prefix="scoregate-mlflow-"))
    try:
        with _tracking(tracking_uri) as mlflow:
            local = _download(mlflow, uri, folder)
            tags = {"mlflow.source": uri, "mlflow.tracking_uri": redact(mlflow.get_tracking_uri())}
            run = re.match(r"runs:/([0-9a-f]{32})/", uri)
            if run:
                tags["mlflow.run_id"] = run.group(1)
        yield local, tags
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ImportReport:
    """What one import did, version by version."""

    imported: list[str] = field(default_factory=list)  # scoregate refs of new versions
    skipped: list[str] = field(default_factory=list)  # already imported
    failed: list[tuple[str, str]] = field(default_factory=list)  # (mlflow name/version, why)
    aliases: list[str] = field(default_factory=list)  # name@alias -> version set
    pending: list[tuple[str, str]] = field(default_factory=list)  # (name@alias, what the policy misses)
    descriptions: list[str] = field(default_factory=list)


def _tag(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _TAG_VALUE_MAX else text[: _TAG_VALUE_MAX - 3] + "..."


def import_mlflow(
    registry: Any, tracking_uri: str, *, model: str | None = None, timeout: float | None = None
) -> ImportReport:
    """Bring the MLflow registry at ``tracking_uri`` (every model, or ``model``) into ``registry``."""
    report = ImportReport()
    with _tracking(tracking_uri) as mlflow:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if model is not None:
            try:
                models = [client.get_registered_model(model)]
            except Exception:
                raise NotFoundError(f"MLflow at {redact(tracking_uri)} has no registered model {model!r}") from None
        else:
            models = list(_all_models(client))
        for registered in models:
            _import_model(registry, mlflow, client, registered, tracking_uri, report, timeout)
    return report


def _all_models(client: Any) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _all_versions(client: Any, name: str) -> list[Any]:
    versions, token = [], None
    escaped = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name = '{escaped}'", max_results=200, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return sorted(versions, key=lambda v: int(v.version))


def _imported(registry: Any, name: str) -> dict[str, int]:
    """MLflow version -> scoregate version, for the versions already imported into ``name``."""
    try:
        versions = registry.list_versions(name)
    except NotFoundError:
        return {}
    return {v.tags[VERSION_TAG]: v.version for v in versions if VERSION_TAG in v.tags}


def _import_model(
    registry: Any,
    mlflow: Any,
    client: Any,
    registered: Any,
    tracking_uri: str,
    report: ImportReport,
    timeout: float | None,
) -> None:
    from scoregate.refs import validate_model_name

    name = registered.name
    try:
        validate_model_name(name)
    except ScoregateError as exc:
        report.failed.append((name, exc.message))
        return
    done = _imported(registry, name)
    model_tags = {f"mlflow.model_tag.{k}": _tag(v) for k, v in (registered.tags or {}).items()}
    for mv in _all_versions(client, name):
        label = f"{name}/{mv.version}"
        if str(mv.version) in done:
            report.skipped.append(f"{name}@{done[str(mv.version)]}")
            continue
        try:
            ref = _import_version(registry, mlflow, client, mv, tracking_uri, model_tags, timeout)
        except ScoregateError as exc:
            report.failed.append((label, exc.message))
            continue
        done[str(mv.version)] = int(ref.rsplit("@", 1)[1])
        report.imported.append(ref)
    if done and (registered.description or None) is not None:
        current = next((m.description for m in registry.list_models() if m.name == name), None)
        if current != registered.description.strip():
            registry.set_description(name, registered.description)
            report.descriptions.append(name)
    for alias, mlflow_version in sorted((registered.aliases or {}).items()):
        version = done.get(str(mlflow_version))
        if version is not None:
            _move_alias(registry, name, alias, version, report)


def _import_version(
    registry: Any,
    mlflow: Any,
    client: Any,
    mv: Any,
    tracking_uri: str,
    model_tags: dict[str, str],
    timeout: float | None,
) -> str:
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    tags = dict(model_tags)
    tags.update({k: _tag(v) for k, v in (mv.tags or {}).items()})
    tags.update(
        {
            VERSION_TAG: str(mv.version),
            "mlflow.model_name": mv.name,
            "mlflow.source": _tag(mv.source or ""),
            "mlflow.tracking_uri": redact(tracking_uri),
        }
    )
    if mv.run_id:
        tags["mlflow.run_id"] = mv.run_id
        try:
            run = client.get_run(mv.run_id)
        except Exception:
            run = None  # the run was deleted: the version still imports, without its metrics
        if run is not None:
            metrics = {str(k): float(v) for k, v in run.data.metrics.items()}
            params = {str(k): str(v) for k, v in run.data.params.items()}
            tags["mlflow.experiment_id"] = str(run.info.experiment_id)
            commit = run.data.tags.get("mlflow.source.git.commit")
            if commit:
                tags["mlflow.source.git.commit"] = commit
    folder = Path(tempfile.mkdtemp(prefix="scoregate-mlflow-"))
    try:
        local = _download(mlflow, f"models:/{mv.name}/{mv.version}", folder)
        kwargs = {"timeout": timeout} if timeout is not None else {}
        version = registry.register(
            mv.name,
            local,
            flavor="mlflow",
            metrics=metrics,
            params=params,
            tags=tags,
            description=mv.description or None,
            **kwargs,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return version.ref


def _move_alias(registry: Any, name: str, alias: str, version: int, report: ImportReport) -> None:
    """Through the policy like any move; a refused protected alias stays a pending request."""
    from scoregate.refs import validate_alias

    ref = f"{name}@{alias}"
    try:
        validate_alias(alias)
    except ScoregateError as exc:
        report.failed.append((ref, exc.message))
        return
    current = {a.alias: a.version for a in registry.aliases(name)}
    if current.get(alias) == version:
        _clear_pending(registry, name, version, alias)
        return
    try:
        registry.set_alias(name, alias, version, reason=f"imported from MLflow alias {alias}")
    except PolicyViolationError as exc:
        missing = "; ".join(str(d.get("message", d)) for d in (exc.details or [])) or exc.message
        pending = registry.resolve(f"{name}@{version}").tags.get(PENDING_TAG, "")
        wanted = sorted({*filter(None, pending.split(",")), alias})
        if ",".join(wanted) != pending:
            registry.set_tag(f"{name}@{version}", PENDING_TAG, ",".join(wanted))
        report.pending.append((ref, missing))
        return
    except ScoregateError as exc:  # not allowed for this user, a look-alike of a protected alias, ...
        report.failed.append((ref, exc.message))
        return
    _clear_pending(registry, name, version, alias)
    report.aliases.append(f"{ref} -> {version}")


def _clear_pending(registry: Any, name: str, version: int, alias: str) -> None:
    pending = registry.resolve(f"{name}@{version}").tags.get(PENDING_TAG)
    if pending is None:
        return
    rest = [a for a in pending.split(",") if a and a != alias]
    if rest:
        registry.set_tag(f"{name}@{version}", PENDING_TAG, ",".join(rest))
    else:
        registry.delete_tag(f"{name}@{version}", PENDING_TAG)
