"""Email one-time codes: the fallback second factor for users without an authenticator app.

A code is issued as a row with no code in it and an outbox row on the ``otp`` queue; the code is made by the
delivery step (``twofa.mail.delivery``), which stores only its keyed hash. So neither the broker nor the outbox
ever holds a code. Each code is valid ``TWOFA_EMAIL_OTP_TTL`` seconds from the request, only for the login (or
enrolment) it was issued for, at most once, with at most ``email_otp_max_tries`` wrong tries; a newer code voids
the older one.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from twofa import crypto, outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import CodeExpired, CodeReused, HourlyCapReached, InvalidCode, ResendCooldown, recorded
from twofa.mail.delivery import email_code_hash
from twofa.models import EmailOtp, OutboxMessage, OutboxStatus, User
from twofa.notify import Template
from twofa.settings import get_settings
from twofa.throttle import lock_user
from twofa.totp import check_code_format

LOGIN = "login"
ENROL = "enrol"
CONFIRM = "confirm"  # proving possession for disable / regenerate


def issue(
    session: Session, user: User, purpose: str, *, challenge_id: int | None = None, clock: Clock = SYSTEM_CLOCK
) -> EmailOtp:
    """Queue a new code for ``user``; refuses within the resend cooldown or past the hourly cap."""
    s = get_settings()
    lock_user(session, user.id)
    now = clock.now()
    # A code whose email failed for good never reached the user: it holds them to no cooldown and no cap.
    last, recent = session.execute(
        select(
            func.max(EmailOtp.created_at),
            func.count(EmailOtp.id).filter(EmailOtp.created_at > now - timedelta(hours=1)),
        ).where(EmailOtp.user_id == user.id, EmailOtp.delivery_failed_at.is_(None))
    ).one()
    if last is not None and now - last < timedelta(seconds=s.email_otp_resend_cooldown):
        wait = math.ceil(s.email_otp_resend_cooldown - (now - last).total_seconds())
        raise ResendCooldown(f"a code was sent moments ago; ask again in {wait} seconds", retry_after=wait)
    if recent >= s.email_otp_hourly_cap:
        raise HourlyCapReached("too many codes requested this hour; try later", retry_after=3600)

    _invalidate_open(session, user.id, clock)
    otp = EmailOtp(
        user_id=user.id,
        purpose=purpose,
        challenge_id=challenge_id,
        created_at=now,
        expires_at=now + timedelta(seconds=s.email_otp_ttl),
        failed_attempts=0,
    )
    session.add(otp)
    session.flush()
    outbox.enqueue(
        session,
        template=Template.EMAIL_CODE,
        to=user.email,
        context={"email": user.email, "issuer": s.issuer, "purpose": purpose},
        user_id=user.id,
        queue=outbox.OTP_QUEUE,
        email_otp_id=otp.id,
        not_after=otp.expires_at,
        clock=clock,
    )
    return otp


def _invalidate_open(session: Session, user_id: int, clock: Clock) -> None:
    now = clock.now()
    open_ids = select(EmailOtp.id).where(
        EmailOtp.user_id == user_id, EmailOtp.used_at.is_(None), EmailOtp.invalidated_at.is_(None)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.email_otp_id.in_(open_ids), OutboxMessage.status == OutboxStatus.QUEUED)
        .values(status=OutboxStatus.CANCELLED, last_error="a newer code replaced it")
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(EmailOtp)
        .where(EmailOtp.id.in_(open_ids.scalar_subquery()))
        .values(invalidated_at=now)
        .execution_options(synchronize_session=False)
    )


def verify(
    session: Session,
    user: User,
    code: str,
    purpose: str,
    *,
    challenge_id: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Accept ``code`` once for this purpose (and login challenge). Raises ``InvalidCode`` and its kin."""
    check_code_format(code)
    s = get_settings()
    query = select(EmailOtp).where(
        EmailOtp.user_id == user.id, EmailOtp.purpose == purpose, EmailOtp.invalidated_at.is_(None)
    )
    if challenge_id is not None:
        query = query.where(EmailOtp.challenge_id == challenge_id)
    otp = session.execute(
        query.order_by(EmailOtp.id.desc()).limit(1).with_for_update().execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if otp is None or otp.code_hash is None:
        raise InvalidCode("no code was sent for this sign-in; request one")
    if otp.used_at is not None:
        raise CodeReused("this code was already used")
    if clock.now() >= otp.expires_at:
        raise CodeExpired()
    if otp.failed_attempts >= s.email_otp_max_tries:
        raise CodeExpired("too many wrong tries for this code; request a new one")
    if not crypto.same(email_code_hash(otp.id, code), otp.code_hash):
        otp.failed_attempts += 1
        session.flush()
        raise recorded(InvalidCode())
    spent = session.execute(
        update(EmailOtp)
        .where(EmailOtp.id == otp.id, EmailOtp.used_at.is_(None))
        .values(used_at=clock.now())
        .returning(EmailOtp.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if spent is None:
        raise CodeReused("this code was already used")
