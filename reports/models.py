"""Built reports: one row per organisation and week, claimed before building so a report is built once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class WeeklyReport(Base):
    __tablename__ = "weekly_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    week: Mapped[str] = mapped_column(String(8))  # 2026-W47
    status: Mapped[str] = mapped_column(String(10))  # building, done
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recipients: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (UniqueConstraint("org_id", "week", name="uq_weekly_reports_org_week"),)
