"""Registry endpoints: models, versions, artifacts, aliases, routing."""

from __future__ import annotations

import datetime as dt
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from scoregate.errors import InvalidInputError
from scoregate.governance.access import Permission
from scoregate.refs import MAX_VERSION, ModelRef
from scoregate.registry import AliasRecord, ModelSummary, ModelVersion
from scoregate.server.context import Caller, caller_of
from scoregate.server.models import (
    AliasAt,
    AliasMoves,
    AliasSet,
    Page,
    Reason,
    RegisterRequest,
    RequiredReason,
    Revision,
    RiskTierSet,
    T,
    TagSet,
    Uploaded,
    UploadedFile,
    WhoAmI,
)
from scoregate.server.settings import MAX_PAGE
from scoregate.server.uploads import Uploads, checked_digest

router = APIRouter()
CallerDep = Annotated[Caller, Depends(caller_of)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_VERSION)]
VersionNumber = Annotated[int, Query(ge=1, le=MAX_VERSION)]


def page(items: list[T], limit: int, offset: int) -> Page[T]:
    chunk = items[offset : offset + limit]
    after = offset + len(chunk)
    return Page[T](
        items=chunk, total=len(items), limit=limit, offset=offset, next_offset=after if after < len(items) else None
    )


def _ref(name: str, version: int) -> str:
    return f"{name}@{version}"


@router.get("/whoami", response_model=WhoAmI, tags=["identity"])
def whoami(caller: CallerDep) -> WhoAmI:
    return WhoAmI(name=caller.principal.name, roles=[r.value for r in caller.principal.roles])


@router.put("/uploads/{digest}", response_model=Uploaded, status_code=201, tags=["artifacts"])
async def upload(digest: str, request: Request) -> Uploaded:
    """Stage a file (raw body, streamed); kept only if its SHA-256 is ``digest``."""
    from starlette.concurrency import run_in_threadpool

    checked_digest(digest)
    caller = await run_in_threadpool(caller_of, request)
    caller.principal.require(Permission.REGISTER, subject="an upload")
    uploads: Uploads = request.app.state.uploads
    size = await uploads.receive(digest, request.stream())
    return Uploaded(digest=digest, size=size)


@router.get("/artifacts/{digest}", response_class=FileResponse, tags=["artifacts"])
def download(digest: str, caller: CallerDep) -> FileResponse:
    """A stored blob (artifact, reference data, evidence), verified against its digest first;
    the client checks it again (``x-content-sha256``)."""
    blob = caller.registry.artifacts.fetch(checked_digest(digest))
    return FileResponse(blob, media_type="application/octet-stream", headers={"x-content-sha256": digest})


@router.get("/models", response_model=Page[ModelSummary], tags=["registry"])
def list_models(caller: CallerDep, limit: Limit = 100, offset: Offset = 0) -> Page[ModelSummary]:
    return page(caller.registry.list_models(), limit, offset)


@router.get("/models/{name}/versions", response_model=Page[ModelVersion], tags=["registry"])
def list_versions(name: str, caller: CallerDep, limit: Limit = 100, offset: Offset = 0) -> Page[ModelVersion]:
    return page(caller.registry.list_versions(name), limit, offset)


@router.post("/models/{name}/versions", response_model=ModelVersion, status_code=201, tags=["registry"])
def register(name: str, body: RegisterRequest, request: Request, caller: CallerDep) -> ModelVersion:
    """Register a version from staged uploads; the service loads and tries the model itself."""
    uploads: Uploads = request.app.state.uploads
    with tempfile.TemporaryDirectory(prefix="register-") as tmp:
        artifact = _placed(uploads, body.artifact, Path(tmp) / "artifact")
        train = _placed(uploads, body.train_data, Path(tmp) / "train") if body.train_data else None
        version = caller.registry.register(
            name,
            artifact,
            flavor=body.flavor,
            train_data=train,
            target=body.target,
            schema=body.input_schema,
            outputs=body.outputs,
            metrics=body.metrics,
            params=body.params,
            tags=body.tags,
            description=body.description,
            owner=body.owner,
            risk_tier=body.risk_tier,
            parent_version=body.parent_version,
            latency_budget_ms=body.latency_budget_ms,
            timeout=body.timeout,
            train_data_uri=body.train_data_uri,
            code_version=(body.code_version, body.code_dirty),
        )
    return version


def _placed(uploads: Uploads, file: UploadedFile, folder: Path) -> Path:
    """The staged upload under the name it had on the client (a flavor may read the suffix);
    a directory arrives as the deterministic tar ``pack_directory`` writes and is unpacked."""
    staged = uploads.path(file.digest)
    folder.mkdir()
    target = folder / file.name
    if file.kind == "file":
        shutil.copyfile(staged, target)
        return target
    try:
        with tarfile.open(staged) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidInputError(f"the uploaded directory {file.name!r} is not a readable tar: {exc}") from None
    return target


@router.get("/refs/{ref}", response_model=ModelVersion, tags=["registry"])
def resolve(ref: str, caller: CallerDep) -> ModelVersion:
    """The version ``name``, ``name@3`` or ``name@alias`` names."""
    return caller.registry.resolve(ref)


@router.post("/models/{name}/versions/{version}/retire", response_model=ModelVersion, tags=["registry"])
def retire(name: str, version: int, body: RequiredReason, caller: CallerDep) -> ModelVersion:
    return caller.registry.retire(ModelRef(name, version=_version(version)), reason=body.reason)


@router.put("/models/{name}/versions/{version}/tags/{key}", status_code=204, tags=["registry"])
def set_tag(name: str, version: int, key: str, body: TagSet, caller: CallerDep) -> Response:
    caller.registry.set_tag(ModelRef(name, version=_version(version)), key, body.value)
    return Response(status_code=204)


@router.put("/models/{name}/risk-tier", status_code=204, tags=["registry"])
def set_risk_tier(name: str, body: RiskTierSet, caller: CallerDep) -> Response:
    caller.registry.set_risk_tier(name, body.risk_tier, reason=body.reason)
    return Response(status_code=204)


@router.get("/aliases", response_model=Page[AliasRecord], tags=["aliases"])
def aliases(caller: CallerDep, name: str | None = None, limit: Limit = 100, offset: Offset = 0) -> Page[AliasRecord]:
    return page(caller.registry.aliases(name), limit, offset)


@router.put("/models/{name}/aliases/{alias}", response_model=AliasRecord, tags=["aliases"])
def set_alias(name: str, alias: str, body: AliasSet, caller: CallerDep) -> AliasRecord:
    """Point an alias at a version; a protected alias moves only past the policy's gates."""
    return caller.registry.set_alias(name, alias, body.version, overwrite=body.overwrite, reason=body.reason)


@router.post("/aliases/moves", response_model=list[AliasRecord], tags=["aliases"])
def move_aliases(body: AliasMoves, caller: CallerDep) -> list[AliasRecord]:
    """Several moves in one transaction: all or none."""
    moves = [(m.name, m.alias, m.version) for m in body.moves]
    return caller.registry.move_aliases(moves, overwrite=body.overwrite, reason=body.reason)


@router.delete("/models/{name}/aliases/{alias}", status_code=204, tags=["aliases"])
def delete_alias(name: str, alias: str, caller: CallerDep, reason: str | None = None) -> Response:
    caller.registry.delete_alias(name, alias, reason=reason)
    return Response(status_code=204)


@router.get("/models/{name}/aliases/{alias}/history", response_model=list[dict], tags=["aliases"])
def alias_history(name: str, alias: str, caller: CallerDep) -> list[dict]:
    return caller.registry.alias_history(name, alias)


@router.get("/models/{name}/aliases/{alias}/at", response_model=AliasAt, tags=["aliases"])
def alias_at(name: str, alias: str, at: dt.datetime, caller: CallerDep) -> AliasAt:
    return AliasAt(version=caller.registry.alias_at(name, alias, at if at.tzinfo else at.replace(tzinfo=dt.UTC)))


@router.post("/models/{name}/aliases/{alias}/rollback", response_model=AliasRecord, tags=["aliases"])
def rollback(name: str, alias: str, body: Reason, caller: CallerDep) -> AliasRecord:
    return caller.registry.rollback(name, alias, reason=body.reason)


@router.get("/routing/revision", response_model=Revision, tags=["routing"])
def revision(caller: CallerDep) -> Revision:
    """Changes whenever an alias or a traffic policy does: scoring servers poll it."""
    return Revision(revision=str(caller.registry.alias_revision()))


@router.get("/routing/policies", response_model=list[dict], tags=["routing"])
def policies(caller: CallerDep) -> list[dict]:
    return [
        {"name": name, "alias": alias, "policy": policy}
        for (name, alias), policy in caller.registry.traffic_policies().items()
    ]


def _version(version: int) -> int:
    if not 1 <= version <= MAX_VERSION:
        raise InvalidInputError(f"invalid version {version}: expected 1-{MAX_VERSION}")
    return version
