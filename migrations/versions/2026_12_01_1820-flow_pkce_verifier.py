"""Pending flows keep a random PKCE verifier, encrypted, instead of deriving it from the public state.

Flows started before this revision had no secret verifier; they are deleted (a pending flow lives
minutes; the user starts `connect` again).

Revision ID: flow_pkce_verifier
Revises: action_resume
Create Date: 2026-12-01 18:20:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "flow_pkce_verifier"
down_revision: str | Sequence[str] | None = "action_resume"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM pending_flows")
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pkce_verifier_encrypted", sa.Text(), nullable=False))


def downgrade() -> None:
    op.execute("DELETE FROM pending_flows")  # their challenges were made from verifiers the old code lacks
    with op.batch_alter_table("pending_flows", schema=None) as batch_op:
        batch_op.drop_column("pkce_verifier_encrypted")
