"""Sessions: opaque bearer tokens, stored as SHA-256 hashes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from twofa import crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import insert_values
from twofa.errors import InvalidSession, NotFound
from twofa.models import User, UserSession
from twofa.settings import get_settings


@dataclass(frozen=True)
class Client:
    """Where a request came from, as the login history records it."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class IssuedSession:
    token: str  # shown once to the client
    session_id: int
    user_id: int
    twofa_verified: bool
    scope: str = "full"

    def __repr__(self) -> str:
        return f"IssuedSession(session_id={self.session_id}, user_id={self.user_id}, token=<hidden>)"


_t = cast(Table, UserSession.__table__)
# A plain INSERT ... RETURNING: every sign-in writes one. Its parameters are named for the sign-in, so that the
# statement can share them with the sign-in's other writes (``twofa.logins``); no name is that of a column of a table
# the sign-in updates (the challenge, the TOTP device), as SQLAlchemy makes an UPDATE set every column its
# parameters name.
PARAMETERS = {  # column: parameter
    "user_id": "uid",
    "token_hash": "session_token_hash",
    "created_at": "at",
    "last_seen_at": "at",
    "expires_at": "session_expires_at",
    "ip": "client_ip",
    "user_agent": "client_agent",
    "2fa_verified": "verified",
    "method": "method",
    "scope": "scope",
}
INSERT = insert_values(_t, PARAMETERS).returning(_t.c.id)


@dataclass(frozen=True)
class NewSession:
    """A session about to be written: its token (shown once) and the parameters of ``INSERT``."""

    token: str
    params: dict[str, Any]

    def __repr__(self) -> str:
        return f"NewSession(user_id={self.params['uid']}, token=<hidden>)"

    def issued(self, session_id: int) -> IssuedSession:
        p = self.params
        return IssuedSession(self.token, session_id, p["uid"], p["verified"], p["scope"])


def new(user_id: int, *, twofa_verified: bool, method: str, client: Client, scope: str, at: datetime) -> NewSession:
    token = crypto.new_token()
    return NewSession(
        token,
        {
            "uid": user_id,
            "session_token_hash": crypto.token_hash(token),
            "at": at,
            "session_expires_at": at + timedelta(seconds=get_settings().session_ttl),
            "client_ip": client.ip,
            "client_agent": (client.user_agent or "")[:512] or None,
            "verified": twofa_verified,
            "method": method,
            "scope": scope,
        },
    )


def issue(
    session: Session,
    user: User,
    *,
    twofa_verified: bool,
    method: str,
    client: Client,
    scope: str = "full",
    clock: Clock = SYSTEM_CLOCK,
) -> IssuedSession:
    made = new(user.id, twofa_verified=twofa_verified, method=method, client=client, scope=scope, at=clock.now())
    return made.issued(session.connection().execute(INSERT, made.params).scalar_one())


def authenticate(session: Session, token: str, clock: Clock = SYSTEM_CLOCK) -> tuple[UserSession, User]:
    """The live session ``token`` names, and its user (one statement)."""
    found = session.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == crypto.token_hash(token))
    ).first()
    now = clock.now()
    if found is None:
        raise InvalidSession()
    row, user = found
    if row.revoked_at is not None or row.expires_at <= now:
        raise InvalidSession()
    row.last_seen_at = now
    return row, user


def list_active(session: Session, user_id: int, clock: Clock = SYSTEM_CLOCK) -> Sequence[UserSession]:
    return (
        session.execute(
            select(UserSession)
            .where(
                UserSession.user_id == user_id,
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > clock.now(),
            )
            .order_by(UserSession.created_at.desc())
        )
        .scalars()
        .all()
    )


def revoke(session: Session, user_id: int, session_id: int, clock: Clock = SYSTEM_CLOCK) -> None:
    row = session.get(UserSession, session_id)
    if row is None or row.user_id != user_id:
        raise NotFound("no such session")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
