"""Second factors: the TOTP device, backup code sets, email one-time codes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from twofa.db import Base, UTCDateTime


class TotpDevice(Base):
    """One authenticator app per user: pending until confirmed with a code."""

    __tablename__ = "totp_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    secret_ciphertext: Mapped[str] = mapped_column(Text)  # Fernet token of the base32 seed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # RFC 6238 5.2: the last accepted time step; only later steps are accepted.
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)


class BackupCodeSet(Base):
    """Ten codes sharing one salt, so checking a submitted code costs one KDF evaluation."""

    __tablename__ = "backup_code_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    time_cost: Mapped[int] = mapped_column(Integer)
    memory_cost: Mapped[int] = mapped_column(Integer)
    parallelism: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BackupCode(Base):
    __tablename__ = "backup_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("backup_code_sets.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EmailOtp(Base):
    """An emailed code. The code itself is made when its email is delivered; only its keyed hash is stored."""

    __tablename__ = "email_otps"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))  # "login" or "enrol"
    challenge_id: Mapped[int | None] = mapped_column(ForeignKey("login_challenges.id", ondelete="CASCADE"))
    code_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivery_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
