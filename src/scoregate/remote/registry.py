"""``RemoteRegistry``: the embedded ``Registry``'s interface over the registry service."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from scoregate.config import Settings
from scoregate.errors import ConfigurationError, InvalidInputError
from scoregate.flavors import get_flavor
from scoregate.governance.access import Principal, Role
from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S
from scoregate.refs import ModelRef, validate_model_name
from scoregate.registry.artifacts import ArtifactStore, pack_directory
from scoregate.registry.lineage import git_commit
from scoregate.registry.records import AliasRecord, LoadedModel, ModelSummary, ModelVersion
from scoregate.remote.transport import Transport, revive, segment
from scoregate.schema import ModelSchema, OutputField


class RemoteArtifacts(ArtifactStore):
    """The verified local cache of the embedded store, filled from the service (never written
    to it directly: a client holds no artifact store credential)."""

    def __init__(self, transport: Transport, cache_dir: Path) -> None:
        self.transport = transport
        self.cache_dir = cache_dir
        self.url = f"{transport.url}/api/v1/artifacts"

    def fetch(self, digest: str) -> Path:
        from scoregate.registry.artifacts import sha256_file

        cached = self.cache_dir / "blobs" / digest
        if cached.is_file():
            if sha256_file(cached) == digest:
                return cached
            cached.unlink()
        return self.transport.download(digest, cached)

    def put(self, path: Path) -> tuple[str, int, str]:
        raise ConfigurationError("a client of the registry service uploads through it, not to the store")

    put_file = put  # type: ignore[assignment]
    put_bytes = put  # type: ignore[assignment]

    def delete(self, digest: str) -> None:
        raise ConfigurationError("a client of the registry service cannot delete from its store")


class RemoteRegistry:
    """Models, versions and aliases, through ``SCOREGATE_URL``; same methods, records and errors."""

    def __init__(self, settings: Settings, *, token: str | None = None, request_id: str | None = None) -> None:
        if settings.url is None:
            raise ConfigurationError("RemoteRegistry needs the service's URL (SCOREGATE_URL or `url`)")
        self.settings = settings
        self.token = token if token is not None else settings.token
        self.request_id = request_id
        self.transport = Transport(settings.url, self.token, request_id)
        self.artifacts = RemoteArtifacts(self.transport, settings.cache_dir)

    def close(self) -> None:
        self.transport.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.transport.call(method, path, **kwargs)

    def whoami(self) -> Principal:
        body = self.call("GET", "/whoami")
        return Principal(name=body["name"], roles=tuple(Role(r) for r in body["roles"]))

    # -- registration --------------------------------------------------------------------------

    def register(
        self,
        name: str,
        artifact: Path | str,
        *,
        flavor: str,
        train_data: Path | str | None = None,
        target: str | None = None,
        schema: ModelSchema | None = None,
        outputs: Sequence[OutputField] | None = None,
        metrics: Mapping[str, float] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        risk_tier: str | None = None,
        parent_version: int | None = None,
        latency_budget_ms: float = 300.0,
        code_dir: Path | None = None,
        timeout: float = DEFAULT_MODEL_TIMEOUT_S,
    ) -> ModelVersion:
        """Upload the artifact (a directory as the same deterministic tar the store keeps) and the
        training file, then register from them; the service loads and tries the model."""
        validate_model_name(name)
        artifact = Path(artifact).expanduser()
        if not artifact.exists():
            raise InvalidInputError(f"artifact {artifact} does not exist")
        train = Path(train_data).expanduser() if train_data is not None else None
        if train is not None and not train.is_file():
            raise InvalidInputError(f"training data {train} does not exist")
        commit, dirty = git_commit(code_dir)
        with tempfile.TemporaryDirectory(prefix="scoregate-upload-") as tmp:
            uploaded = {"digest": "", "name": artifact.name, "kind": "file"}
            if artifact.is_dir():
                packed = Path(tmp) / "artifact.tar"
                pack_directory(artifact, packed)
                uploaded.update(digest=self.transport.upload(packed)[0], kind="dir")
            else:
                uploaded["digest"] = self.transport.upload(artifact)[0]
            body: dict[str, Any] = {
                "flavor": flavor,
                "artifact": uploaded,
                "target": target,
                "input_schema": schema.model_dump(mode="json") if schema is not None else None,
                "outputs": [o.model_dump(mode="json") for o in outputs] if outputs else None,
                "metrics": dict(metrics or {}),
                "params": dict(params or {}),
                "tags": {str(k): str(v) for k, v in (tags or {}).items()},
                "description": description,
                "owner": owner,
                "risk_tier": risk_tier,
                "parent_version": parent_version,
                "latency_budget_ms": latency_budget_ms,
                "timeout": timeout,
                "code_version": commit,
                "code_dirty": dirty,
            }
            if train is not None:
                body["train_data"] = {"digest": self.transport.upload(train)[0], "name": train.name}
                body["train_data_uri"] = str(train.absolute())
            found = self.call("POST", f"/models/{segment(name)}/versions", json=body, timeout=timeout + 120)
        return ModelVersion.model_validate(found)

    # -- lookups -------------------------------------------------------------------------------

    def resolve(self, ref: str | ModelRef) -> ModelVersion:
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        return ModelVersion.model_validate(self.call("GET", f"/refs/{segment(str(parsed))}"))

    def load(self, ref: str | ModelRef) -> LoadedModel:
        """Fetch the artifact through the service (digest checked there and here) and load it."""
        record = self.resolve(ref)
        path = self.artifacts.materialize(record.artifact_digest, record.artifact_kind, record.artifact_name)
        return LoadedModel(version=record, scorer=get_flavor(record.flavor).load(path))

    def reference_data(self, ref: str | ModelRef) -> pd.DataFrame:
        from scoregate.errors import NotFoundError

        record = self.resolve(ref)
        if record.reference_digest is None:
            raise NotFoundError(f"{record.ref} has no reference data (it was registered without --train-data)")
        return pd.read_parquet(io.BytesIO(self.artifacts.read_bytes(record.reference_digest)))

    def list_models(self) -> list[ModelSummary]:
        return [ModelSummary.model_validate(m) for m in self.transport.pages("/models")]

    def list_versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion.model_validate(v) for v in self.transport.pages(f"/models/{segment(name)}/versions")]

    # -- aliases -------------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, overwrite: bool = True, reason: str | None = None
    ) -> AliasRecord:
        body = {"version": version, "overwrite": overwrite, "reason": reason}
        return _alias(self.call("PUT", f"/models/{segment(name)}/aliases/{segment(alias)}", json=body))

    def move_aliases(
        self, moves: list[tuple[str, str, int]], *, overwrite: bool = True, reason: str | None = None
    ) -> list[AliasRecord]:
        body = {
            "moves": [{"name": n, "alias": a, "version": v} for n, a, v in moves],
            "overwrite": overwrite,
            "reason": reason,
        }
        return [_alias(a) for a in self.call("POST", "/aliases/moves", json=body)]

    def delete_alias(self, name: str, alias: str, *, reason: str | None = None) -> None:
        params = {"reason": reason} if reason is not None else None
        self.call("DELETE", f"/models/{segment(name)}/aliases/{segment(alias)}", params=params)

    def alias_history(self, name: str, alias: str) -> list[dict[str, Any]]:
        return revive(self.call("GET", f"/models/{segment(name)}/aliases/{segment(alias)}/history"))

    def alias_at(self, name: str, alias: str, at: dt.datetime) -> int | None:
        path = f"/models/{segment(name)}/aliases/{segment(alias)}/at"
        return self.call("GET", path, params={"at": at.isoformat()})["version"]

    def rollback(self, name: str, alias: str, *, reason: str | None = None) -> AliasRecord:
        path = f"/models/{segment(name)}/aliases/{segment(alias)}/rollback"
        return _alias(self.call("POST", path, json={"reason": reason}))

    def aliases(self, name: str | None = None) -> list[AliasRecord]:
        return [_alias(a) for a in self.transport.pages("/aliases", {"name": name} if name else None)]

    def alias_revision(self) -> str:
        return str(self.call("GET", "/routing/revision")["revision"])

    def traffic_policies(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(p["name"], p["alias"]): p["policy"] for p in self.call("GET", "/routing/policies")}

    # -- lifecycle -------------------------------------------------------------------------------

    def retire(self, ref: str | ModelRef, *, reason: str) -> ModelVersion:
        version = self.resolve(ModelRef.parse(str(ref), require_selector=True))
        if not reason or not reason.strip():
            raise InvalidInputError("a reason is required to retire a version (--reason)")
        path = f"/models/{segment(version.name)}/versions/{version.version}/retire"
        return ModelVersion.model_validate(self.call("POST", path, json={"reason": reason}))

    def set_tag(self, ref: str | ModelRef, key: str, value: str) -> None:
        version = self.resolve(ModelRef.parse(str(ref), require_selector=True))
        if not key or len(key) > 128:
            raise InvalidInputError("a tag key needs 1-128 characters")
        path = f"/models/{segment(version.name)}/versions/{version.version}/tags/{segment(key)}"
        self.call("PUT", path, json={"value": str(value)})

    def set_risk_tier(self, name: str, risk_tier: str, *, reason: str) -> None:
        if not reason or not reason.strip():
            raise InvalidInputError("changing a risk tier needs a reason (--reason)")
        self.call("PUT", f"/models/{segment(name)}/risk-tier", json={"risk_tier": risk_tier, "reason": reason})

    def verify_audit(self, anchors: list[Any]) -> Any:
        """The service verifies the chain; the anchors' signatures were checked here, with the
        caller's key, so the service never needs it."""
        from dataclasses import asdict

        from scoregate.governance.audit import VerifyResult

        anchors_json = [{**asdict(a), "scheme": a.scheme.value} for a in anchors]
        body = self.call("POST", "/audit/verify", json={"anchors": anchors_json}, timeout=600)
        mismatches = tuple(ReportedMismatch(m) for m in body["mismatches"])
        return VerifyResult(
            ok=body["ok"],
            checked=body["checked"],
            first_bad_seq=body["first_bad_seq"],
            reason=body["reason"],
            last_hash=body["last_hash"],
            rows=body["rows"],
            mismatches=mismatches,
            problems=tuple(body["problems"]),
        )


@dataclass(frozen=True, slots=True)
class ReportedMismatch:
    """A mismatch as the service reported it (the line ``audit verify`` prints)."""

    message: str


def _alias(body: dict[str, Any]) -> AliasRecord:
    return AliasRecord(
        name=body["name"],
        alias=body["alias"],
        version=int(body["version"]),
        updated_at=dt.datetime.fromisoformat(body["updated_at"]),
    )
