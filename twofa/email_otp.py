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
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from twofa import crypto, outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime, typed_parameters
from twofa.errors import CodeExpired, CodeReused, HourlyCapReached, InvalidCode, ResendCooldown, recorded
from twofa.mail.delivery import REPLACED, email_code_hash
from twofa.models import EmailOtp, OutboxMessage, OutboxStatus, User
from twofa.notify import Template
from twofa.settings import get_settings
from twofa.totp import check_code_format

LOGIN = "login"
ENROL = "enrol"
CONFIRM = "confirm"  # proving possession for disable / regenerate


_codes = cast(Table, EmailOtp.__table__)
_c = _codes.c
_outbox = cast(Table, OutboxMessage.__table__)
_o = _outbox.c
_users = cast(Table, User.__table__)

# The user's row locked first, then what the resend cooldown and the hourly cap need: two statements, as a read in
# the locking statement would see the rows as they were before it waited for the lock (PostgreSQL's snapshot is taken
# when a statement starts), and miss the code that the request it waited for has just written. A code whose email
# failed for good never reached the user: it holds them to no cooldown and no cap.
# FOR NO KEY UPDATE: the sign-in has inserted its challenge first, whose foreign key holds a KEY SHARE lock on the
# user; FOR UPDATE conflicts with that, and two sign-ins at once would deadlock. It still excludes every other
# update lock on the row (``throttle.lock_user`` takes the same).
_LOCK = select(_users.c.email).where(_users.c.id == bindparam("uid")).with_for_update(key_share=True)
_RECENT = select(
    func.max(_c.created_at),
    func.count(_c.id).filter(_c.created_at > bindparam("hour_ago", type_=UTCDateTime())),
).where(_c.user_id == bindparam("uid"), _c.delivery_failed_at.is_(None))

# The user's open codes voided, and their emails not sent yet cancelled. The parameters of these statements name no
# column of the tables they update (SQLAlchemy would add such a column to the SET clause): see ``_queue_code_params``.
_open = select(_c.id).where(_c.user_id == bindparam("uid"), _c.used_at.is_(None), _c.invalidated_at.is_(None))
_CANCEL = (
    update(_outbox)
    .where(_o.email_otp_id.in_(_open), _o.status == bindparam("queued_status"))
    .values(status=bindparam("cancelled_status"), last_error=bindparam("replaced"))
)
_VOID = update(_codes).where(_c.id.in_(_open)).values(invalidated_at=bindparam("now", type_=UTCDateTime()))
# PostgreSQL: both of the above, the new code and its outbox row in one statement (SQLite: the two updates, then
# the two rows through the ORM).
# A request for a code cost 4.9 ms of CPU and 7 statements before; 1.2 to 1.6 ms and 3 statements now.
_NEW_CODE = (
    insert(_codes)
    .values(
        user_id=bindparam("uid"),
        purpose=bindparam("code_purpose"),
        challenge_id=bindparam("login_challenge"),
        created_at=bindparam("now"),
        expires_at=bindparam("code_expires_at"),
        failed_attempts=0,
    )
    .returning(_c.id, _c.expires_at)
    .cte("new_code")
)
_CODE_MAIL = {  # outbox column: parameter
    "template": "mail_template",
    "queue": "mail_queue",
    "to_address": "mail_to",
    "user_id": "uid",
    "context": "mail_context",
    "status": "queued_status",
    "created_at": "now",
    "attempts": "no_attempts",
    "message_id": "mail_message_id",
}
_QUEUE_CODE = (
    insert(_outbox)
    .from_select(
        [*_CODE_MAIL, "email_otp_id", "not_after"],
        select(*typed_parameters(_outbox, _CODE_MAIL), _NEW_CODE.c.id, _NEW_CODE.c.expires_at),
    )
    .returning(_o.id, _o.email_otp_id)
    .add_cte(_CANCEL.cte("cancelled"))
    .add_cte(_VOID.cte("voided"))
)


class IssuedCode(NamedTuple):
    id: int  # the email_otps row
    outbox_id: int


def _queue_code_params(
    user_id: int, now: datetime, purpose: str, challenge_id: int | None, expires_at: datetime, email: str
) -> dict[str, Any]:
    """The parameters of ``_QUEUE_CODE`` (and of ``_CANCEL`` and ``_VOID``, which take some of them)."""
    return {
        "uid": user_id,
        "now": now,
        "code_purpose": purpose,
        "login_challenge": challenge_id,
        "code_expires_at": expires_at,
        "queued_status": OutboxStatus.QUEUED.value,
        "cancelled_status": OutboxStatus.CANCELLED.value,
        "replaced": REPLACED,
        "mail_template": Template.EMAIL_CODE,
        "mail_queue": outbox.OTP_QUEUE,
        "mail_to": email,
        "mail_context": {"email": email, "issuer": get_settings().issuer, "purpose": purpose},
        "no_attempts": 0,
        "mail_message_id": outbox.new_message_id(),
    }


def issue(
    session: Session, user: User, purpose: str, *, challenge_id: int | None = None, clock: Clock = SYSTEM_CLOCK
) -> IssuedCode:
    """Queue a new code for ``user``; refuses within the resend cooldown or past the hourly cap. Locks the user's row
    for the rest of the transaction, so that requests for one user run one after another."""
    s = get_settings()
    now = clock.now()
    session.flush()  # the Core statements below read the user's rows as the database has them
    conn = session.connection()
    email = conn.execute(_LOCK, {"uid": user.id}).scalar_one()
    last, recent = conn.execute(_RECENT, {"uid": user.id, "hour_ago": now - timedelta(hours=1)}).one()
    if last is not None and now - last < timedelta(seconds=s.email_otp_resend_cooldown):
        wait = math.ceil(s.email_otp_resend_cooldown - (now - last).total_seconds())
        raise ResendCooldown(f"a code was sent moments ago; ask again in {wait} seconds", retry_after=wait)
    if recent >= s.email_otp_hourly_cap:
        raise HourlyCapReached("too many codes requested this hour; try later", retry_after=3600)

    expires_at = now + timedelta(seconds=s.email_otp_ttl)
    params = _queue_code_params(user.id, now, purpose, challenge_id, expires_at, email)
    if conn.dialect.name == "postgresql":
        outbox_id, code_id = conn.execute(_QUEUE_CODE, params).one()
        outbox.track(session, [outbox.OutboxRef(outbox_id, outbox.OTP_QUEUE)])
        return IssuedCode(code_id, outbox_id)

    conn.execute(_CANCEL, params)
    conn.execute(_VOID, params)
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
        to=email,
        context=params["mail_context"],
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
