"""Limits on failed second-factor attempts, per account, across every session and process.

The user row is locked while a code is checked, so concurrent submissions are judged one after another; the
failure counter is updated in SQL. After ``lockout_threshold`` consecutive failures the second factor is locked
for a delay that doubles with each further failure, up to ``lockout_max_seconds``.
"""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from twofa import audit
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import TooManyAttempts
from twofa.models import User
from twofa.settings import get_settings


def lock_user(session: Session, user_id: int) -> User:
    """The user row, locked for the rest of the transaction. FOR NO KEY UPDATE, as every lock this service takes on
    a user: it excludes the others, not the KEY SHARE lock that inserting a row which refers to the user takes (a
    transaction that had written such a row, an audit event say, and then asked for FOR UPDATE could deadlock with
    another doing the same)."""
    locked = select(User).where(User.id == user_id).with_for_update(key_share=True)
    return session.execute(locked.execution_options(populate_existing=True)).scalar_one()


def check(user: User, clock: Clock = SYSTEM_CLOCK) -> None:
    """Refuse with ``TooManyAttempts`` while the (locked) user's second factor is locked."""
    now = clock.now()
    if user.second_factor_locked_until is not None and user.second_factor_locked_until > now:
        wait = math.ceil((user.second_factor_locked_until - now).total_seconds())
        raise TooManyAttempts(f"too many wrong codes; try again in {wait} seconds", retry_after=wait)


def lockout_delay(failures: int) -> int | None:
    """Seconds of lockout after ``failures`` consecutive failures, or None below the threshold."""
    s = get_settings()
    if failures < s.lockout_threshold:
        return None
    return int(min(s.lockout_base_seconds * 2 ** (failures - s.lockout_threshold), s.lockout_max_seconds))


def register_failure(session: Session, user: User, clock: Clock = SYSTEM_CLOCK) -> int:
    """Count one failure; returns the consecutive count. Locks the second factor once the threshold is met."""
    failures = session.execute(
        update(User)
        .where(User.id == user.id)
        .values(second_factor_failures=User.second_factor_failures + 1)
        .returning(User.second_factor_failures)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    user.second_factor_failures = failures
    delay = lockout_delay(failures)
    if delay is not None:
        user.second_factor_locked_until = clock.now() + timedelta(seconds=delay)
        audit.record(
            session,
            audit.Event.SECOND_FACTOR_LOCKED,
            user_id=user.id,
            details={"failures": failures, "locked_seconds": delay},
            clock=clock,
        )
    session.flush()
    return failures


def register_success(session: Session, user: User) -> None:
    if user.second_factor_failures or user.second_factor_locked_until is not None:
        user.second_factor_failures = 0
        user.second_factor_locked_until = None
        session.flush()
