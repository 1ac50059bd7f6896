"""Living with 2FA: status, disabling, regenerating backup codes, support resets."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from twofa import audit, backup_codes, email_otp, second_factor, sessions
from twofa.accounts import is_managed_by_sso
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import InvalidInput, ManagedBySso, TwoFactorNotEnabled
from twofa.models import EmailOtp, TotpDevice, User
from twofa.notify import BackupCodePurpose, Template, notify
from twofa.throttle import lock_user


@dataclass(frozen=True)
class TwoFactorStatus:
    enabled: bool
    method: str | None
    managed_by_sso: bool
    backup_codes_left: int
    enabled_at: datetime | None
    pending_totp_enrolment: bool


def status(session: Session, user: User) -> TwoFactorStatus:
    user = session.get(User, user.id) or user  # the caller's object may come from another session
    pending = session.execute(
        select(TotpDevice.id).where(TotpDevice.user_id == user.id, TotpDevice.confirmed_at.is_(None))
    ).first()
    return TwoFactorStatus(
        enabled=user.twofa_method is not None,
        method=user.twofa_method,
        managed_by_sso=is_managed_by_sso(session, user.id),
        backup_codes_left=backup_codes.remaining(session, user.id) if user.twofa_method else 0,
        enabled_at=user.twofa_enabled_at,
        pending_totp_enrolment=pending is not None,
    )


def request_confirmation_code(session: Session, user: User, clock: Clock = SYSTEM_CLOCK) -> None:
    """For users whose second factor is email: send a code that confirms a disable or a regeneration."""
    user = lock_user(session, user.id)
    if user.twofa_method != "email":
        raise TwoFactorNotEnabled("email codes are not this account's second factor")
    email_otp.issue(session, user, email_otp.CONFIRM, clock=clock)


def disable(
    session: Session,
    user: User,
    password: str,
    code: str,
    *,
    current_session: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Turn 2FA off with the password and a current code (or a backup code). Every other session ends."""
    user = lock_user(session, user.id)
    if is_managed_by_sso(session, user.id):
        raise ManagedBySso()
    if user.twofa_method is None:
        raise TwoFactorNotEnabled()
    method = second_factor.confirm_person(
        session, user, password, code, purpose=BackupCodePurpose.DISABLE_2FA, clock=clock
    )
    _turn_off(session, user, clock)
    sessions.revoke_others(session, user.id, current_session, clock=clock)
    audit.record(session, audit.Event.TWOFA_DISABLED, user_id=user.id, details={"confirmed_with": method}, clock=clock)
    notify(session, user, Template.TWOFA_DISABLED, clock=clock)


def regenerate_backup_codes(
    session: Session, user: User, password: str, code: str, clock: Clock = SYSTEM_CLOCK
) -> list[str]:
    """A new set of backup codes, confirmed with the password and a current app or email code; the old set stops
    working."""
    user = lock_user(session, user.id)
    if user.twofa_method is None:
        raise TwoFactorNotEnabled()
    second_factor.confirm_person(session, user, password, code, allow_backup=False, clock=clock)
    codes = backup_codes.generate(session, user, clock)
    audit.record(session, audit.Event.BACKUP_CODES_REGENERATED, user_id=user.id, clock=clock)
    notify(session, user, Template.BACKUP_CODES_REGENERATED, clock=clock)
    return codes


def support_reset(session: Session, user: User, *, operator: str, reason: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """An operator turns a user's 2FA off (lost device and codes), with a reason that lands in the audit log."""
    if not operator.strip():
        raise InvalidInput("a support reset needs the operator's name")
    _reset(session, user, audit.Event.TWOFA_RESET_BY_SUPPORT, f"support:{operator.strip()}", reason, None, clock)


def admin_reset(
    session: Session, user: User, *, org_id: int, admin_email: str, reason: str, clock: Clock = SYSTEM_CLOCK
) -> None:
    """An organisation's owner or admin turns a member's 2FA off (the caller checked who may reset whom)."""
    _reset(session, user, audit.Event.TWOFA_RESET_BY_ADMIN, f"admin:{admin_email}", reason, org_id, clock)


def _reset(session: Session, user: User, event: str, actor: str, reason: str, org_id: int | None, clock: Clock) -> None:
    """2FA off, every session of the user ended (whoever holds one may be the reason for the reset), audited, and
    the user told."""
    if not reason.strip():
        raise InvalidInput("a reset needs a reason")
    if len(reason) > 500:
        raise InvalidInput("the reason is at most 500 characters")
    user = lock_user(session, user.id)
    if user.twofa_method is None:
        raise TwoFactorNotEnabled()
    _turn_off(session, user, clock)
    sessions.revoke_others(session, user.id, None, clock=clock)
    audit.record(
        session, event, user_id=user.id, org_id=org_id, actor=actor, details={"reason": reason.strip()}, clock=clock
    )
    notify(session, user, Template.RESET_BY_SUPPORT, {"reason": reason.strip(), "by": actor}, clock=clock)


def _turn_off(session: Session, user: User, clock: Clock) -> None:
    session.execute(delete(TotpDevice).where(TotpDevice.user_id == user.id))
    backup_codes.revoke_all(session, user.id, clock)
    session.execute(
        update(EmailOtp)
        .where(EmailOtp.user_id == user.id, EmailOtp.invalidated_at.is_(None))
        .values(invalidated_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    user.twofa_method = None
    user.twofa_enabled_at = None
    user.second_factor_failures = 0
    user.second_factor_locked_until = None
    session.flush()
