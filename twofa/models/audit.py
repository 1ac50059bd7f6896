"""The append-only audit log of security events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, event
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

    __table_args__ = (
        Index("ix_audit_log_user_at", "user_id", "at"),
        Index("ix_audit_log_event_at", "event", "at"),
    )


def _refuse_change(_mapper: Mapper[Any], _connection: Any, target: AuditEvent) -> None:
    raise RuntimeError(f"audit_log is append-only (event {target.id} may not change)")


event.listen(AuditEvent, "before_update", _refuse_change)
event.listen(AuditEvent, "before_delete", _refuse_change)
