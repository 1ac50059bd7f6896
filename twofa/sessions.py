"""Sessions: opaque bearer tokens, stored as SHA-256 hashes. A session ends at its absolute limit
(``session_ttl``), after ``session_idle_timeout`` unused, when revoked, and when the protection it was opened under
changes (``revoke_others``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from twofa import crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import InvalidSession, NotFound
from twofa.models import User, UserSession
from twofa.settings import get_settings


@dataclass(frozen=True)
class Client:
    """Where a request came from, as the login history records it."""

    ip: str | None = None
    user_agent: str | None = None

    @property
    def stored_agent(self) -> str | None:
        """The user agent as the tables keep it (at most 512 characters)."""
        return (self.user_agent or "")[:512] or None


@dataclass(frozen=True)
class IssuedSession:
    token: str  # shown once to the client
    session_id: int
    user_id: int
    twofa_verified: bool
    scope: str = "full"

    def __repr__(self) -> str:
        return f"IssuedSession(session_id={self.session_id}, user_id={self.user_id}, token=<hidden>)"


# Built once: every sign-in runs it.
_sessions = cast(Table, UserSession.__table__)
_NEW_SESSION = insert(_sessions).returning(_sessions.c.id)


def new_row(
    user_id: int, *, twofa_verified: bool, method: str, client: Client, scope: str, now: datetime
) -> tuple[str, dict[str, Any]]:
    """A new session's token (shown once) and its row, keyed by column name (the token stored as its hash)."""
    token = crypto.new_token()
    return token, {
        "user_id": user_id,
        "token_hash": crypto.token_hash(token),
        "created_at": now,
        "last_seen_at": now,
        "expires_at": now + timedelta(seconds=get_settings().session_ttl),
        "ip": client.ip,
        "user_agent": client.stored_agent,
        "2fa_verified": twofa_verified,
        "method": method,
        "scope": scope,
    }


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
    token, row = new_row(
        user.id, twofa_verified=twofa_verified, method=method, client=client, scope=scope, now=clock.now()
    )
    session_id = session.execute(_NEW_SESSION, row).scalar_one()
    return IssuedSession(token, session_id, user.id, twofa_verified, scope)


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
    if not _live(row, now):
        raise InvalidSession()
    row.last_seen_at = now
    return row, user


def _live(row: UserSession, now: datetime) -> bool:
    idle_until = row.last_seen_at + timedelta(seconds=get_settings().session_idle_timeout)
    return row.revoked_at is None and row.expires_at > now and idle_until > now


def list_active(session: Session, user_id: int, clock: Clock = SYSTEM_CLOCK) -> list[UserSession]:
    rows = session.scalars(
        select(UserSession)
        .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None), UserSession.expires_at > clock.now())
        .order_by(UserSession.created_at.desc())
    )
    return [row for row in rows if _live(row, clock.now())]


def revoke_others(
    session: Session,
    user_id: int,
    keep: int | None,
    *,
    password_only: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """End every session of the user but ``keep`` (None: every one); with ``password_only``, only those opened
    without a second factor. Returns how many ended."""
    query = update(UserSession).where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
    if keep is not None:
        query = query.where(UserSession.id != keep)
    if password_only:
        query = query.where(UserSession.twofa_verified.is_(False))
    ended = session.execute(query.values(revoked_at=clock.now()).execution_options(synchronize_session=False))
    return int(getattr(ended, "rowcount", 0))


def revoke(session: Session, user_id: int, session_id: int, clock: Clock = SYSTEM_CLOCK) -> None:
    row = session.get(UserSession, session_id)
    if row is None or row.user_id != user_id:
        raise NotFound("no such session")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
