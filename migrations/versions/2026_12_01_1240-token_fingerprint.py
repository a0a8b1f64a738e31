"""Token fingerprints, so a revoke can tell whether another connection uses the same token; the probed
server software on pending connect flows, for per-server wording when the code arrives.

Revision ID: 7c3e9a1d5b20
Revises: 51142253db9d
Create Date: 2026-12-01 12:40:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e9a1d5b20"
down_revision: str | Sequence[str] | None = "51142253db9d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_fingerprint", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_accounts_token_fingerprint"), ["token_fingerprint"], unique=False)
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("software", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.drop_column("software")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_token_fingerprint"))
        batch_op.drop_column("token_fingerprint")
