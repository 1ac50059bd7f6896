"""Checking a second factor for a user, with the account-wide attempt limit.

Used by the login flow and by the actions that ask for a current code (disable, regenerate backup codes).
"""

from __future__ import annotations

import enum
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from twofa import audit, backup_codes, crypto, email_otp, throttle, totp
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import (
    BackupCodeUsed,
    CodeReused,
    InvalidCode,
    InvalidCredentials,
    MalformedCode,
    TwoFactorNotEnabled,
    recorded,
)
from twofa.models import TotpDevice, User
from twofa.notify import BackupCodePurpose, Template, notify
from twofa.passwords import verify_password
from twofa.settings import get_settings


class Method(enum.StrEnum):
    TOTP = "totp"
    EMAIL = "email"
    BACKUP_CODE = "backup_code"


def pick_method(user: User, code: str, method: str | None) -> Method:
    """The method a submitted code is for: the one named, else a backup code by its shape, else the user's."""
    if method is not None:
        try:
            return Method(method)
        except ValueError:
            raise MalformedCode(f"unknown method {method!r} (totp, email or backup_code)") from None
    if isinstance(code, str) and len(code) != totp.DIGITS and backup_codes.looks_like_backup_code(code):
        return Method.BACKUP_CODE
    if user.twofa_method is None:
        raise TwoFactorNotEnabled()
    return Method(user.twofa_method)


# Built once: every TOTP sign-in runs both.
_devices = cast(Table, TotpDevice.__table__)
_CONFIRMED_DEVICE = select(_devices.c.id, _devices.c.secret_ciphertext).where(
    _devices.c.user_id == bindparam("user_id"), _devices.c.confirmed_at.is_not(None)
)
# Atomic: of two submissions of one code, however simultaneous, only one moves last_used_step forward (also run by
# app_sign_in, as a CTE).
STEP_FORWARD = (
    update(_devices)
    .where(
        _devices.c.id == bindparam("device_id"),
        _devices.c.last_used_step.is_(None) | (_devices.c.last_used_step < bindparam("step")),
    )
    .values(last_used_step=bindparam("step"))
    .returning(_devices.c.id)
)


def verify_totp(session: Session, user: User, code: str, clock: Clock = SYSTEM_CLOCK) -> int:
    """Accept a TOTP code once (RFC 6238 5.2); returns its time step. The caller holds the user row lock."""
    totp.check_code_format(code)
    device = session.execute(_CONFIRMED_DEVICE, {"user_id": user.id}).one_or_none()
    if device is None:
        raise InvalidCode("no authenticator app is set up")
    step = totp.matching_step(crypto.decrypt(device.secret_ciphertext), code, clock.now())
    if step is None:
        raise InvalidCode()
    if session.execute(STEP_FORWARD, {"device_id": device.id, "step": step}).first() is None:
        audit.record(session, audit.Event.CODE_REPLAY_REFUSED, user_id=user.id, details={"step": step}, clock=clock)
        raise recorded(CodeReused())
    return step


def verify(
    session: Session,
    user: User,
    code: str,
    *,
    method: str | None = None,
    challenge_id: int | None = None,
    allow_backup: bool = True,
    purpose: BackupCodePurpose = BackupCodePurpose.SIGN_IN,
    clock: Clock = SYSTEM_CLOCK,
) -> Method:
    """Check ``code`` for the user's second factor; returns the method that accepted it. ``user`` must be locked
    (``throttle.lock_user``) by the caller, so concurrent checks for one account run one after another.

    Wrong codes count towards the account lockout; malformed input and replays do not (neither is a guess)."""
    throttle.check(user, clock)
    chosen = pick_method(user, code, method)
    if chosen is Method.BACKUP_CODE and not allow_backup:
        raise MalformedCode("a current code from your app or email is needed here, not a backup code")
    if chosen is not Method.BACKUP_CODE and chosen.value != user.twofa_method:
        raise InvalidCode(f"{chosen.value} is not this account's second factor")
    try:
        if chosen is Method.TOTP:
            verify_totp(session, user, code, clock)
        elif chosen is Method.EMAIL:
            kind = email_otp.LOGIN if challenge_id is not None else email_otp.CONFIRM
            email_otp.verify(session, user, code, kind, challenge_id=challenge_id, clock=clock)
        else:
            left = backup_codes.use(session, user, code, clock)
            _tell_backup_code_used(session, user, left, purpose, clock)
    except (MalformedCode, CodeReused, BackupCodeUsed):
        raise  # not a guess: a typo, or a replay of a code that was right
    except InvalidCode as exc:
        _count_failure(session, user, clock)
        recorded(exc)
        raise
    throttle.register_success(session, user)
    return chosen


def _count_failure(session: Session, user: User, clock: Clock) -> None:
    failures = throttle.register_failure(session, user, clock)
    if throttle.lockout_delay(failures) is not None and failures == get_settings().lockout_threshold:
        notify(session, user, Template.SECOND_FACTOR_LOCKED, {"failures": failures}, clock=clock)


NOT_THE_PERSON = "the password or the code is wrong"


def confirm_person(
    session: Session,
    user: User,
    password: str,
    code: str | None,
    *,
    allow_backup: bool = True,
    purpose: BackupCodePurpose = BackupCodePurpose.REAUTHENTICATE,
    clock: Clock = SYSTEM_CLOCK,
) -> Method | None:
    """The person, not just a session, before a change to how the account is protected: the password, and while 2FA
    is on a current code of its factor (or, where ``allow_backup``, a backup code). ``user`` must be locked. A wrong
    password and a wrong code answer alike, and both count towards the lockout. Returns the method that accepted
    the code (None while 2FA is off)."""
    throttle.check(user, clock)
    if not verify_password(user.password_hash, password or ""):
        _count_failure(session, user, clock)
        raise recorded(InvalidCredentials(NOT_THE_PERSON))
    if user.twofa_method is None:
        return None
    if not code:
        raise MalformedCode("a current code from your app or email (or a backup code) is needed here")
    try:
        return verify(session, user, code, allow_backup=allow_backup, purpose=purpose, clock=clock)
    except InvalidCode as exc:
        if isinstance(exc, CodeReused | BackupCodeUsed):
            raise
        raise recorded(InvalidCredentials(NOT_THE_PERSON)) from None


def _tell_backup_code_used(session: Session, user: User, left: int, purpose: BackupCodePurpose, clock: Clock) -> None:
    notify(session, user, Template.BACKUP_CODE_USED, {"remaining": left, "purpose": purpose}, clock=clock)
    if left <= get_settings().backup_codes_low_warning and purpose is not BackupCodePurpose.DISABLE_2FA:
        notify(session, user, Template.BACKUP_CODES_LOW, {"remaining": left}, clock=clock)  # void after a disable
