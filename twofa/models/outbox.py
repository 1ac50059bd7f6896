"""The mail outbox: every email is a row here before anything is sent."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class OutboxStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by a batch until lease_until; see twofa.mail.batch
    SENT = "sent"
    FAILED = "failed"  # permanently: a 5xx answer, or retries exhausted
    EXPIRED = "expired"  # its content (an email code) stopped being valid before it could leave
    CANCELLED = "cancelled"  # superseded, e.g. a newer email code was requested


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    template: Mapped[str] = mapped_column(String(50))
    queue: Mapped[str] = mapped_column(String(20))  # "otp" or "mail"
    to_address: Mapped[str] = mapped_column(String(320))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="SET NULL"))
    # Template variables. Never a secret: an email code is made at delivery time from email_otp_id.
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    email_otp_id: Mapped[int | None] = mapped_column(ForeignKey("email_otps.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(12), default=OutboxStatus.QUEUED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime())  # never send after this
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # While ``sending``: when a batch that claimed the row is presumed dead and the sweeper may queue it again.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Stable across retries; an email code's message adds a mark of its own per attempt (delivery.code_message_id).
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    # A caller-chosen key that makes a message unique (e.g. one reminder per member and stage).
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True)

    __table_args__ = (Index("ix_outbox_status_created", "status", "created_at"),)
