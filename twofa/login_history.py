"""The login history: one row for every sign-in attempt, the outcomes it records, and reading it back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from twofa.clock import Clock
from twofa.models import LoginHistory, User
from twofa.sessions import Client


class Outcome:
    SUCCESS = "success"
    ENROLMENT_REQUIRED = "enrolment_required"
    INVALID_CREDENTIALS = "invalid_credentials"
    SECOND_FACTOR_REQUIRED = "second_factor_required"
    BAD_CODE = "bad_code"
    MALFORMED_CODE = "malformed_code"
    CODE_REUSED = "code_reused"
    LOCKED = "locked"
    CHALLENGE_INVALID = "challenge_invalid"
    SSO_REQUIRED = "sso_required"


# Built once: every sign-in attempt runs it. The table's own statement (not the mapped class's), as nothing reads the
# row back into the session.
history_table = cast(Table, LoginHistory.__table__)
_HISTORY_ROW = insert(history_table)


def history_row(
    email: str,
    user: User | None,
    client: Client,
    outcome: str,
    now: datetime,
    *,
    method: str | None = "password",
    verified: bool = False,
) -> dict[str, Any]:
    """A login-history row, keyed by column name."""
    return {
        "at": now,
        "user_id": user.id if user else None,
        "email": email[:320],
        "ip": client.ip,
        "user_agent": client.stored_agent,
        "outcome": outcome,
        "method": method,
        "2fa_verified": verified,
    }


def record(
    session: Session,
    email: str,
    user: User | None,
    client: Client,
    outcome: str,
    clock: Clock,
    *,
    method: str | None = "password",
    verified: bool = False,
) -> None:
    """One login-history row: every sign-in attempt writes one."""
    session.execute(
        _HISTORY_ROW, history_row(email, user, client, outcome, clock.now(), method=method, verified=verified)
    )


def history(session: Session, user_id: int, limit: int = 50) -> Sequence[LoginHistory]:
    return (
        session.execute(
            select(LoginHistory)
            .where(LoginHistory.user_id == user_id)
            .order_by(LoginHistory.at.desc(), LoginHistory.id.desc())
            .limit(min(max(limit, 1), 500))
        )
        .scalars()
        .all()
    )
