"""Writing security events to the append-only audit log, each with who did it and how.

Who acts is set by the edge for its unit of work (``acting_as``: the API per request, the CLI per command), so the
core records it without knowing the web framework or the command line. Rows are chained as their transaction
commits (``twofa.audit_chain``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.orm import Session

from twofa import audit_chain  # noqa: F401  (seals the rows of each transaction into their chains as it commits)
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import AuditEvent


class Event:
    """The audit event names, stable for queries and reports."""

    TOTP_ENROLMENT_STARTED = "totp_enrolment_started"
    TWOFA_ENABLED = "2fa_enabled"
    TWOFA_DISABLED = "2fa_disabled"
    TWOFA_RESET_BY_SUPPORT = "2fa_reset_by_support"
    TWOFA_RESET_BY_ADMIN = "2fa_reset_by_admin"
    BACKUP_CODE_USED = "backup_code_used"
    BACKUP_CODE_REUSED = "backup_code_reuse_refused"
    BACKUP_CODES_REGENERATED = "backup_codes_regenerated"
    CODE_REPLAY_REFUSED = "totp_replay_refused"
    SECOND_FACTOR_LOCKED = "second_factor_locked"
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    MAIL_FAILED = "mail_failed"


class Credential:
    SESSION = "session"
    API_KEY = "api_key"
    CLI = "cli"
    ANONYMOUS = "anonymous"  # an API request before it proved who it is (a sign-in's first step)
    SYSTEM = "system"  # workers and scheduled jobs


@dataclass(frozen=True)
class Actor:
    credential: str = Credential.SYSTEM
    credential_id: int | None = None  # the session's or API key's id
    client_ip: str | None = None
    name: str | None = None  # the CLI operator (the OS account running the command)


SYSTEM = Actor()
_actor: ContextVar[Actor] = ContextVar("twofa_audit_actor", default=SYSTEM)


def current_actor() -> Actor:
    return _actor.get()


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    """``actor`` is who acts in the audit rows written inside this block (an edge's unit of work)."""
    token = _actor.set(actor)
    try:
        yield actor
    finally:
        _actor.reset(token)


def authenticated(credential: str, credential_id: int | None) -> None:
    """The unit of work now knows its caller's credential (set once the API has checked the token)."""
    _actor.set(replace(_actor.get(), credential=credential, credential_id=credential_id))


def actor_columns() -> dict[str, Any]:
    """The audit columns that say who acts, for rows written by a Core INSERT."""
    actor = _actor.get()
    return {"credential": actor.credential, "credential_id": actor.credential_id, "client_ip": actor.client_ip}


def record(
    session: Session,
    event: str,
    *,
    user_id: int | None = None,
    org_id: int | None = None,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AuditEvent:
    who = _actor.get()
    if actor is None and who.name is not None:
        actor = f"{who.credential}:{who.name}"
    row = AuditEvent(
        at=clock.now(),
        event=event,
        user_id=user_id,
        org_id=org_id,
        actor=actor,
        details=details or {},
        **actor_columns(),
    )
    session.add(row)
    return row
