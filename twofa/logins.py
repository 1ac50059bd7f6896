"""The login flow: password, then the second factor, then a session. Every attempt is a login-history row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from twofa import app_sign_in, crypto, email_otp, second_factor, sessions
from twofa.accounts import get_user, sso_provider
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import (
    ChallengeInvalid,
    CodeReused,
    DomainError,
    InvalidCode,
    InvalidCredentials,
    MalformedCode,
    SsoRequired,
    TooManyAttempts,
    recorded,
)
from twofa.login_history import Outcome, record
from twofa.models import LoginChallenge, TotpDevice, User
from twofa.passwords import verify_password
from twofa.sessions import Client, IssuedSession
from twofa.settings import get_settings

# Whether a user may only set up 2FA right now (an organisation's deadline has passed). The core does not know
# policies: every edge that signs people in passes the policies' gate in.
EnrolmentGate = Callable[[Session, User, datetime], bool]


def _scope(session: Session, user: User, gate: EnrolmentGate, clock: Clock) -> str:
    return "enrol" if gate(session, user, clock.now()) else "full"


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


def login_with_password(
    session: Session,
    email: str,
    password: str,
    client: Client,
    *,
    gate: EnrolmentGate,
    clock: Clock = SYSTEM_CLOCK,
) -> LoggedIn | SecondFactorRequired:
    """Check the password. Without 2FA this opens a session; with it, it returns a challenge for the second
    factor (and, for email users, queues a code). Unknown emails and wrong passwords answer alike."""
    email = (email or "").strip().lower()
    user = get_user(session, email) if email else None
    if not verify_password(user.password_hash if user else None, password or "") or user is None:
        record(session, email, user, client, Outcome.INVALID_CREDENTIALS, clock)
        raise recorded(InvalidCredentials())
    idp = sso_provider(session, user.id)
    if idp is not None:  # after the password check: a wrong password answers as for anyone
        record(session, email, user, client, Outcome.SSO_REQUIRED, clock)
        raise recorded(SsoRequired(f"sign in through your organisation's identity provider ({idp})"))
    if user.twofa_method is None:
        scope = _scope(session, user, gate, clock)
        issued = sessions.issue(
            session, user, twofa_verified=False, method="password", client=client, scope=scope, clock=clock
        )
        record(session, email, user, client, Outcome.SUCCESS if scope == "full" else Outcome.ENROLMENT_REQUIRED, clock)
        return LoggedIn(session=issued, method="password")

    token = crypto.new_token()
    now = clock.now()
    challenge = LoginChallenge(
        user_id=user.id,
        token_hash=crypto.token_hash(token),
        created_at=now,
        expires_at=now + timedelta(seconds=get_settings().login_challenge_ttl),
        ip=client.ip,
        user_agent=client.stored_agent,
    )
    session.add(challenge)
    session.flush()
    sent = False
    if user.twofa_method == "email":
        sent = _send_login_code(session, user, challenge, clock)
    record(session, email, user, client, Outcome.SECOND_FACTOR_REQUIRED, clock)
    return SecondFactorRequired(
        challenge=token,
        methods=[user.twofa_method, second_factor.Method.BACKUP_CODE.value],
        expires_at=challenge.expires_at,
        email_code_sent=sent,
    )


def _send_login_code(session: Session, user: User, challenge: LoginChallenge, clock: Clock) -> bool:
    try:
        email_otp.issue(
            session, user, email_otp.LOGIN, challenge_id=challenge.id, not_after=challenge.expires_at, clock=clock
        )
    except TooManyAttempts:
        return False  # past the hourly cap: the user may ask again later
    return True


_devices = cast(Table, TotpDevice.__table__)

# Built once: every sign-in's second step and every resend runs it. The user's confirmed authenticator app comes
# along, unlocked (for app_sign_in).
_OPEN_CHALLENGE = (
    select(
        LoginChallenge.id,
        LoginChallenge.expires_at,
        LoginChallenge.completed_at,
        User,
        _devices.c.id.label("device_id"),
        _devices.c.secret_ciphertext,
    )
    .join(User, User.id == LoginChallenge.user_id)
    .outerjoin(_devices, (_devices.c.user_id == User.id) & _devices.c.confirmed_at.is_not(None))
    .where(LoginChallenge.token_hash == bindparam("token_hash"))
    .with_for_update(key_share=True, of=(LoginChallenge, User))
    .execution_options(populate_existing=True)
)


class OpenChallenge(NamedTuple):
    id: int
    expires_at: datetime
    device_id: int | None  # the user's confirmed authenticator app, if any
    device_secret: str | None  # its seed, encrypted


def _open_challenge(session: Session, token: str, clock: Clock) -> tuple[OpenChallenge, User]:
    """The open login challenge ``token`` and its user, both locked for the rest of the transaction by one
    statement (PostgreSQL locks them in the order named: the challenge, then the user)."""
    if not isinstance(token, str) or not token:
        raise ChallengeInvalid()
    found = session.execute(_OPEN_CHALLENGE, {"token_hash": crypto.token_hash(token)}).one_or_none()
    if found is None:
        raise ChallengeInvalid()
    challenge_id, expires_at, completed_at, user, device_id, device_secret = found
    if completed_at is not None or expires_at <= clock.now():
        raise ChallengeInvalid()
    return OpenChallenge(challenge_id, expires_at, device_id, device_secret), user


def resend_login_code(session: Session, challenge_token: str, clock: Clock = SYSTEM_CLOCK) -> None:
    """Send a fresh email code for an open login (the cooldown and hourly cap apply)."""
    challenge, user = _open_challenge(session, challenge_token, clock)
    if user.twofa_method != "email":
        raise ChallengeInvalid("this sign-in does not use email codes")
    email_otp.issue(
        session, user, email_otp.LOGIN, challenge_id=challenge.id, not_after=challenge.expires_at, clock=clock
    )


_OUTCOME_OF: Sequence[tuple[type[DomainError], str]] = (
    (MalformedCode, Outcome.MALFORMED_CODE),
    (CodeReused, Outcome.CODE_REUSED),
    (InvalidCode, Outcome.BAD_CODE),
    (TooManyAttempts, Outcome.LOCKED),
)


_challenges = cast(Table, LoginChallenge.__table__)
_COMPLETED = (
    update(_challenges).where(_challenges.c.id == bindparam("challenge_id")).values(completed_at=bindparam("now"))
)


def complete_login(
    session: Session,
    challenge_token: str,
    code: str,
    client: Client,
    *,
    gate: EnrolmentGate,
    method: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> LoggedIn:
    """The second step, in the caller's transaction: a TOTP code, an email code or a backup code for an open
    challenge, judged under the challenge's and the user's locks. A failed attempt is recorded and raised."""
    challenge, user = _open_challenge(session, challenge_token, clock)
    at_once = app_sign_in.finish(
        session,
        user,
        code,
        client,
        challenge_id=challenge.id,
        device_id=challenge.device_id,
        device_secret=challenge.device_secret,
        method=method,
        scope_of=lambda: _scope(session, user, gate, clock),
        clock=clock,
    )
    if at_once is not None:
        return LoggedIn(session=at_once, method=second_factor.Method.TOTP.value)
    try:
        used = second_factor.verify(session, user, code, method=method, challenge_id=challenge.id, clock=clock)
    except DomainError as exc:
        outcome = next((o for cls, o in _OUTCOME_OF if isinstance(exc, cls)), Outcome.BAD_CODE)
        record(session, user.email, user, client, outcome, clock, method=method or user.twofa_method)
        recorded(exc)
        raise
    session.execute(_COMPLETED, {"challenge_id": challenge.id, "now": clock.now()})
    scope = _scope(session, user, gate, clock)  # verified, yet the method may not satisfy a policy
    issued = sessions.issue(
        session, user, twofa_verified=True, method=used.value, client=client, scope=scope, clock=clock
    )
    record(
        session,
        user.email,
        user,
        client,
        Outcome.SUCCESS if scope == "full" else Outcome.ENROLMENT_REQUIRED,
        clock,
        method=used.value,
        verified=True,
    )
    return LoggedIn(session=issued, method=used.value)
