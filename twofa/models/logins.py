"""Login challenges, the login history and sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class LoginChallenge(Base):
    """The state between a correct password and the second factor."""

    __tablename__ = "login_challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))


class LoginHistory(Base):
    """Every login attempt, failed or not. ``2fa_verified`` is the column name the help article uses."""

    __tablename__ = "login_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # password_ok, bad_password, unknown_user, second_factor_required, success, bad_code, code_reused,
    # locked, expired, enrolment_required
    outcome: Mapped[str] = mapped_column(String(30))
    method: Mapped[str | None] = mapped_column(String(20))  # password, totp, email, backup_code
    twofa_verified: Mapped[bool] = mapped_column("2fa_verified", Boolean)

    __table_args__ = (
        Index("ix_login_history_user_at", "user_id", "at"),
        Index("ix_login_history_at", "at"),
    )


class UserSession(Base):
    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    twofa_verified: Mapped[bool] = mapped_column("2fa_verified", Boolean)
    method: Mapped[str | None] = mapped_column(String(20))
    # "full", or "enrol" for a member past an org's 2FA deadline: such a session may only set up 2FA.
    scope: Mapped[str] = mapped_column(String(10), default="full", server_default="full")
