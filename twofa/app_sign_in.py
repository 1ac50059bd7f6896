"""A right authenticator-app code finishes a sign-in in one statement on PostgreSQL.

The second, faster path of the sign-in's second step, kept because bench_api's goal fails without it
(bench/README.md, "Sign-in"). ``logins.complete_login`` tries it first, under the same locks (the challenge, then
the user; the app's row is read with them, unlocked). It declines everything that needs judging (another factor, a
malformed, wrong or replayed code, failures on record, SQLite), and the general path then judges the code and
records the outcome.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Insert, Select, Table, bindparam, exists, insert, select, update
from sqlalchemy.orm import Session

from twofa import crypto, second_factor, sessions, totp
from twofa.clock import Clock
from twofa.errors import MalformedCode
from twofa.login_history import Outcome, history_row, history_table
from twofa.models import LoginChallenge, TotpDevice, User, UserSession
from twofa.sessions import Client, IssuedSession

_devices = cast(Table, TotpDevice.__table__)
_challenges = cast(Table, LoginChallenge.__table__)
_sessions = cast(Table, UserSession.__table__)


def finish(
    session: Session,
    user: User,
    code: str,
    client: Client,
    *,
    challenge_id: int,
    device_id: int | None,
    device_secret: str | None,
    method: str | None,
    scope_of: Callable[[], str],
    clock: Clock,
) -> IssuedSession | None:
    """The session opened by ``code`` if it is a right app code for ``user`` (locked, with no failures to clear),
    on PostgreSQL; None, having written nothing, for anything else. ``scope_of`` asks the enrolment gate, once the
    code is accepted."""
    if (
        device_secret is None
        or method not in (None, "totp")
        or user.twofa_method != "totp"
        or user.second_factor_failures
        or user.second_factor_locked_until is not None
        or session.get_bind().dialect.name != "postgresql"
    ):
        return None
    try:
        totp.check_code_format(code)
    except MalformedCode:
        return None
    now = clock.now()
    step = totp.matching_step(crypto.decrypt(device_secret), code, now)
    if step is None:
        return None
    scope = scope_of()
    outcome = Outcome.SUCCESS if scope == "full" else Outcome.ENROLMENT_REQUIRED
    token, new_session = sessions.new_row(
        user.id, twofa_verified=True, method="totp", client=client, scope=scope, now=now
    )
    history = history_row(user.email, user, client, outcome, now, method="totp", verified=True)
    params: dict[str, Any] = {"device_id": device_id, "device_owner": user.id, "device_secret": device_secret}
    params |= {"step": step, "challenge_id": challenge_id, "now": now}
    params |= {"h_" + name: value for name, value in history.items()}
    params |= {"s_" + name: value for name, value in new_session.items()}
    session_id = session.execute(_statement(tuple(history), tuple(new_session)), params).scalar_one_or_none()
    if session_id is None:
        return None  # a replay, or the app changed meanwhile: nothing was written
    return IssuedSession(token, session_id, user.id, True, scope)


@functools.cache
def _statement(history_columns: tuple[str, ...], session_columns: tuple[str, ...]) -> Insert:
    """Built once. Data-modifying CTEs: the step moves forward (``second_factor.STEP_FORWARD``: of two submissions
    of one code only one moves it); only if it moved is the challenge completed, and only then are the history row
    and the session written. Returns the session's id."""
    # The device row is not locked and was read before the locks were granted: the UPDATE, which re-reads the row's
    # newest version, moves the step only if the row is still the confirmed app whose seed judged the code.
    step = second_factor.STEP_FORWARD.where(
        _devices.c.user_id == bindparam("device_owner"),
        _devices.c.confirmed_at.is_not(None),
        _devices.c.secret_ciphertext == bindparam("device_secret"),
    ).cte("step_moved")
    moved = exists(select(step.c.id))
    completed = (
        update(_challenges)
        .where(_challenges.c.id == bindparam("challenge_id"), moved)
        .values(completed_at=bindparam("now"))
        .returning(_challenges.c.id)
        .cte("completed")
    )
    signed_in = exists(select(completed.c.id))  # the step moved and the challenge was completed
    history = (
        insert(history_table)
        .from_select(history_columns, _values(history_table, history_columns, "h_").where(signed_in))
        .cte("history_row")
    )
    return (
        insert(_sessions)
        .from_select(session_columns, _values(_sessions, session_columns, "s_").where(signed_in))
        .returning(_sessions.c.id)
        .add_cte(history)
    )


def _values(table: Table, columns: tuple[str, ...], prefix: str) -> Select[Any]:
    """``SELECT`` of one row of parameters named ``prefix`` + column, typed as ``table``'s columns."""
    return select(*(bindparam(prefix + name, type_=table.c[name].type) for name in columns))
