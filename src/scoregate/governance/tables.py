"""Governance records: users, tokens, lifecycle decisions, evidence, policies,
exceptions, alias history and legal holds. Same declarative base as the registry,
so one migration history covers both."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scoregate.registry.tables import SECRET, Base, audited, utcnow


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (audited("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    roles: Mapped[list[Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class TokenRow(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (audited("id", "prefix"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False, info=SECRET)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DecisionRow(Base):
    """One lifecycle move of a version: who, when, why, on which evidence."""

    __tablename__ = "decisions"
    __table_args__ = (audited("id", "version_id", "action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)  # validate, approve, production, retire, ...
    from_status: Mapped[str] = mapped_column(String(16), nullable=False)
    to_status: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    evidence: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class EvidenceRow(Base):
    """An immutable, content-addressed document about a version: the result of one of
    scoregate's own runs (``origin`` run: its settings, case set and the contract it ran
    against are kept beside it) or a file somebody attached (``origin`` upload), which
    counts only where the policy names its kind and a validator has accepted it."""

    __tablename__ = "evidence"
    __table_args__ = (
        UniqueConstraint("version_id", "digest", name="uq_evidence_version_digest"),
        audited("id", "version_id", "kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    bound_digest: Mapped[str | None] = mapped_column(String(64))  # artifact digest the evidence was computed on
    passed: Mapped[bool | None] = mapped_column(Boolean)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    author: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    origin: Mapped[str] = mapped_column(String(16), nullable=False, default="upload")  # run | upload
    schema_digest: Mapped[str | None] = mapped_column(String(64))  # the input/output contract it ran against
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)  # how the run was made
    case_set_digest: Mapped[str | None] = mapped_column(String(64))
    accepted_by: Mapped[str | None] = mapped_column(String(128))  # uploads: the validator who accepted it
    accepted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    accept_reason: Mapped[str | None] = mapped_column(Text)


class PolicyRow(Base):
    """A version of the governance policy document; the newest one is in force."""

    __tablename__ = "policies"
    __table_args__ = (audited("id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    author: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    approved_by: Mapped[str | None] = mapped_column(String(128))  # the second admin, where the policy asks
    proposal_id: Mapped[int | None] = mapped_column(Integer)


class PolicyProposalRow(Base):
    """A policy change waiting for a second admin (when the policy in force asks for one)."""

    __tablename__ = "policy_proposals"
    __table_args__ = (audited("id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    author: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")  # pending|approved|rejected
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    decision_reason: Mapped[str | None] = mapped_column(Text)


class PolicyExceptionRow(Base):
    __tablename__ = "policy_exceptions"
    __table_args__ = (audited("id", "version_id", "rule"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    rule: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    approver: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class AliasHistoryRow(Base):
    """Every alias move and deletion, so "who served production at time T" has an answer."""

    __tablename__ = "alias_history"
    __table_args__ = (audited("id", "model_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), nullable=False)
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[int | None] = mapped_column(Integer)  # None: the alias was deleted
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False, index=True)


class LegalHoldRow(Base):
    __tablename__ = "legal_holds"
    __table_args__ = (audited("version_id"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class BatchJobRow(Base):
    """One batch scoring job: who ran which version on which input, what came out, how it ended.

    The digests are scoregate's own: the artifact the workers checked, the inputs' SHA-256
    when planned, and the output digest computed from the committed chunks, which
    ``batch verify`` checks the output folder against.
    """

    __tablename__ = "batch_jobs"
    __table_args__ = (audited("job"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), index=True)
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    engine: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    input: Mapped[str] = mapped_column(Text, nullable=False)
    input_files: Mapped[list[Any]] = mapped_column(JSON, nullable=False)
    input_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    output: Mapped[str] = mapped_column(Text, nullable=False)
    output_digest: Mapped[str | None] = mapped_column(String(64))
    manifest_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    chunks: Mapped[int] = mapped_column(Integer, nullable=False)
    scored: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rejected: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
