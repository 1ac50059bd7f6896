"""Users, organisations and memberships."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    SUPER_ADMIN = "super_admin"
    FINANCE = "finance"
    MEMBER = "member"


class TwoFactorMethod(enum.StrEnum):
    TOTP = "totp"
    EMAIL = "email"


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # The identity provider of an organisation that signs in through SSO; its members' 2FA is "Managed by SSO".
    sso_idp: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    twofa_method: Mapped[str | None] = mapped_column(String(10))
    twofa_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consecutive failed second-factor attempts, across every session and process (updated atomically).
    second_factor_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    second_factor_locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("twofa_method IN ('totp', 'email')", name="twofa_method"),)

    @property
    def twofa_enabled(self) -> bool:
        return self.twofa_method is not None


class Membership(Base):
    __tablename__ = "memberships"

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When the role last changed; with created_at it tells when a member became subject to a role-based policy.
    role_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("org_id", "user_id", name="uq_memberships_org_user"),
        CheckConstraint("role IN ('owner', 'admin', 'super_admin', 'finance', 'member')", name="role"),
    )
