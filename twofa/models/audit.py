"""The append-only audit log of security events, hash-chained per organisation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from twofa.db import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    event: Mapped[str] = mapped_column(String(50))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(200))  # who did it, when not the user (support, system)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # How the request was authenticated: session, api_key, cli or system; the session's or key's id; the client.
    credential: Mapped[str | None] = mapped_column(String(20))
    credential_id: Mapped[int | None] = mapped_column(Integer)
    client_ip: Mapped[str | None] = mapped_column(String(45))
    # The chain ("org:<id>", or "none" for rows without an organisation), the row's place in it, the hash of the
    # chain's previous row and this row's own hash; filled as the row's transaction commits (twofa.audit_chain).
    chain: Mapped[str | None] = mapped_column(String(40))
    chain_seq: Mapped[int | None] = mapped_column(Integer)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    row_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_user_at", "user_id", "at"),
        Index("ix_audit_log_event_at", "event", "at"),
        Index("ix_audit_log_org_at", "org_id", "at"),
        UniqueConstraint("chain", "chain_seq", name="uq_audit_log_chain_seq"),
    )


class AuditChain(Base):
    """The head of each chain: its last place and hash. Locked to append, so two writers cannot fork a chain; and
    a deleted last row shows as a head past the chain's end."""

    __tablename__ = "audit_chains"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))


def _refuse_change(_mapper: Mapper[Any], _connection: Any, target: AuditEvent) -> None:
    raise RuntimeError(f"audit_log is append-only (event {target.id} may not change)")


event.listen(AuditEvent, "before_update", _refuse_change)
event.listen(AuditEvent, "before_delete", _refuse_change)
