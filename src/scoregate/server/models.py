"""Request and response bodies of the API. Responses reuse the services' own models
(``ModelVersion``, ``ModelSummary``, ``AliasRecord``, ``ModelSchema``), so the OpenAPI
document and the Python API describe one contract."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from scoregate.limits import DEFAULT_MODEL_TIMEOUT_S
from scoregate.refs import MAX_VERSION
from scoregate.schema import ModelSchema, OutputField

Text = Field(max_length=4096)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_offset`` is null on the last page."""

    items: list[T]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class UploadedFile(Strict):
    """A file staged with ``PUT /api/v1/uploads/{digest}``, and the name it had on the client."""

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^/\x00]+$")
    kind: Literal["file", "dir"] = "file"


class RegisterRequest(Strict):
    flavor: str = Field(max_length=64)
    artifact: UploadedFile
    train_data: UploadedFile | None = None
    train_data_uri: str | None = Field(default=None, max_length=1024)
    target: str | None = Field(default=None, max_length=256)
    input_schema: ModelSchema | None = None
    outputs: list[OutputField] | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = Field(default=None, max_length=4096)
    owner: str | None = Field(default=None, max_length=256)
    risk_tier: str | None = Field(default=None, max_length=32)
    parent_version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    latency_budget_ms: float = 300.0
    timeout: float = DEFAULT_MODEL_TIMEOUT_S
    code_version: str | None = Field(default=None, max_length=64)
    code_dirty: bool | None = None


class Uploaded(BaseModel):
    digest: str
    size: int


class Reason(Strict):
    reason: str | None = Field(default=None, max_length=4096)


class RequiredReason(Strict):
    reason: str = Field(min_length=1, max_length=4096)


class AliasSet(Strict):
    version: int = Field(ge=1, le=MAX_VERSION)
    overwrite: bool = True
    reason: str | None = Field(default=None, max_length=4096)


class AliasMove(Strict):
    name: str = Field(max_length=128)
    alias: str = Field(max_length=64)
    version: int = Field(ge=1, le=MAX_VERSION)


class AliasMoves(Strict):
    moves: list[AliasMove] = Field(min_length=1, max_length=100)
    overwrite: bool = True
    reason: str | None = Field(default=None, max_length=4096)


class AliasAt(BaseModel):
    version: int | None


class Revision(BaseModel):
    revision: str


class TagSet(Strict):
    value: str = Field(max_length=4096)


class RiskTierSet(Strict):
    risk_tier: str = Field(max_length=32)
    reason: str = Field(min_length=1, max_length=4096)


class WhoAmI(BaseModel):
    name: str
    roles: list[str]


class NewUser(Strict):
    name: str = Field(max_length=128)
    roles: list[str] = Field(min_length=1, max_length=8)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


class NewToken(Strict):
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)
    description: str | None = Field(default=None, max_length=256)


class IssuedToken(BaseModel):
    token: str


class EvidenceAttach(Strict):
    kind: str = Field(max_length=32)
    document: UploadedFile


class EvidenceRun(Strict):
    kind: str = Field(max_length=32)
    document: dict[str, Any]
    name: str | None = Field(default=None, max_length=255)


class EvidenceAccept(Strict):
    reason: str = Field(min_length=1, max_length=4096)


class Decision(BaseModel):
    status: str


class PolicyDocument(BaseModel):
    id: int
    document: str


class PolicySet(Strict):
    document: str = Field(min_length=1, max_length=1 << 20)
    reason: str = Field(min_length=1, max_length=4096)


class PolicyChangeBody(BaseModel):
    model_config = ConfigDict(extra="allow")


class ExceptionGrant(Strict):
    rule: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=4096)
    expires_at: dt.datetime


class Problem(BaseModel):
    """The body of every error: a code and one line naming the field or rule."""

    error: str
    message: str
    details: list[dict[str, Any]] = Field(default_factory=list)
    request_id: str | None = None


class Checkpoints(Strict):
    anchors: list[dict[str, Any]] = Field(default_factory=list, max_length=64)


class AuditVerification(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None
    last_hash: str
    rows: int
    mismatches: list[str]
    problems: list[str]


class Card(BaseModel):
    markdown: str
