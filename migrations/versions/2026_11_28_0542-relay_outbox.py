"""Relay outbox: messages written before they are sent, for exactly-once delivery across crashes.

Revision ID: 51142253db9d
Revises: 0f1ccdf0515a
Create Date: 2026-11-28 05:42:06.493479

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "51142253db9d"
down_revision: str | Sequence[str] | None = "0f1ccdf0515a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("matrix_user_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("txn_id", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("cursors", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_outbox")),
        sa.UniqueConstraint("txn_id", name=op.f("uq_relay_outbox_txn_id")),
    )
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relay_outbox_matrix_user_id"), ["matrix_user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_outbox_matrix_user_id"))
    op.drop_table("relay_outbox")
