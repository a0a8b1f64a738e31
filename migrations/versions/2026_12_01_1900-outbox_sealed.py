"""Relay outbox messages encrypted at rest: `message_encrypted`; the plaintext `body`/`html` columns
become optional (only rows written before this keep them, until they are sent).

Revision ID: outbox_sealed
Revises: flow_pkce_verifier
Create Date: 2026-12-01 19:00:00.000000

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outbox_sealed"
down_revision: str | Sequence[str] | None = "flow_pkce_verifier"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_encrypted", sa.Text(), nullable=True))
        batch_op.alter_column("body", existing_type=sa.Text(), nullable=True)
        batch_op.alter_column("html", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # Encrypted rows cannot become plaintext here (no key): they are dropped, like undeliverable ones.
    op.execute(sa.text("DELETE FROM relay_outbox WHERE message_encrypted IS NOT NULL"))
    with op.batch_alter_table("relay_outbox", schema=None) as batch_op:
        batch_op.alter_column("html", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("body", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("message_encrypted")
