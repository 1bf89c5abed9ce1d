"""``RemoteGovernance``: the embedded ``Governance``'s interface over the registry service."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from scoregate.errors import ConfigurationError, InvalidInputError
from scoregate.governance.service import MAX_UPLOAD_BYTES, PolicyChange
from scoregate.refs import ModelRef
from scoregate.remote.registry import RemoteRegistry
from scoregate.remote.transport import revive, segment


class RemoteGovernance:
    def __init__(self, registry: RemoteRegistry) -> None:
        self.registry = registry

    def _version_path(self, ref: str | ModelRef) -> str:
        parsed = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref, require_selector=True)
        if parsed.version is None:  # an alias: the service names versions by number
            parsed = ModelRef(parsed.name, version=self.registry.resolve(parsed).version)
        return f"/models/{segment(parsed.name)}/versions/{parsed.version}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return revive(self.registry.call(method, path, **kwargs))

    # -- identity ------------------------------------------------------------------------------

    def init(self, name: str) -> str:
        raise ConfigurationError("`scoregate init` runs where the database is, before `scoregate server` starts")

    def add_user(self, name: str, roles: list[str] | str, *, expires_in_days: int | None = 90) -> str:
        roles = roles.split(",") if isinstance(roles, str) else list(roles)
        body = {"name": name, "roles": roles, "expires_in_days": expires_in_days}
        return self._call("POST", "/users", json=body)["token"]

    def issue_token(self, name: str, *, expires_in_days: int | None = 90, description: str | None = None) -> str:
        body = {"expires_in_days": expires_in_days, "description": description}
        return self._call("POST", f"/users/{segment(name)}/tokens", json=body)["token"]

    def revoke_token(self, prefix: str) -> None:
        self._call("DELETE", f"/tokens/{segment(prefix[:10])}")

    def list_tokens(self) -> list[dict[str, Any]]:
        return revive(self.registry.transport.pages("/tokens"))

    def list_users(self) -> list[dict[str, Any]]:
        return revive(self.registry.transport.pages("/users"))

    # -- evidence ------------------------------------------------------------------------------

    def record_run(self, ref: str | ModelRef, kind: Any, document: Any, *, name: str | None = None) -> dict[str, Any]:
        body = {"kind": str(getattr(kind, "value", kind)), "document": dict(document), "name": name}
        return self._call("POST", f"{self._version_path(ref)}/runs", json=body)

    def attach_evidence(
        self, ref: str | ModelRef, kind: Any, content: bytes | Path, *, name: str | None = None
    ) -> dict[str, Any]:
        import tempfile

        if isinstance(content, Path):
            name = name or content.name
            if not content.is_file():
                raise InvalidInputError(f"cannot read evidence file {content}: no such file")
            if content.stat().st_size > MAX_UPLOAD_BYTES:
                raise InvalidInputError(f"the evidence file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
            digest = self.registry.transport.upload(content)[0]
        else:
            with tempfile.NamedTemporaryFile() as handle:
                handle.write(content)
                handle.flush()
                digest = self.registry.transport.upload(Path(handle.name))[0]
        kind_value = str(getattr(kind, "value", kind))
        body = {"kind": kind_value, "document": {"digest": digest, "name": (name or f"{kind_value}.bin")[:255]}}
        return self._call("POST", f"{self._version_path(ref)}/evidence", json=body)

    def accept_evidence(self, ref: str | ModelRef, evidence_id: int, *, reason: str) -> dict[str, Any]:
        if not reason or not reason.strip():
            raise InvalidInputError("accepting evidence needs a reason (--reason)")
        path = f"{self._version_path(ref)}/evidence/{int(evidence_id)}/accept"
        return self._call("POST", path, json={"reason": reason})

    def evidence(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        return self._call("GET", f"{self._version_path(ref)}/evidence")

    def read_evidence(self, digest: str) -> bytes:
        return self.registry.artifacts.read_bytes(digest)

    # -- lifecycle -----------------------------------------------------------------------------

    def mark_validated(self, ref: str | ModelRef, *, reason: str | None = None) -> str:
        return self._call("POST", f"{self._version_path(ref)}/mark-validated", json={"reason": reason})["status"]

    def approve(self, ref: str | ModelRef, *, reason: str) -> str:
        if not reason or not reason.strip():
            raise InvalidInputError("an approval needs a reason (--reason)")
        return self._call("POST", f"{self._version_path(ref)}/approve", json={"reason": reason})["status"]

    def decisions(self, ref: str | ModelRef) -> list[dict[str, Any]]:
        return self._call("GET", f"{self._version_path(ref)}/decisions")

    def check(self, ref: str | ModelRef, alias: str = "production") -> list[dict[str, str]]:
        return self._call("GET", f"{self._version_path(ref)}/check", params={"alias": alias})

    def grant_exception(self, ref: str | ModelRef, rule: str, *, reason: str, expires_at: dt.datetime) -> None:
        body = {"rule": rule, "reason": reason, "expires_at": expires_at.isoformat()}
        self._call("POST", f"{self._version_path(ref)}/exceptions", json=body)

    # -- policy --------------------------------------------------------------------------------

    def policy(self) -> tuple[int, str]:
        body = self._call("GET", "/policy")
        return int(body["id"]), body["document"]

    def set_policy(self, document: str, *, reason: str) -> PolicyChange:
        return PolicyChange(**self._call("PUT", "/policy", json={"document": document, "reason": reason}))

    def approve_policy(self, proposal_id: int, *, reason: str) -> PolicyChange:
        body = self._call("POST", f"/policy/proposals/{int(proposal_id)}/approve", json={"reason": reason})
        return PolicyChange(**body)

    def inventory(self, *, at: dt.datetime | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/inventory", params={"at": at.isoformat()} if at is not None else None)

    def __getattr__(self, name: str) -> Any:
        # Commands the service does not expose yet (legal holds, deletion, webhooks, policy
        # rejection) say so in one line rather than failing somewhere inside.
        raise ConfigurationError(
            f"`{name.replace('_', ' ')}` is not available through the registry service yet: run it where the "
            "database is (unset SCOREGATE_URL)"
        )
