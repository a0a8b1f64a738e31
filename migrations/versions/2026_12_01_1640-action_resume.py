"""Replies and posts resumable after a crash: their text (encrypted) and whether a server call was made
are kept in the action journal from intake on; accounts remember their server's software, so the
legacy `follow` scope counts where the server accepts it.

Revision ID: action_resume
Revises: event_map_action_journal
Create Date: 2026-12-01 16:40:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "action_resume"
down_revision: str | Sequence[str] | None = "event_map_action_journal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("software", sa.String(length=64), nullable=True))
    with op.batch_alter_table("action_journal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("visibility", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
    # Entries written before this revision were written just before their server call.
    op.execute("UPDATE action_journal SET started_at = created_at")


def downgrade() -> None:
    with op.batch_alter_table("action_journal", schema=None) as batch_op:
        batch_op.drop_column("started_at")
        batch_op.drop_column("visibility")
        batch_op.drop_column("text_encrypted")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("software")
