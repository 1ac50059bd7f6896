"""audit log: who acted and how, and a hash chain per organisation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("credential", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("credential_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("client_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("chain", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("chain_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_audit_log_chain_seq", ["chain", "chain_seq"])
        batch.create_index("ix_audit_log_org_at", ["org_id", "at"], unique=False)
    op.create_table(
        "audit_chains",
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("chain", name=op.f("pk_audit_chains")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SEAL_ONCE)
    _chain_existing_rows()


# The database still refuses every change to a row, except its sealing into its chain, once, as its transaction
# commits: the chain columns go from empty to set, and nothing else changes.
SEAL_ONCE = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.row_hash IS NULL AND OLD.chain IS NULL
       AND (NEW.id, NEW.at, NEW.event, NEW.user_id, NEW.org_id, NEW.actor, NEW.details::text,
            NEW.credential, NEW.credential_id, NEW.client_ip)
           IS NOT DISTINCT FROM (OLD.id, OLD.at, OLD.event, OLD.user_id, OLD.org_id, OLD.actor, OLD.details::text,
            OLD.credential, OLD.credential_id, OLD.client_ip) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
"""
REFUSE_ALL = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
"""


def _chain_existing_rows() -> None:
    """Rows written before this revision join their chains in id order, as if written now."""
    from sqlalchemy.orm import Session

    from twofa.audit_chain import seal

    with Session(bind=op.get_bind()) as session:
        ids = list(session.execute(sa.text("SELECT id FROM audit_log ORDER BY id")).scalars())
        for start in range(0, len(ids), 1000):
            seal(session, ids[start : start + 1000])
        session.flush()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(REFUSE_ALL)
    op.drop_table("audit_chains")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_org_at")
        batch.drop_constraint("uq_audit_log_chain_seq", type_="unique")
        for column in ("row_hash", "prev_hash", "chain_seq", "chain", "client_ip", "credential_id", "credential"):
            batch.drop_column(column)
