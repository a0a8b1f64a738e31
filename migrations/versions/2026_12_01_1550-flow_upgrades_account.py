"""Pending connect flows remember the stored account an `allow-actions` upgrade is for, so the code is
accepted only when the user signs in as that account.

Revision ID: flow_upgrades_account
Revises: relay_leases
Create Date: 2026-12-01 15:50:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "flow_upgrades_account"
down_revision: str | Sequence[str] | None = "relay_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upgrades_account_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_pending_flows_upgrades_account_id"), ["upgrades_account_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_pending_flows_upgrades_account_id_accounts"),
            "accounts",
            ["upgrades_account_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_pending_flows_upgrades_account_id_accounts"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_pending_flows_upgrades_account_id"))
        batch_op.drop_column("upgrades_account_id")
