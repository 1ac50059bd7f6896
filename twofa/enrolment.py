"""Turning 2FA on: with an authenticator app (TOTP) or, for users without one, with email codes.

Starting either needs the person (``second_factor.confirm_person``): the password, and while a factor is on a current
code of it. Turning 2FA on ends the other sessions opened with the password alone; replacing a factor ends every
other session."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from twofa import audit, backup_codes, crypto, email_otp, second_factor, sessions, totp
from twofa.accounts import is_managed_by_sso
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import InvalidCode, ManagedBySso, NoPendingEnrolment, TwoFactorAlreadyEnabled
from twofa.models import TotpDevice, TwoFactorMethod, User
from twofa.notify import BackupCodePurpose, Template, notify
from twofa.settings import get_settings
from twofa.throttle import lock_user


def _check_can_enrol(session: Session, user: User, method: TwoFactorMethod) -> None:
    if is_managed_by_sso(session, user.id):
        raise ManagedBySso()
    # Moving up from email codes to an app is allowed (a policy may require it); anything else means disable first.
    upgrade = method is TwoFactorMethod.TOTP and user.twofa_method == TwoFactorMethod.EMAIL.value
    if user.twofa_method is not None and not upgrade:
        raise TwoFactorAlreadyEnabled()


def start_totp(
    session: Session, user: User, password: str, code: str | None = None, clock: Clock = SYSTEM_CLOCK
) -> totp.Enrolment:
    """A new pending seed (replacing any earlier unconfirmed one) with its key URI and QR code."""
    user = lock_user(session, user.id)
    _check_can_enrol(session, user, TwoFactorMethod.TOTP)
    second_factor.confirm_person(session, user, password, code, purpose=BackupCodePurpose.CHANGE_FACTOR, clock=clock)
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, user.email, get_settings().issuer)
    device = session.execute(select(TotpDevice).where(TotpDevice.user_id == user.id)).scalar_one_or_none()
    if device is None:
        device = TotpDevice(user_id=user.id)
        session.add(device)
    device.secret_ciphertext = crypto.encrypt(secret)
    device.created_at = clock.now()
    device.confirmed_at = None
    device.last_used_step = None
    audit.record(session, audit.Event.TOTP_ENROLMENT_STARTED, user_id=user.id, clock=clock)
    session.flush()
    return totp.Enrolment(secret=secret, otpauth_url=uri, qr_png=totp.qr_png(uri))


def confirm_totp(
    session: Session, user: User, code: str, *, current_session: int | None = None, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """Turn TOTP on with a current code from the app; returns the backup codes, shown once.

    A wrong code changes nothing: the pending seed stays, so the user can simply try the next code.
    """
    totp.check_code_format(code)
    user = lock_user(session, user.id)
    _check_can_enrol(session, user, TwoFactorMethod.TOTP)
    device = session.execute(
        select(TotpDevice).where(TotpDevice.user_id == user.id, TotpDevice.confirmed_at.is_(None))
    ).scalar_one_or_none()
    if device is None:
        raise NoPendingEnrolment()
    step = totp.matching_step(crypto.decrypt(device.secret_ciphertext), code, clock.now())
    if step is None:
        raise InvalidCode("the code does not match; check the app's clock and try the next code")
    device.confirmed_at = clock.now()
    device.last_used_step = step
    return _turn_on(session, user, TwoFactorMethod.TOTP, current_session, clock)


def start_email(session: Session, user: User, password: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Send a code to the user's address to prove it works before email codes become the second factor."""
    user = lock_user(session, user.id)
    _check_can_enrol(session, user, TwoFactorMethod.EMAIL)
    second_factor.confirm_person(session, user, password, None, clock=clock)
    email_otp.issue(session, user, email_otp.ENROL, clock=clock)


def confirm_email(
    session: Session, user: User, code: str, *, current_session: int | None = None, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    totp.check_code_format(code)
    user = lock_user(session, user.id)
    _check_can_enrol(session, user, TwoFactorMethod.EMAIL)
    email_otp.verify(session, user, code, email_otp.ENROL, clock=clock)
    return _turn_on(session, user, TwoFactorMethod.EMAIL, current_session, clock)


def _turn_on(
    session: Session, user: User, method: TwoFactorMethod, current_session: int | None, clock: Clock
) -> list[str]:
    replacing = user.twofa_method is not None
    sessions.revoke_others(session, user.id, current_session, password_only=not replacing, clock=clock)
    user.twofa_method = method.value
    user.twofa_enabled_at = clock.now()
    user.second_factor_failures = 0
    user.second_factor_locked_until = None
    codes = backup_codes.generate(session, user, clock)
    audit.record(session, audit.Event.TWOFA_ENABLED, user_id=user.id, details={"method": method.value}, clock=clock)
    notify(session, user, Template.TWOFA_ENABLED, {"method": method.value}, clock=clock)
    session.flush()
    return codes
