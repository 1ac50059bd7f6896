"""What an organisation's owners and admins hear of: a member in a required role turning 2FA off, a member's 2FA
reset by support or an admin, and (from ``policies.rules``) a change of policy. The edge calls these after the core
operation, in the same transaction, so the mail goes out only if the operation commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.admin_mail import tell_managers
from policies.evaluate import evaluate
from policies.verdicts import Overdue, Pending
from twofa.audit import Event
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import AuditEvent, Membership, User

RESETS = (Event.TWOFA_RESET_BY_SUPPORT, Event.TWOFA_RESET_BY_ADMIN)


def _latest(session: Session, user_id: int, events: tuple[str, ...]) -> AuditEvent | None:
    session.flush()
    return session.execute(
        select(AuditEvent)
        .where(AuditEvent.user_id == user_id, AuditEvent.event.in_(events))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _when(deadline: datetime) -> str:
    return f"{deadline:%Y-%m-%d %H:%M} UTC"


def member_disabled(session: Session, user_id: int, clock: Clock = SYSTEM_CLOCK) -> int:
    """After ``manage.disable``: the owners and admins of each organisation whose policy requires 2FA of the
    member's role are told, with the member's new deadline. Returns the messages written."""
    event = _latest(session, user_id, (Event.TWOFA_DISABLED,))
    if event is None:
        return 0
    written = 0
    for v in evaluate(session, clock.now(), user_id=user_id):
        if isinstance(v.verdict, Pending | Overdue):
            written += tell_managers(
                session,
                event_id=event.id,
                kind="member_disabled",
                org_ids=[v.org_id],
                context={"member": v.email, "role": v.role, "deadline": _when(v.verdict.deadline)},
                exclude_user_id=user_id,
                clock=clock,
            )
    return written


def member_reset(session: Session, user_id: int, *, by: str, clock: Clock = SYSTEM_CLOCK) -> int:
    """After a support or admin reset: the owners and admins of every organisation of the member are told (``by``
    names who reset it, as the mail shows it)."""
    event = _latest(session, user_id, RESETS)
    member = session.get(User, user_id)
    if event is None or member is None:
        return 0
    org_ids = session.execute(select(Membership.org_id).where(Membership.user_id == user_id)).scalars().all()
    written = 0
    for org_id in sorted(org_ids):
        written += tell_managers(
            session,
            event_id=event.id,
            kind="member_reset",
            org_ids=[org_id],
            context={"member": member.email, "by": by, "reason": event.details.get("reason", "")},
            exclude_user_id=user_id,
            clock=clock,
        )
    return written
