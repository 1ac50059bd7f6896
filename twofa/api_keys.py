"""API keys: Bearer credentials for scripts, independent of 2FA. Shown once, stored as SHA-256."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from twofa import audit, crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import InvalidApiKey, InvalidInput, NotFound
from twofa.models import ApiKey, User
from twofa.notify import Template, notify

KEY_PREFIX = "wvn"


@dataclass(frozen=True)
class CreatedKey:
    key: str  # the whole key, shown once
    row: ApiKey

    def __repr__(self) -> str:
        return f"CreatedKey(id={self.row.id}, prefix={self.row.prefix!r}, key=<hidden>)"


def create(session: Session, user: User, name: str, clock: Clock = SYSTEM_CLOCK) -> CreatedKey:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("an API key needs a name of 1 to 100 characters")
    prefix = secrets.token_hex(6)
    secret = crypto.new_token(32)
    key = f"{KEY_PREFIX}_{prefix}_{secret}"
    row = ApiKey(user_id=user.id, name=name, prefix=prefix, key_hash=crypto.token_hash(key), created_at=clock.now())
    session.add(row)
    session.flush()
    audit.record(
        session, audit.Event.API_KEY_CREATED, user_id=user.id, details={"key_id": row.id, "name": name}, clock=clock
    )
    notify(session, user, Template.API_KEY_CREATED, {"name": name, "prefix": prefix}, clock=clock)
    return CreatedKey(key=key, row=row)


def authenticate(session: Session, key: str, clock: Clock = SYSTEM_CLOCK) -> User:
    """The owner of a valid key. 2FA plays no part: keys are for machines."""
    return authenticate_key(session, key, clock)[1]


def authenticate_key(session: Session, key: str, clock: Clock = SYSTEM_CLOCK) -> tuple[ApiKey, User]:
    """A valid key and its owner."""
    parts = key.split("_", 2) if isinstance(key, str) else []
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        raise InvalidApiKey()
    found = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == parts[1])
    ).first()  # the key and its owner in one statement
    if found is None:
        raise InvalidApiKey()
    row, user = found
    if row.revoked_at is not None or not crypto.same(row.key_hash, crypto.token_hash(key)):
        raise InvalidApiKey()
    row.last_used_at = clock.now()
    return row, user


def list_keys(session: Session, user_id: int) -> Sequence[ApiKey]:
    return (
        session.execute(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at.desc()))
        .scalars()
        .all()
    )


def revoke(session: Session, user_id: int, key_id: int, clock: Clock = SYSTEM_CLOCK) -> None:
    row = session.get(ApiKey, key_id)
    if row is None or row.user_id != user_id:
        raise NotFound("no such API key")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        audit.record(session, audit.Event.API_KEY_REVOKED, user_id=user_id, details={"key_id": key_id}, clock=clock)
