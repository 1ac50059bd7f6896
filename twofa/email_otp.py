"""Email one-time codes: the fallback second factor for users without an authenticator app.

A code is issued as a row with no code in it and an outbox row on the ``otp`` queue; the code is made by the
delivery step (``twofa.mail.delivery``), which stores only its keyed hash. So neither the broker nor the outbox
ever holds a code. Each code is valid ``TWOFA_EMAIL_OTP_TTL`` seconds from the request, only for the login (or
enrolment) it was issued for, at most once, with at most ``email_otp_max_tries`` wrong tries; a newer code voids
the older one.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from twofa import outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import CodeExpired, CodeReused, HourlyCapReached, InvalidCode, ResendCooldown, recorded
from twofa.mail.delivery import REPLACED, email_code_matches
from twofa.models import EmailOtp, OutboxMessage, OutboxStatus, User
from twofa.notify import Template
from twofa.settings import get_settings
from twofa.throttle import lock_user
from twofa.totp import check_code_format

LOGIN = "login"
ENROL = "enrol"
CONFIRM = "confirm"  # proving possession for disable / regenerate
_HOUR = timedelta(hours=1)


class IssuedCode(NamedTuple):
    id: int  # the email_otps row
    outbox_id: int


def issue(
    session: Session,
    user: User,
    purpose: str,
    *,
    challenge_id: int | None = None,
    not_after: datetime | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> IssuedCode:
    """Queue a new code for ``user``, valid ``email_otp_ttl`` seconds and never past ``not_after`` (the end of the
    sign-in it belongs to). Refuses a resend for the same purpose and sign-in within the cooldown, and any code past
    the hourly cap. Locks the user, then the user's open codes, then their queued mail (the delivery's order)."""
    s = get_settings()
    now = clock.now()
    lock_user(session, user.id)
    counted = (EmailOtp.user_id == user.id) & EmailOtp.delivery_failed_at.is_(None)  # a failed email holds no one
    same = (EmailOtp.purpose == purpose) & (
        EmailOtp.challenge_id == challenge_id if challenge_id is not None else EmailOtp.challenge_id.is_(None)
    )
    last = session.scalar(select(func.max(EmailOtp.created_at)).where(counted, same))
    if last is not None and now - last < timedelta(seconds=s.email_otp_resend_cooldown):
        wait = math.ceil(s.email_otp_resend_cooldown - (now - last).total_seconds())
        raise ResendCooldown(f"a code was sent moments ago; ask again in {wait} seconds", retry_after=wait)
    recent = session.scalar(select(func.count(EmailOtp.id)).where(counted, EmailOtp.created_at > now - _HOUR))
    if (recent or 0) >= s.email_otp_hourly_cap:
        raise HourlyCapReached("too many codes requested this hour; try later", retry_after=3600)

    voided = session.scalars(
        update(EmailOtp)
        .where(EmailOtp.user_id == user.id, EmailOtp.used_at.is_(None), EmailOtp.invalidated_at.is_(None))
        .values(invalidated_at=now)
        .returning(EmailOtp.id)
        .execution_options(synchronize_session=False)
    ).all()
    if voided:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.email_otp_id.in_(voided), OutboxMessage.status == OutboxStatus.QUEUED)
            .values(status=OutboxStatus.CANCELLED, last_error=REPLACED)
            .execution_options(synchronize_session=False)
        )
    expires_at = now + timedelta(seconds=s.email_otp_ttl)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    otp = EmailOtp(
        user_id=user.id,
        purpose=purpose,
        challenge_id=challenge_id,
        created_at=now,
        expires_at=expires_at,
        failed_attempts=0,
    )
    session.add(otp)
    session.flush()
    row = outbox.enqueue(
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
    session.flush()
    return IssuedCode(otp.id, row.id)


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
    if not email_code_matches(otp.id, code, otp.code_hash):
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
