"""Where the server gets its models from: a small protocol, a registry adapter and an
in-memory source (for embedding the server and for tests)."""

from __future__ import annotations

import hashlib
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from scoregate.errors import NotFoundError
from scoregate.extra_fields import ExtraFields, from_tags
from scoregate.flavors.base import Scorer
from scoregate.refs import ModelRef
from scoregate.schema import ModelSchema
from scoregate.serving.auth import Credential


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What serving needs to know about one model version."""

    name: str
    version: int
    flavor: str
    input_schema: ModelSchema
    latency_budget_ms: float | None = None
    extra_fields: ExtraFields = ExtraFields.REFUSE

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class AliasEntry:
    name: str
    alias: str
    version: int


class ModelSource(Protocol):
    """The registry operations the server uses (all called from a worker thread)."""

    def revision(self) -> str:
        """A token that changes whenever an alias or a traffic policy changes."""

    def aliases(self) -> list[AliasEntry]: ...

    def policies(self) -> dict[tuple[str, str], dict[str, Any]]: ...

    def resolve(self, ref: str) -> VersionInfo:
        """``name``, ``name@3`` or ``name@alias`` to a version; NotFoundError if unknown."""

    def load(self, name: str, version: int) -> tuple[VersionInfo, Scorer]: ...

    # Optional: ``credentials() -> dict[str, Credential]`` (token SHA-256 -> owner), for
    # ``--require-token``; a source without it admits no token.
    # Optional: ``reference_profile(name, version) -> ReferenceProfile | None``, the version's
    # bound reference profile, for live monitoring; a source without it monitors nothing.


def _info_from_model_version(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=mv.name,
        version=int(mv.version),
        flavor=mv.flavor,
        input_schema=mv.input_schema,
        latency_budget_ms=getattr(mv, "latency_budget_ms", None),
        extra_fields=from_tags(dict(getattr(mv, "tags", {}) or {}), f"{mv.name}@{mv.version}"),
    )


class RegistrySource:
    """Adapts :class:`scoregate.registry.Registry` to :class:`ModelSource`."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    @classmethod
    def open(cls, settings: Any) -> RegistrySource:
        if getattr(settings, "url", None):  # team mode: read through the registry service
            return ServiceSource.open(settings)
        from scoregate.registry import Registry

        return cls(Registry.open(settings))

    def revision(self) -> str:
        return str(self.registry.alias_revision())

    def aliases(self) -> list[AliasEntry]:
        return [AliasEntry(a.name, a.alias, int(a.version)) for a in self.registry.aliases()]

    def policies(self) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self.registry.traffic_policies())

    def resolve(self, ref: str) -> VersionInfo:
        return _info_from_model_version(self.registry.resolve(ref))

    def load(self, name: str, version: int) -> tuple[VersionInfo, Scorer]:
        loaded = self.registry.load(f"{name}@{version}")
        return _info_from_model_version(loaded.version), loaded.scorer

    def reference_profile(self, name: str, version: int) -> Any:
        """The reference profile bound to the version (checked against it), or None."""
        from scoregate.monitoring import store

        try:
            return store.bound_reference(self.registry, self.registry.resolve(f"{name}@{version}")).profile
        except NotFoundError:
            return None

    def credentials(self) -> dict[str, Credential]:
        """Tokens that are neither revoked nor held by a disabled user (expiry is checked per request)."""
        from scoregate.governance.service import Governance

        return _credentials(Governance(self.registry).scoring_credentials())


class ServiceSource(RegistrySource):
    """Reads what to serve from the registry service (``SCOREGATE_URL``) and fetches artifacts
    through it, digest-checked; its token needs only the scorer role, so a scoring node holds
    no credential that can change the registry."""

    @classmethod
    def open(cls, settings: Any) -> ServiceSource:
        from scoregate.remote import RemoteRegistry

        return cls(RemoteRegistry(settings))

    def credentials(self) -> dict[str, Credential]:
        return _credentials(self.registry.call("GET", "/serving/credentials"))


def _credentials(found: dict[str, dict[str, Any]]) -> dict[str, Credential]:
    return {
        token_hash: Credential(c["user"], frozenset(c["roles"]), c["expires_at"]) for token_hash, c in found.items()
    }


@dataclass
class _Stored:
    info: VersionInfo
    scorer: Scorer


@dataclass
class InMemorySource:
    """Models held in memory: register scorers, move aliases, set policies.

    Thread-safe; ``revision`` changes on every alias or policy change, like the registry's.
    """

    _versions: dict[tuple[str, int], _Stored] = field(default_factory=dict)
    _aliases: dict[tuple[str, str], int] = field(default_factory=dict)
    _policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _tokens: dict[str, Credential] = field(default_factory=dict)
    _profiles: dict[tuple[str, int], Any] = field(default_factory=dict)
    _counter: Any = field(default_factory=lambda: itertools.count(1))
    _revision: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self,
        name: str,
        version: int,
        scorer: Scorer,
        schema: ModelSchema,
        flavor: str = "sklearn",
        *,
        extra_fields: ExtraFields | str = ExtraFields.REFUSE,
    ) -> None:
        info = VersionInfo(name, version, flavor, schema, extra_fields=ExtraFields(extra_fields))
        with self._lock:
            self._versions[(name, version)] = _Stored(info, scorer)

    def add_token(self, token: str, user: str, roles: list[str], *, expires_at: float | None = None) -> None:
        with self._lock:
            self._tokens[hashlib.sha256(token.encode()).hexdigest()] = Credential(user, frozenset(roles), expires_at)

    def credentials(self) -> dict[str, Credential]:
        with self._lock:
            return dict(self._tokens)

    def set_profile(self, name: str, version: int, profile: Any) -> None:
        """Bind a reference profile (:class:`~scoregate.monitoring.ReferenceProfile`) for live monitoring."""
        with self._lock:
            self._profiles[(name, version)] = profile

    def reference_profile(self, name: str, version: int) -> Any:
        with self._lock:
            return self._profiles.get((name, version))

    def set_alias(self, name: str, alias: str, version: int) -> None:
        with self._lock:
            if (name, version) not in self._versions:
                raise NotFoundError(f"model version {name}@{version} does not exist")
            self._aliases[(name, alias)] = version
            self._revision = next(self._counter)

    def delete_alias(self, name: str, alias: str) -> None:
        with self._lock:
            self._aliases.pop((name, alias), None)
            self._policies.pop((name, alias), None)
            self._revision = next(self._counter)

    def set_traffic_policy(self, name: str, alias: str, policy: dict[str, Any] | None) -> None:
        with self._lock:
            if policy is None:
                self._policies.pop((name, alias), None)
            else:
                self._policies[(name, alias)] = dict(policy)
            self._revision = next(self._counter)

    def revision(self) -> str:
        return str(self._revision)

    def aliases(self) -> list[AliasEntry]:
        with self._lock:
            return [AliasEntry(n, a, v) for (n, a), v in sorted(self._aliases.items())]

    def policies(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self._lock:
            return dict(self._policies)

    def resolve(self, ref: str) -> VersionInfo:
        parsed = ModelRef.parse(ref)
        with self._lock:
            if parsed.version is not None:
                version = parsed.version
            elif parsed.alias is not None:
                found = self._aliases.get((parsed.name, parsed.alias))
                if found is None:
                    raise NotFoundError(f"model {parsed.name} has no alias {parsed.alias!r}")
                version = found
            else:
                versions = [v for (n, v) in self._versions if n == parsed.name]
                if not versions:
                    raise NotFoundError(f"model {parsed.name!r} does not exist")
                version = max(versions)
            stored = self._versions.get((parsed.name, version))
        if stored is None:
            raise NotFoundError(f"model version {parsed.name}@{version} does not exist")
        return stored.info

    def load(self, name: str, version: int) -> tuple[VersionInfo, Scorer]:
        with self._lock:
            stored = self._versions.get((name, version))
        if stored is None:
            raise NotFoundError(f"model version {name}@{version} does not exist")
        return stored.info, stored.scorer
