"""The event map (relayed message → notification it shows), the outbox column that carries it until the
message is sent, and the action journal that makes actions from Matrix happen exactly once (issue 12).

Revision ID: event_map_action_journal
Revises: flow_upgrades_account
Create Date: 2026-12-01 16:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "event_map_action_journal"
down_revision: str | Sequence[str] | None = "flow_upgrades_account"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shows", sa.Text(), nullable=True))
    op.create_table(
        "relayed_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("notification_id", sa.String(length=255), nullable=False),
        sa.Column("notification_type", sa.String(length=64), nullable=False),
        sa.Column("status_id", sa.String(length=255), nullable=True),
        sa.Column("requester_account_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_relayed_events")),
    )
    with op.batch_alter_table("relayed_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relayed_events_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_relayed_events_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_relayed_events_matrix_user_id"), ["matrix_user_id"], unique=False)
    op.create_table(
        "action_journal",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=255), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("result_id", sa.String(length=255), nullable=True),
        sa.Column("result_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('pending', 'done')", name=op.f("ck_action_journal_state")),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_action_journal")),
    )
    with op.batch_alter_table("action_journal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_action_journal_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_action_journal_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_action_journal_matrix_user_id"), ["matrix_user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("action_journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_action_journal_matrix_user_id"))
        batch_op.drop_index(batch_op.f("ix_action_journal_created_at"))
        batch_op.drop_index(batch_op.f("ix_action_journal_account_id"))
    op.drop_table("action_journal")
    with op.batch_alter_table("relayed_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relayed_events_matrix_user_id"))
        batch_op.drop_index(batch_op.f("ix_relayed_events_created_at"))
        batch_op.drop_index(batch_op.f("ix_relayed_events_account_id"))
    op.drop_table("relayed_events")
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.drop_column("shows")
