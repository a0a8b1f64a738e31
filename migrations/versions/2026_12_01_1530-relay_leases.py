"""Relay workers and their account leases, for `gts-bot run --role relay` on PostgreSQL.

Revision ID: relay_leases
Revises: 7c3e9a1d5b20
Create Date: 2026-12-01 15:30:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "relay_leases"
down_revision: str | Sequence[str] | None = "7c3e9a1d5b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "relay_workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_relay_workers")),
    )
    with op.batch_alter_table("relay_workers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relay_workers_expires_at"), ["expires_at"], unique=False)
    op.create_table(
        "relay_leases",
        sa.Column("account_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_relay_leases_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_relay_leases")),
    )
    with op.batch_alter_table("relay_leases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_relay_leases_holder"), ["holder"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("relay_leases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_leases_holder"))
    op.drop_table("relay_leases")
    with op.batch_alter_table("relay_workers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_relay_workers_expires_at"))
    op.drop_table("relay_workers")
