"""Stand-ins for core functions this branch does not have yet (issue 17): the checks that a change to how an
account is protected is made by the person (password, and a current code), and signing out the other sessions.
Each is the smallest version; the core's own replaces it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from twofa import second_factor, sessions
from twofa.clock import Clock
from twofa.errors import InvalidCredentials
from twofa.models import User
from twofa.passwords import verify_password
from twofa.throttle import lock_user


def check_password(user: User, password: str) -> None:
    if not verify_password(user.password_hash, password):
        raise InvalidCredentials("the password is wrong")


def confirm_person(session: Session, user: User, password: str, code: str, clock: Clock) -> None:
    """The password and a current app or email code (not a backup code) of a user with 2FA on."""
    check_password(user, password)
    locked = lock_user(session, user.id)
    second_factor.verify(session, locked, code, allow_backup=False, clock=clock)


def revoke_others(session: Session, user_id: int, keep_session_id: int, clock: Clock) -> int:
    """Sign out every live session of the user but ``keep_session_id``; how many were ended."""
    others = [row for row in sessions.list_active(session, user_id, clock) if row.id != keep_session_id]
    for row in others:
        sessions.revoke(session, user_id, row.id, clock)
    return len(others)
