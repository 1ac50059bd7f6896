"""Expiring codes and purging old rows. Every step is an idempotent set-wise UPDATE or DELETE: running it twice,
or twice at once, does no harm."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import EmailOtp, LoginChallenge, OutboxMessage, OutboxStatus, UserSession

OTP_RETENTION = timedelta(days=7)
CHALLENGE_RETENTION = timedelta(days=1)
SESSION_RETENTION = timedelta(days=30)
OUTBOX_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Expired:
    codes: int
    mails: int
    purged: int


def expire(session: Session, clock: Clock = SYSTEM_CLOCK) -> Expired:
    now = clock.now()
    codes = session.execute(
        update(EmailOtp)
        .where(EmailOtp.expires_at <= now, EmailOtp.used_at.is_(None), EmailOtp.invalidated_at.is_(None))
        .values(invalidated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    mails = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, OutboxMessage.not_after <= now)
        .values(status=OutboxStatus.EXPIRED, last_error="expired before it could be sent")
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    purged = 0
    for stmt in (
        delete(OutboxMessage).where(
            OutboxMessage.status.not_in((OutboxStatus.QUEUED, OutboxStatus.SENDING)),
            OutboxMessage.created_at < now - OUTBOX_RETENTION,
            OutboxMessage.dedupe_key.is_(None),
        ),
        delete(EmailOtp).where(EmailOtp.created_at < now - OTP_RETENTION),
        delete(LoginChallenge).where(LoginChallenge.expires_at < now - CHALLENGE_RETENTION),
        delete(UserSession).where(UserSession.expires_at < now - SESSION_RETENTION),
    ):
        purged += session.execute(stmt.execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    return Expired(codes=codes, mails=mails, purged=purged)
