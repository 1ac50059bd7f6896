"""Checking a second factor for a user, with the account-wide attempt limit.

Used by the login flow and by the actions that ask for a current code (disable, regenerate backup codes).
"""

from __future__ import annotations

import enum
from typing import Literal, NamedTuple, cast, overload

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from twofa import audit, backup_codes, crypto, email_otp, throttle, totp
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import CodeReused, InvalidCode, MalformedCode, TwoFactorNotEnabled, recorded
from twofa.models import TotpDevice, User
from twofa.notify import Template, notify
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


_devices = cast(Table, TotpDevice.__table__)
_DEVICE = select(_devices.c.id, _devices.c.secret_ciphertext).where(
    _devices.c.user_id == bindparam("user_id"), _devices.c.confirmed_at.is_not(None)
)
# The device must still hold the seed the code was checked against: a caller's copy (``ConfirmedDevice``) may come
# from a snapshot taken before it waited for the user's lock. Public for callers that move the step in a statement of
# their own, under further conditions (``USE_STEP_CTE``; the sign-in's ``logins._SIGNED_IN_AT_ONCE``).
USE_STEP = (
    update(_devices)
    .where(
        _devices.c.id == bindparam("device_id"),
        _devices.c.secret_ciphertext == bindparam("ciphertext"),
        _devices.c.confirmed_at.is_not(None),
        _devices.c.last_used_step.is_(None) | (_devices.c.last_used_step < bindparam("step")),
    )
    .values(last_used_step=bindparam("step"))
    .returning(_devices.c.id)
)


class ConfirmedDevice(NamedTuple):
    """The user's confirmed authenticator app, as a caller that already read it passes it on (the login reads it
    with the challenge, one round trip fewer on the busiest path)."""

    id: int
    secret_ciphertext: str


class PendingStep(NamedTuple):
    """An app code that matched, its time step not yet recorded (``verify(..., defer_step=True)``). The caller moves
    the device's step in its own write, under the conditions of ``verify_totp``'s (``USE_STEP_CTE``), and must then call
    ``step_recorded`` with whether that write moved it: the code is accepted only then."""

    device_id: int
    ciphertext: str
    step: int

    def params(self) -> dict[str, object]:
        return {"device_id": self.device_id, "ciphertext": self.ciphertext, "step": self.step}


# For a caller's own statement: the step moved, or no row when the code was used already.
USE_STEP_CTE = USE_STEP.cte("step_used")


def match_totp(
    session: Session, user: User, code: str, clock: Clock = SYSTEM_CLOCK, device: ConfirmedDevice | None = None
) -> PendingStep:
    """The step of the user's app that ``code`` matches, not yet recorded; ``InvalidCode`` when none does. Without
    ``device``, the user's confirmed device is read here."""
    totp.check_code_format(code)
    if device is None:
        row = session.connection().execute(_DEVICE, {"user_id": user.id}).first()
        device = None if row is None else ConfirmedDevice(row.id, row.secret_ciphertext)
    if device is None:
        raise InvalidCode("no authenticator app is set up")
    step = totp.matching_step(crypto.decrypt(device.secret_ciphertext), code, clock.now())
    if step is None:
        raise InvalidCode()
    return PendingStep(device.id, device.secret_ciphertext, step)


def verify_totp(
    session: Session, user: User, code: str, clock: Clock = SYSTEM_CLOCK, device: ConfirmedDevice | None = None
) -> int:
    """Accept a TOTP code once (RFC 6238 5.2); returns its time step. The caller holds the user row lock. Without
    ``device``, the user's confirmed device is read here."""
    pending = match_totp(session, user, code, clock, device)
    # Atomic: of two submissions of one code, however simultaneous, only one moves last_used_step forward.
    moved = session.connection().execute(USE_STEP, pending.params()).first()
    _refuse_replay(session, user, pending, moved is not None, clock)
    return pending.step


def _refuse_replay(session: Session, user: User, pending: PendingStep, moved: bool, clock: Clock) -> None:
    if not moved:
        details = {"step": pending.step}
        audit.record(session, audit.Event.CODE_REPLAY_REFUSED, user_id=user.id, details=details, clock=clock)
        raise recorded(CodeReused())


def step_recorded(session: Session, user: User, pending: PendingStep, moved: bool, clock: Clock = SYSTEM_CLOCK) -> None:
    """Finish ``verify(..., defer_step=True)`` once the caller's write has run: the code is accepted if that write
    moved the step (the success is registered), refused as a replay (``CodeReused``, audited) if not."""
    _refuse_replay(session, user, pending, moved, clock)
    throttle.register_success(session, user)


@overload
def verify(
    session: Session,
    user: User,
    code: str,
    *,
    method: str | None = ...,
    challenge_id: int | None = ...,
    allow_backup: bool = ...,
    device: ConfirmedDevice | None = ...,
    defer_step: Literal[False] = ...,
    clock: Clock = ...,
) -> Method: ...


@overload
def verify(
    session: Session,
    user: User,
    code: str,
    *,
    method: str | None = ...,
    challenge_id: int | None = ...,
    allow_backup: bool = ...,
    device: ConfirmedDevice | None = ...,
    defer_step: bool,
    clock: Clock = ...,
) -> Method | PendingStep: ...


def verify(
    session: Session,
    user: User,
    code: str,
    *,
    method: str | None = None,
    challenge_id: int | None = None,
    allow_backup: bool = True,
    device: ConfirmedDevice | None = None,
    defer_step: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> Method | PendingStep:
    """Check ``code`` for the user's second factor; returns the method that accepted it. ``user`` must be locked
    (``throttle.lock_user``) by the caller, so concurrent checks for one account run one after another. ``device``:
    the user's confirmed TOTP device, when the caller has read it already.

    With ``defer_step``, an app code's step is not written here: a matching app code returns a ``PendingStep``
    instead, which the caller records in its own statement and settles with ``step_recorded`` (the sign-in does,
    saving a round trip). Any other method is settled here, as without it.

    Wrong codes count towards the account lockout; malformed input and replays do not (neither is a guess).
    """
    throttle.check(user, clock)
    chosen = pick_method(user, code, method)
    if chosen is Method.BACKUP_CODE and not allow_backup:
        raise MalformedCode("a current code from your app or email is needed here, not a backup code")
    if chosen is not Method.BACKUP_CODE and chosen.value != user.twofa_method:
        raise InvalidCode(f"{chosen.value} is not this account's second factor")
    try:
        if chosen is Method.TOTP and defer_step:
            return match_totp(session, user, code, clock, device)
        if chosen is Method.TOTP:
            verify_totp(session, user, code, clock, device)
        elif chosen is Method.EMAIL:
            purpose = email_otp.LOGIN if challenge_id is not None else email_otp.CONFIRM
            email_otp.verify(session, user, code, purpose, challenge_id=challenge_id, clock=clock)
        else:
            left = backup_codes.use(session, user, code, clock)
            _tell_backup_code_used(session, user, left, clock)
    except (MalformedCode, CodeReused):
        raise
    except InvalidCode as exc:
        failures = throttle.register_failure(session, user, clock)
        if throttle.lockout_delay(failures) is not None and failures == get_settings().lockout_threshold:
            notify(session, user, Template.SECOND_FACTOR_LOCKED, {"failures": failures}, clock=clock)
        recorded(exc)
        raise
    throttle.register_success(session, user)
    return chosen


def _tell_backup_code_used(session: Session, user: User, left: int, clock: Clock) -> None:
    notify(session, user, Template.BACKUP_CODE_USED, {"remaining": left}, clock=clock)
    if left <= get_settings().backup_codes_low_warning:
        notify(session, user, Template.BACKUP_CODES_LOW, {"remaining": left}, clock=clock)
