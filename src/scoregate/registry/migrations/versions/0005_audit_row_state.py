"""the audit chain covers the rows the gates read: row images in events, their index, a baseline

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

``audit_events.state`` holds the images of the audited rows each event's transaction
wrote; ``audit_keys`` indexes them by row, append-only like the events. An existing
registry gets one ``audit.baseline`` event recording every audited row as it is now:
rows are trusted as they stood at this migration, and covered from then on. A later
migration that adds a column with a non-NULL value to an audited table, or starts
covering a table that holds rows, appends a baseline of its own the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: The tables covered as of this revision, with the columns recorded only as digests.
AUDITED = {
    "models": (),
    "model_versions": (),
    "version_tags": (),
    "aliases": (),
    "traffic_policies": (),
    "webhook_subscriptions": ("secret",),
    "users": (),
    "api_tokens": ("token_hash",),
    "decisions": (),
    "evidence": (),
    "policies": (),
    "policy_exceptions": (),
    "alias_history": (),
    "legal_holds": (),
}


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state", sa.Text(), nullable=True))
    op.create_table(
        "audit_keys",
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("table_name", "row_key", "seq"),
    )
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION scoregate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_keys_append_only BEFORE UPDATE OR DELETE ON audit_keys "
            "FOR EACH ROW EXECUTE FUNCTION scoregate_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_keys_no_truncate BEFORE TRUNCATE ON audit_keys "
            "FOR EACH STATEMENT EXECUTE FUNCTION scoregate_append_only()"
        )
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_keys_no_{operation.lower()} BEFORE {operation} ON audit_keys "
                f"BEGIN SELECT RAISE(ABORT, 'audit_keys is append-only: {operation} refused'); END"
            )

    from scoregate.governance.audit import append_baseline

    append_baseline(
        op.get_bind(),
        AUDITED,
        reason="migration 0005: the audit log starts recording audited rows; rows before this event are as they were",
    )


def downgrade() -> None:
    recorded = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_events WHERE state IS NOT NULL")).scalar()
    if recorded:
        # Their hashes cover the state: without it, revision 0004 could not verify them.
        raise RuntimeError(f"cannot downgrade below 0005: {recorded} audit events record row state")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_keys_no_truncate ON audit_keys")
        op.execute("DROP TRIGGER IF EXISTS audit_keys_append_only ON audit_keys")
        op.execute("DROP FUNCTION IF EXISTS scoregate_append_only()")
    else:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_keys_no_{operation}")
    op.drop_table("audit_keys")
    op.drop_column("audit_events", "state")  # in place (SQLite 3.35+): a rebuilt table would lose its triggers
