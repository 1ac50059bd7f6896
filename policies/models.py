"""Policy tables. An organisation without a row follows the default policy, switched on since it was created."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class OrgPolicy(Base):
    __tablename__ = "org_policies"

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    required: Mapped[bool] = mapped_column(Boolean)
    grace_days: Mapped[int] = mapped_column(Integer)
    reminder_days: Mapped[list[int]] = mapped_column(JSON)  # days before the deadline
    escalate: Mapped[bool] = mapped_column(Boolean)
    after_deadline: Mapped[str] = mapped_column(String(20))  # "enrol_only" or "remind_only"
    disable_grace_days: Mapped[int] = mapped_column(Integer)
    enabled_at: Mapped[datetime] = mapped_column(UTCDateTime())  # when `required` last became true
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(200))


class OrgPolicyRole(Base):
    """A role the policy applies to; ``totp_only`` when email codes do not count for it."""

    __tablename__ = "org_policy_roles"

    org_id: Mapped[int] = mapped_column(ForeignKey("org_policies.org_id", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    totp_only: Mapped[bool] = mapped_column(Boolean, default=False)


class PolicyDeadline(Base):
    """A member's deadline, stored once when the member became subject to the policy, never moved by later runs."""

    __tablename__ = "policy_deadlines"

    membership_id: Mapped[int] = mapped_column(ForeignKey("memberships.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    subject_since: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime] = mapped_column(UTCDateTime())
