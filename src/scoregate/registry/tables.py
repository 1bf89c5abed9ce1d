"""The registry's relational schema (SQLAlchemy 2 ORM). Migrations mirror it exactly.

Versions are immutable records: only ``status``, ``retired_at`` and ``retire_reason``
change after registration. Aliases point at versions; ``revisions`` holds a counter
that changes whenever routing state (aliases, traffic policies) changes, so servers
can poll one cheap row to learn that they must reload.

Tables marked ``audited(...)`` are covered by the audit log: every row a transaction
writes to one is recorded, as an image, in that transaction's audit event, and reads
the gates rely on are checked against it (``scoregate.governance.audit``). Mark a new
table that governance or serving reads; a new column of a marked table is covered
without further work.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def audited(*label: str) -> dict[str, Any]:
    """``__table_args__`` entry that puts a table under the audit log's row images.

    ``label`` names the columns that identify a row to a person in verify's report
    (``model_id`` and ``version_id`` are shown as the model's name and ``name@version``);
    the primary key identifies it otherwise. A column whose value must never appear in
    the log (a secret) takes ``info=SECRET``: its image is a digest.
    """
    return {"info": {"audited": label}}


#: Column ``info`` of a value the audit log records only as a digest.
SECRET = {"audit": "digest"}


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ModelRow(Base):
    __tablename__ = "models"
    __table_args__ = (audited("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(128))
    risk_tier: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    versions: Mapped[list[VersionRow]] = relationship(back_populates="model", order_by="VersionRow.version")


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"), audited("model_id", "version"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    flavor: Mapped[str] = mapped_column(String(32), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="registered")
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    retire_reason: Mapped[str | None] = mapped_column(Text)
    # artifact
    artifact_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    artifact_size: Mapped[int] = mapped_column(Integer, nullable=False)
    artifact_kind: Mapped[str] = mapped_column(String(8), nullable=False)  # "file" | "dir"
    artifact_name: Mapped[str] = mapped_column(String(255), nullable=False)
    # contract and evaluation
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    output_schema: Mapped[list[Any]] = mapped_column(JSON, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    latency_budget_ms: Mapped[float] = mapped_column(Float, nullable=False, default=300.0)
    # lineage
    training_data_uri: Mapped[str | None] = mapped_column(Text)
    training_data_digest: Mapped[str | None] = mapped_column(String(64))
    training_rows: Mapped[int | None] = mapped_column(Integer)
    training_schema_digest: Mapped[str | None] = mapped_column(String(64))
    reference_digest: Mapped[str | None] = mapped_column(String(64))
    reference_rows: Mapped[int | None] = mapped_column(Integer)
    code_version: Mapped[str | None] = mapped_column(String(64))
    code_dirty: Mapped[bool | None] = mapped_column(Boolean)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    model: Mapped[ModelRow] = relationship(back_populates="versions")
    tags: Mapped[list[TagRow]] = relationship(cascade="all, delete-orphan", order_by="TagRow.key")


class TagRow(Base):
    __tablename__ = "version_tags"
    __table_args__ = (audited("version_id", "key"),)

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "alias", name="uq_model_alias"), audited("model_id", "alias"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), nullable=False)
    alias: Mapped[str] = mapped_column(String(64), nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    model: Mapped[ModelRow] = relationship()
    target: Mapped[VersionRow] = relationship()


class TrafficPolicyRow(Base):
    __tablename__ = "traffic_policies"
    __table_args__ = (audited("model_id", "alias"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)

    model: Mapped[ModelRow] = relationship()


class RevisionRow(Base):
    __tablename__ = "revisions"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


# -- audit log and webhooks (scoregate.governance.audit, scoregate.governance.webhooks) ----------


class AuditEventRow(Base):
    """One link of the hash-chained audit log. ``before``/``after`` hold canonical JSON text,
    exactly the bytes that were hashed, so verification never re-serialises a document;
    ``state``, also canonical JSON, the images of the audited rows its transaction wrote."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    actor: Mapped[str] = mapped_column(String(128), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    subject: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str | None] = mapped_column(Text)


class AuditKeyRow(Base):
    """Which events wrote which audited row: "the last event that wrote row K of table T"
    is one indexed lookup. Append-only, like the events, and written in their transaction."""

    __tablename__ = "audit_keys"

    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    row_key: Mapped[str] = mapped_column(Text, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class AuditHeadRow(Base):
    """The single row (id 1) holding the chain's last seq and hash: the lock writers queue on,
    and the witness that makes deleting the newest events detectable."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False)


class WebhookSubscriptionRow(Base):
    __tablename__ = "webhook_subscriptions"
    __table_args__ = (audited("id", "url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    secret: Mapped[str] = mapped_column(Text, nullable=False, info=SECRET)
    actions: Mapped[list[Any]] = mapped_column(JSON, nullable=False)  # glob patterns over event actions
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class WebhookOutboxRow(Base):
    """A delivery owed to one subscription, written in the transaction of its event."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
