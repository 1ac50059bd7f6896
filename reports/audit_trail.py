"""An organisation's audit trail, readable: its own events (policy changes, resets by its admins, reminders) and
those of its members' accounts (2FA on and off, backup codes, lockouts, API keys)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from twofa.errors import InvalidInput
from twofa.models import AuditEvent, Membership, User

MAX_PER_PAGE = 500
EXPORT_PAGE = 1000
COLUMNS = (
    "id",
    "at",
    "event",
    "member",
    "actor",
    "credential",
    "credential_id",
    "client_ip",
    "details",
    "chain",
    "chain_seq",
)


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    event: str
    member: str | None  # the member's email, for events of a member's account
    actor: str | None
    credential: str | None
    credential_id: int | None
    client_ip: str | None
    details: dict[str, Any]
    chain: str | None
    chain_seq: int | None

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, c) for c in COLUMNS)


@dataclass(frozen=True)
class Filters:
    event: str | None = None
    member: str | None = None  # an email
    since: datetime | None = None
    until: datetime | None = None

    def check(self) -> Filters:
        if self.since and self.until and self.since >= self.until:
            raise InvalidInput("'since' must be before 'until'")
        return self


def _where(org_id: int, filters: Filters) -> ColumnElement[bool]:
    members = select(Membership.user_id).where(Membership.org_id == org_id)
    conditions = [or_(AuditEvent.org_id == org_id, and_(AuditEvent.org_id.is_(None), AuditEvent.user_id.in_(members)))]
    if filters.event:
        conditions.append(AuditEvent.event == filters.event)
    if filters.member:
        conditions.append(User.email == filters.member.strip().lower())
    if filters.since:
        conditions.append(AuditEvent.at >= filters.since)
    if filters.until:
        conditions.append(AuditEvent.at < filters.until)
    return and_(*conditions)


def _select(org_id: int, filters: Filters) -> Select[Any]:
    return (
        select(
            AuditEvent.id,
            AuditEvent.at,
            AuditEvent.event,
            User.email,
            AuditEvent.actor,
            AuditEvent.credential,
            AuditEvent.credential_id,
            AuditEvent.client_ip,
            AuditEvent.details,
            AuditEvent.chain,
            AuditEvent.chain_seq,
        )
        .outerjoin(User, User.id == AuditEvent.user_id)
        .where(_where(org_id, filters.check()))
    )


def page(
    session: Session, org_id: int, filters: Filters, *, page: int = 1, per_page: int = 50
) -> tuple[list[AuditRow], int]:
    """One page of the trail, newest first, and the number of rows matching the filters."""
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"page starts at 1; per_page is 1 to {MAX_PER_PAGE}")
    total = session.execute(
        select(func.count(AuditEvent.id)).outerjoin(User, User.id == AuditEvent.user_id).where(_where(org_id, filters))
    ).scalar_one()
    found = session.execute(
        _select(org_id, filters)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * per_page)
        .limit(per_page)
    ).all()
    return [AuditRow(*r) for r in found], int(total)


def export(session: Session, org_id: int, filters: Filters) -> Iterator[AuditRow]:
    """The whole trail, oldest first, read a page at a time (memory does not grow with the log)."""
    after = 0
    while True:
        found = session.execute(
            _select(org_id, filters).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(EXPORT_PAGE)
        ).all()
        for r in found:
            yield AuditRow(*r)
        if len(found) < EXPORT_PAGE:
            return
        after = found[-1].id
