"""Initial schema: apps, accounts, pending flows, DM rooms, the Matrix session, handled events.

Revision ID: 0f1ccdf0515a
Revises:
Create Date: 2026-11-28 05:28:31.853498

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0f1ccdf0515a"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dm_rooms",
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("matrix_user_id", name=op.f("pk_dm_rooms")),
    )
    op.create_table(
        "fediverse_apps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("client_secret_encrypted", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fediverse_apps")),
        sa.UniqueConstraint("instance", "scopes", name=op.f("uq_fediverse_apps_instance_scopes")),
    )
    op.create_table(
        "handled_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_handled_events")),
    )
    op.create_index(op.f("ix_handled_events_handled_at"), "handled_events", ["handled_at"], unique=False)

    op.create_table(
        "matrix_session",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("device_id", sa.String(length=255), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=False),
        sa.Column("sync_token", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_matrix_session_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_matrix_session")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("fediverse_account_id", sa.String(length=255), nullable=False),
        sa.Column("acct", sa.String(length=512), nullable=False),
        sa.Column("token_encrypted", sa.Text(), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("cursor", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("notify_types", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('active', 'broken', 'paused')", name=op.f("ck_accounts_state")),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["fediverse_apps.id"],
            name=op.f("fk_accounts_app_id_fediverse_apps"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint(
            "matrix_user_id",
            "instance",
            "fediverse_account_id",
            name=op.f("uq_accounts_matrix_user_id_instance_fediverse_account_id"),
        ),
    )
    op.create_index(op.f("ix_accounts_app_id"), "accounts", ["app_id"], unique=False)

    op.create_table(
        "pending_flows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("oauth_state", sa.String(length=128), nullable=False),
        sa.Column("dm_room_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["fediverse_apps.id"],
            name=op.f("fk_pending_flows_app_id_fediverse_apps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_flows")),
        sa.UniqueConstraint("oauth_state", name=op.f("uq_pending_flows_oauth_state")),
    )
    op.create_index(op.f("ix_pending_flows_app_id"), "pending_flows", ["app_id"], unique=False)
    op.create_index(op.f("ix_pending_flows_expires_at"), "pending_flows", ["expires_at"], unique=False)
    op.create_index(
        op.f("ix_pending_flows_matrix_user_id"), "pending_flows", ["matrix_user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_pending_flows_matrix_user_id"), table_name="pending_flows")
    op.drop_index(op.f("ix_pending_flows_expires_at"), table_name="pending_flows")
    op.drop_index(op.f("ix_pending_flows_app_id"), table_name="pending_flows")

    op.drop_table("pending_flows")
    op.drop_index(op.f("ix_accounts_app_id"), table_name="accounts")

    op.drop_table("accounts")
    op.drop_table("matrix_session")
    op.drop_index(op.f("ix_handled_events_handled_at"), table_name="handled_events")

    op.drop_table("handled_events")
    op.drop_table("fediverse_apps")
    op.drop_table("dm_rooms")
