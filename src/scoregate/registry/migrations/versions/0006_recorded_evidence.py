"""recorded evidence runs and policy proposals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:30:00

Evidence rows learn where they came from (``origin``: a scoregate run or an upload),
the contract a run was made against, its settings and case set, and, for uploads, the
validator who accepted them. Every row written before this migration was attached as
a file, so it becomes an ``upload``: none of it counts for a gate that asks for a run,
and the versions it supported must be validated again, as a recorded run.
A policy change can wait for a second admin in ``policy_proposals``. Existing evidence rows
gain values in columns the audit log's images did not name, so one ``audit.baseline`` event
records them as they are now (see migration 0005).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=False, server_default="upload"))
        batch_op.add_column(sa.Column("schema_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("settings", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("case_set_digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("accepted_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("accept_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        batch_op.alter_column("origin", server_default=None)
        batch_op.alter_column("settings", server_default=None)
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("proposal_id", sa.Integer(), nullable=True))
    op.create_table(
        "policy_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    from scoregate.governance.audit import append_baseline

    append_baseline(
        op.get_bind(),
        {"evidence": ()},
        reason="migration 0006: evidence rows attached before it are uploads (origin, settings); as they were",
    )


def downgrade() -> None:
    op.drop_table("policy_proposals")
    with op.batch_alter_table("policies", schema=None) as batch_op:
        batch_op.drop_column("proposal_id")
        batch_op.drop_column("approved_by")
    with op.batch_alter_table("evidence", schema=None) as batch_op:
        for column in ("accept_reason", "accepted_at", "accepted_by", "case_set_digest", "settings", "schema_digest"):
            batch_op.drop_column(column)
        batch_op.drop_column("origin")
