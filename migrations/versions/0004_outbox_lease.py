"""outbox: rows claimed by a batch carry a lease

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 05:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import twofa.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("lease_until", twofa.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Rows a batch holds go back to the queue first: the older code knows no 'sending'.
    op.execute("UPDATE outbox SET status = 'queued' WHERE status = 'sending'")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_until")
