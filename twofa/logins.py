"""The login flow: password, then the second factor, then a session. Every attempt is a login-history row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CTE, ColumnElement, Insert, Select, Table, bindparam, select, update
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from twofa import crypto, email_otp, second_factor, sessions
from twofa.accounts import get_user
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime, insert_values, insert_where, transaction
from twofa.errors import (
    ChallengeInvalid,
    CodeReused,
    DomainError,
    InvalidCode,
    InvalidCredentials,
    MalformedCode,
    TooManyAttempts,
    recorded,
)
from twofa.models import LoginChallenge, LoginHistory, TotpDevice, User, UserSession
from twofa.passwords import verify_password
from twofa.sessions import Client, IssuedSession
from twofa.settings import get_settings


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


# Whether a user may only set up 2FA right now (an organisation's deadline has passed). The core does not know
# policies; the policies package installs its verdict here when it is imported.
EnrolmentGate = Callable[[Session, User, datetime], bool]
_gate: EnrolmentGate | None = None


def install_enrolment_gate(gate: EnrolmentGate | None) -> EnrolmentGate | None:
    global _gate
    previous, _gate = _gate, gate
    return previous


def _scope(session: Session, user: User, clock: Clock) -> str:
    return "enrol" if _gate is not None and _gate(session, user, clock.now()) else "full"


@dataclass(frozen=True)
class SecondFactorRequired:
    challenge: str  # a short-lived token naming this login; shown once to the client
    methods: list[str]
    expires_at: datetime
    email_code_sent: bool = False

    def __repr__(self) -> str:
        return f"SecondFactorRequired(methods={self.methods}, challenge=<hidden>)"


@dataclass(frozen=True)
class LoggedIn:
    """A session. With ``enrolment_required`` the session may only be used to set up 2FA."""

    session: IssuedSession
    method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def enrolment_required(self) -> bool:
        return self.session.scope == "enrol"


# Every sign-in attempt writes one login-history row; its parameters are named as those of ``sessions.INSERT``
# (and, like them, for no column of a table the sign-in updates).
_history = cast(Table, LoginHistory.__table__)
_HISTORY_PARAMETERS = {  # column: parameter
    "at": "at",
    "user_id": "uid",
    "email": "email",
    "ip": "client_ip",
    "user_agent": "client_agent",
    "outcome": "outcome",
    "method": "method",
    "2fa_verified": "verified",
}
_HISTORY = insert_values(_history, _HISTORY_PARAMETERS)


def record(
    session: Session,
    *,
    email: str,
    user: User | None,
    client: Client,
    outcome: str,
    method: str | None,
    verified: bool,
    clock: Clock,
) -> None:
    """One login-history row (a plain INSERT: every sign-in attempt writes one)."""
    session.connection().execute(
        _HISTORY,
        {
            "at": clock.now(),
            "uid": user.id if user else None,
            "email": email[:320],
            "client_ip": client.ip,
            "client_agent": (client.user_agent or "")[:512] or None,
            "outcome": outcome,
            "method": method,
            "verified": verified,
        },
    )


def login_with_password(
    session: Session, email: str, password: str, client: Client, clock: Clock = SYSTEM_CLOCK
) -> LoggedIn | SecondFactorRequired:
    """Check the password. Without 2FA this opens a session; with it, it returns a challenge for the second
    factor (and, for email users, queues a code). Unknown emails and wrong passwords answer alike."""
    email = (email or "").strip().lower()
    user = get_user(session, email) if email else None
    if not verify_password(user.password_hash if user else None, password or "") or user is None:
        record(
            session,
            email=email,
            user=user,
            client=client,
            outcome=Outcome.INVALID_CREDENTIALS,
            method="password",
            verified=False,
            clock=clock,
        )
        raise recorded(InvalidCredentials())
    if user.twofa_method is None:
        scope = _scope(session, user, clock)
        issued = sessions.issue(
            session, user, twofa_verified=False, method="password", client=client, scope=scope, clock=clock
        )
        record(
            session,
            email=email,
            user=user,
            client=client,
            outcome=Outcome.SUCCESS if scope == "full" else Outcome.ENROLMENT_REQUIRED,
            method="password",
            verified=False,
            clock=clock,
        )
        return LoggedIn(session=issued, method="password")

    token = crypto.new_token()
    now = clock.now()
    challenge = LoginChallenge(
        user_id=user.id,
        token_hash=crypto.token_hash(token),
        created_at=now,
        expires_at=now + timedelta(seconds=get_settings().login_challenge_ttl),
        ip=client.ip,
        user_agent=(client.user_agent or "")[:512] or None,
    )
    session.add(challenge)
    session.flush()
    sent = False
    if user.twofa_method == "email":
        sent = _send_login_code(session, user, challenge.id, clock)
    record(
        session,
        email=email,
        user=user,
        client=client,
        outcome=Outcome.SECOND_FACTOR_REQUIRED,
        method="password",
        verified=False,
        clock=clock,
    )
    return SecondFactorRequired(
        challenge=token,
        methods=[user.twofa_method, second_factor.Method.BACKUP_CODE.value],
        expires_at=challenge.expires_at,
        email_code_sent=sent,
    )


def _send_login_code(session: Session, user: User, challenge_id: int, clock: Clock) -> bool:
    try:
        email_otp.issue(session, user, email_otp.LOGIN, challenge_id=challenge_id, clock=clock)
    except TooManyAttempts:
        return False  # a recent code is on its way; the user may ask again after the cooldown
    return True


# The challenge and its user, with the user's confirmed TOTP device, if any (at most one per user), so that checking
# an app code needs no statement of its own: the second step of every login starts here, without locks on the
# optimistic path (``_CHALLENGE_READ``), with them on the locked one (``_OPEN_CHALLENGE``). The device row is not
# locked (nor can it be, on the nullable side of an outer join): the step update accepts the code only if the device
# still holds the seed read here. A Core statement: loading the user through the ORM made this read cost 0.7 ms of CPU
# instead of 0.5 (``_attached`` makes the row the session's User).
_users = cast(Table, User.__table__)
_USER_ATTRS = [(prop.key, prop.columns[0]) for prop in User.__mapper__.column_attrs]
_CHALLENGE_READ = (
    select(
        *(column for _, column in _USER_ATTRS),
        LoginChallenge.id,
        LoginChallenge.completed_at,
        LoginChallenge.expires_at,
        TotpDevice.id,
        TotpDevice.secret_ciphertext,
    )
    .join(LoginChallenge, LoginChallenge.user_id == _users.c.id)
    .outerjoin(TotpDevice, (TotpDevice.user_id == _users.c.id) & TotpDevice.confirmed_at.is_not(None))
    .where(LoginChallenge.token_hash == bindparam("token_hash"))
)
# Locked together in one statement, FOR NO KEY UPDATE as ``throttle.lock_user``: PostgreSQL locks the rows in the
# order of this list, the challenge first, then the user (``_SIGNED_IN_AT_ONCE`` keeps that order).
_OPEN_CHALLENGE = _CHALLENGE_READ.with_for_update(of=(LoginChallenge.__table__, _users), key_share=True)


def _attached(session: Session, values: dict[str, Any]) -> User:
    """The user row a Core statement read, as the session's ``User`` (persistent, unmodified: changes to it are
    flushed as for any loaded object). A copy the session already holds is refreshed, as ``populate_existing``
    would."""
    user = session.identity_map.get(session.identity_key(User, values["id"]))
    if user is None:
        user = User(**values)
        make_transient_to_detached(user)
        session.add(user)
    else:
        for key, value in values.items():
            set_committed_value(user, key, value)
    return cast(User, user)


_challenges = cast(Table, LoginChallenge.__table__)
_COMPLETE_CHALLENGE = (
    update(_challenges)
    .where(_challenges.c.id == bindparam("challenge_id"))
    .values(completed_at=bindparam("at", type_=UTCDateTime()))
)
# PostgreSQL: the three writes of a successful sign-in (the challenge completed, the session, its history row) in
# one statement: two round trips fewer on the path every sign-in takes.
_SIGNED_IN = sessions.INSERT.add_cte(_COMPLETE_CHALLENGE.cte("challenge_completed")).add_cte(
    _HISTORY.cte("history_written")
)


# With an app code, the same statement also moves the device's step (``second_factor.USE_STEP_CTE``), and writes
# the rest only if it did: a code used already (a replay) writes nothing and returns no row. Every sign-in with an
# app code is then one statement after the challenge's read. The separate step update, with its round trip, cost
# the API server about 0.2 ms of CPU per sign-in (of about 3); sign-ins per second rose by about 9%.
def _signed_in_where(condition: ColumnElement[bool], *ctes: CTE) -> Insert:
    """The session (returning its id) and its history row, both written only where ``condition`` holds, after
    ``ctes`` (the parts of the statement the condition reads, in the order they run into locks)."""
    statement = insert_where(cast(Table, UserSession.__table__), sessions.PARAMETERS, condition).returning(
        UserSession.__table__.c.id
    )
    for cte in ctes:
        statement = statement.add_cte(cte)
    return statement.add_cte(insert_where(_history, _HISTORY_PARAMETERS, condition).cte("history_written"))


_STEP_USED = select(second_factor.USE_STEP_CTE.c.id).exists()
_SIGNED_IN_WITH_STEP = _signed_in_where(_STEP_USED, _COMPLETE_CHALLENGE.where(_STEP_USED).cte("challenge_completed"))

# The optimistic sign-in (``finish_login``): a matching app code, on an account with no failed attempt, written by one
# statement in autocommit after an unlocked read: two round trips, without BEGIN and COMMIT, instead of four. What
# the locked path decides under its locks, the statement checks again on each row as it locks it (PostgreSQL re-reads
# a row that another transaction changed while the statement waited for it), and it writes all or nothing:
# - It locks the challenge, while open and unexpired, then the user, while the account's second factor is still the
#   app with no failed attempt and no lockout: the locked path's rows, in its order (``_OPEN_CHALLENGE`` locks the
#   challenge, then the user; disable and reset lock the user, then the device), so the two cannot deadlock. A wrong
#   code being counted meanwhile holds the user's lock: the statement waits, then writes nothing, and the locked path
#   judges the code after it. So a lockout still bounds the codes accepted, however many arrive at once (a code read
#   before the lockout is compared with the right one, but its write is refused).
# - The device's step moves only past the last one used, and only while the device holds the seed read
#   (``second_factor.USE_STEP``): a replay, or 2FA turned off or set up again meanwhile, writes nothing.
# - The challenge, which the statement holds from its first part, is then completed, and the session and its history
#   row are written.
_CHALLENGE_HELD = (
    select(_challenges.c.id)
    .where(
        _challenges.c.id == bindparam("challenge_id"),
        _challenges.c.completed_at.is_(None),
        _challenges.c.expires_at > bindparam("at", type_=UTCDateTime()),
    )
    .with_for_update(key_share=True)
    .cte("challenge_held")
)
_u = _users.c
_USER_HELD = (
    select(_u.id)
    .where(
        _u.id == bindparam("uid"),
        _u.twofa_method == second_factor.Method.TOTP.value,
        _u.second_factor_failures == 0,
        _u.second_factor_locked_until.is_(None),
        select(_CHALLENGE_HELD.c.id).exists(),
    )
    .with_for_update(key_share=True)
    .cte("user_held")
)
_STEP_MOVED = second_factor.USE_STEP.where(select(_USER_HELD.c.id).exists()).cte("step_used")
_CHALLENGE_TAKEN = (
    _COMPLETE_CHALLENGE.where(select(_STEP_MOVED.c.id).exists()).returning(_challenges.c.id).cte("challenge_completed")
)
_SIGNED_IN_AT_ONCE = _signed_in_where(
    select(_CHALLENGE_TAKEN.c.id).exists(), _CHALLENGE_HELD, _USER_HELD, _STEP_MOVED, _CHALLENGE_TAKEN
)


@dataclass(frozen=True)
class _Open:
    challenge_id: int
    user: User
    device: second_factor.ConfirmedDevice | None


def _open_challenge(session: Session, token: str, clock: Clock) -> _Open:
    """The open login challenge ``token``, its user and their confirmed TOTP device; the challenge and the user are
    locked for the transaction."""
    if not isinstance(token, str) or not token:
        raise ChallengeInvalid()
    session.flush()  # as the ORM's own reads do: the Core read below must not overwrite unflushed changes
    found = _read_challenge(session, _OPEN_CHALLENGE, token, clock)
    if found is None:
        raise ChallengeInvalid()
    return found


def _read_challenge(session: Session, statement: Select[Any], token: str, clock: Clock) -> _Open | None:
    """The challenge ``token`` as ``statement`` (``_OPEN_CHALLENGE`` or ``_CHALLENGE_READ``) reads it; None when
    there is none, or it is completed or expired."""
    found = session.connection().execute(statement, {"token_hash": crypto.token_hash(token)}).first()
    if found is None:
        return None
    *user_values, challenge_id, completed_at, expires_at, device_id, secret_ciphertext = found
    if completed_at is not None or expires_at <= clock.now():
        return None
    user = _attached(session, {key: value for (key, _), value in zip(_USER_ATTRS, user_values, strict=True)})
    device = None if device_id is None else second_factor.ConfirmedDevice(device_id, secret_ciphertext)
    return _Open(challenge_id, user, device)


def resend_login_code(session: Session, challenge_token: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Send a fresh email code for an open login (the cooldown and hourly cap apply)."""
    found = _open_challenge(session, challenge_token, clock)
    if found.user.twofa_method != "email":
        raise ChallengeInvalid("this sign-in does not use email codes")
    email_otp.issue(session, found.user, email_otp.LOGIN, challenge_id=found.challenge_id, clock=clock)


def signed_in_params(made: sessions.NewSession, challenge_id: int, email: str) -> dict[str, Any]:
    """The parameters of a successful sign-in's writes (``_SIGNED_IN``, or its three statements on SQLite; with a
    ``PendingStep``'s, ``_SIGNED_IN_WITH_STEP``)."""
    outcome = Outcome.SUCCESS if made.params["scope"] == "full" else Outcome.ENROLMENT_REQUIRED
    return made.params | {"challenge_id": challenge_id, "email": email[:320], "outcome": outcome}


_OUTCOME_OF: Sequence[tuple[type[DomainError], str]] = (
    (MalformedCode, Outcome.MALFORMED_CODE),
    (CodeReused, Outcome.CODE_REUSED),
    (InvalidCode, Outcome.BAD_CODE),
    (TooManyAttempts, Outcome.LOCKED),
)


def finish_login(
    factory: sessionmaker[Session],
    challenge_token: str,
    code: str,
    client: Client,
    *,
    method: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> LoggedIn:
    """The second step in a unit of work of its own (the API's): the usual case, a matching app code on an account
    with no failed attempt, in one statement on PostgreSQL (``_SIGNED_IN_AT_ONCE``); every other case, and any the
    statement refused (it then wrote nothing), in ``complete_login``'s transaction, which decides it under the
    challenge's and the user's locks (and records the attempt when it fails)."""
    with factory() as session:
        done = _sign_in_at_once(session, challenge_token, code, client, method, clock)
    if done is not None:
        return done
    with transaction(factory) as session:
        return complete_login(session, challenge_token, code, client, method=method, clock=clock)


def _sign_in_at_once(
    session: Session, token: str, code: str, client: Client, method: str | None, clock: Clock
) -> LoggedIn | None:
    """``_SIGNED_IN_AT_ONCE`` on an autocommit connection: the sign-in, or None when it is for the locked path
    (SQLite, another method, a failed attempt on record, a code that does not match, anything the statement
    refused). Writes nothing else."""
    if session.get_bind().dialect.name != "postgresql" or method not in (None, second_factor.Method.TOTP.value):
        return None
    if not isinstance(token, str) or not token:
        return None
    session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    found = _read_challenge(session, _CHALLENGE_READ, token, clock)
    if found is None or found.device is None:
        return None
    user = found.user
    if user.twofa_method != second_factor.Method.TOTP or user.second_factor_failures or user.second_factor_locked_until:
        return None
    try:
        if second_factor.pick_method(user, code, method) is not second_factor.Method.TOTP:
            return None
        pending = second_factor.match_totp(session, user, code, clock, found.device)
    except DomainError:
        return None
    made = _new_session(session, user, second_factor.Method.TOTP, client, clock)
    params = signed_in_params(made, found.challenge_id, user.email) | pending.params()
    session_id = session.connection().execute(_SIGNED_IN_AT_ONCE, params).scalar_one_or_none()
    if session_id is None:
        return None
    return LoggedIn(session=made.issued(session_id), method=second_factor.Method.TOTP.value)


def complete_login(
    session: Session,
    challenge_token: str,
    code: str,
    client: Client,
    *,
    method: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> LoggedIn:
    """The second step, in the caller's transaction: a TOTP code, an email code or a backup code for an open
    challenge, judged under the user's lock."""
    found = _open_challenge(session, challenge_token, clock)
    challenge_id, user = found.challenge_id, found.user
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    try:
        used = second_factor.verify(
            session,
            user,
            code,
            method=method,
            challenge_id=challenge_id,
            device=found.device,
            defer_step=postgres,
            clock=clock,
        )
        if isinstance(used, second_factor.PendingStep):  # an app code on PostgreSQL: one statement moves its step
            return _signed_in_moving_step(session, found, used, client, clock)
    except DomainError as exc:
        outcome = next((o for cls, o in _OUTCOME_OF if isinstance(exc, cls)), Outcome.BAD_CODE)
        record(
            session,
            email=user.email,
            user=user,
            client=client,
            outcome=outcome,
            method=method or user.twofa_method,
            verified=False,
            clock=clock,
        )
        recorded(exc)
        raise
    made = _new_session(session, user, used, client, clock)
    params = signed_in_params(made, challenge_id, user.email)
    if postgres:
        session_id = conn.execute(_SIGNED_IN, params).scalar_one()
    else:
        conn.execute(_COMPLETE_CHALLENGE, params)
        session_id = conn.execute(sessions.INSERT, params).scalar_one()
        conn.execute(_HISTORY, params)
    return LoggedIn(session=made.issued(session_id), method=used.value)


def _signed_in_moving_step(
    session: Session, found: _Open, pending: second_factor.PendingStep, client: Client, clock: Clock
) -> LoggedIn:
    """The sign-in's writes and the app code's step in ``_SIGNED_IN_WITH_STEP``: all of them, or (a replay) none."""
    made = _new_session(session, found.user, second_factor.Method.TOTP, client, clock)
    params = signed_in_params(made, found.challenge_id, found.user.email) | pending.params()
    session_id = session.connection().execute(_SIGNED_IN_WITH_STEP, params).scalar_one_or_none()
    second_factor.step_recorded(session, found.user, pending, session_id is not None, clock)
    assert session_id is not None  # step_recorded has refused the replay
    return LoggedIn(session=made.issued(session_id), method=second_factor.Method.TOTP.value)


def _new_session(
    session: Session, user: User, used: second_factor.Method, client: Client, clock: Clock
) -> sessions.NewSession:
    # Verified, yet the method may not satisfy a policy (email codes where an app is required).
    scope = _scope(session, user, clock)
    return sessions.new(user.id, twofa_verified=True, method=used.value, client=client, scope=scope, at=clock.now())


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
