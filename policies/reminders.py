"""Reminders to members who still lack 2FA, and escalations to their organisation's owners and admins.

One run evaluates every organisation set-wise and writes the emails that are due to the outbox, each with a key
unique per member, deadline and stage (``reminder:<membership>:<deadline>:<stage>``) or per organisation, admin and
day (``escalation:...``). The outbox refuses a second row with the same key, so repeated or concurrent runs send
each reminder once. A member's stages are: when the grace period starts, each of the policy's reminder days before
the deadline, and the deadline itself; a run sends only the latest stage that is due, so a missed run never
produces a burst of stale reminders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policies.evaluate import evaluate
from policies.models import PolicyDeadline
from policies.verdicts import MemberVerdict, Overdue, Pending
from twofa import audit, audit_chain, outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import insert_rows
from twofa.models import AuditEvent, Membership, OutboxMessage, Role, User

REMINDER = "policy_reminder"
ESCALATION = "policy_escalation"
REMINDER_SENT = "policy_reminder_sent"
ESCALATION_SENT = "policy_escalation_sent"
ESCALATION_EVERY = timedelta(days=7)
ESCALATE_TO = (Role.OWNER.value, Role.ADMIN.value)
DRY_RUN_PAGE = 5000  # keys looked up per statement by --dry-run (SQLite allows 32,766 parameters in one)


@dataclass(frozen=True)
class Planned:
    template: str
    to: str
    user_id: int
    org_id: int
    dedupe_key: str
    context: dict[str, Any]
    stage: str


@dataclass
class RunResult:
    planned: list[Planned] = field(default_factory=list)
    sent: list[Planned] = field(default_factory=list)  # written this run (not written by an earlier run)
    deadlines_stored: int = 0


def due_stage(verdict: MemberVerdict, now: datetime) -> tuple[str, datetime] | None:
    """The latest reminder stage of this member that is due at ``now``."""
    v = verdict.verdict
    if not isinstance(v, Pending | Overdue) or verdict.subject_since is None:
        return None
    stages = [("start", verdict.subject_since)]
    stages += [(f"d{n}", v.deadline - timedelta(days=n)) for n in sorted(verdict.reminder_days, reverse=True)]
    stages.append(("overdue", v.deadline))
    # After a disable the deadline can be closer than the grace period's start: keep stages in time order.
    due = [(name, at) for name, at in stages if at <= now and (name == "overdue" or at < v.deadline)]
    return max(due, key=lambda s: s[1]) if due else None


def _reminder(verdict: MemberVerdict, stage: str) -> Planned:
    v = verdict.verdict
    assert isinstance(v, Pending | Overdue)
    days_left = v.days_left if isinstance(v, Pending) else 0
    return Planned(
        template=REMINDER,
        to=verdict.email,
        user_id=verdict.user_id,
        org_id=verdict.org_id,
        dedupe_key=f"reminder:{verdict.membership_id}:{v.deadline:%Y%m%dT%H%M%S}:{stage}",
        context={
            "org_name": verdict.org_name,
            "role": verdict.role,
            "deadline": f"{v.deadline:%Y-%m-%d %H:%M} UTC",
            "days_left": days_left,
            "email_allowed": not verdict.totp_only,
            "enrol_only": verdict.enrol_only,
            "stage": stage,
        },
        stage=stage,
    )


def _escalations(session: Session, overdue: Sequence[MemberVerdict], now: datetime) -> list[Planned]:
    by_org: dict[int, list[MemberVerdict]] = defaultdict(list)
    for v in overdue:
        if v.escalate:
            by_org[v.org_id].append(v)
    if not by_org:
        return []
    last_sent = dict(
        session.execute(
            select(OutboxMessage.org_id, func.max(OutboxMessage.created_at))
            .where(OutboxMessage.template == ESCALATION, OutboxMessage.org_id.in_(by_org))
            .group_by(OutboxMessage.org_id)
        ).all()
    )
    due_orgs = [o for o in by_org if last_sent.get(o) is None or last_sent[o] <= now - ESCALATION_EVERY]
    if not due_orgs:
        return []
    admins = session.execute(
        select(Membership.org_id, User.id, User.email)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id.in_(due_orgs), Membership.role.in_(ESCALATE_TO))
        .order_by(Membership.org_id, User.email)
    ).all()
    planned = []
    for org_id, admin_id, admin_email in admins:
        members = sorted(by_org[org_id], key=lambda v: (v.verdict.deadline, v.email))  # type: ignore[union-attr]
        overdue_list = [
            {
                "email": m.email,
                "role": m.role,
                "deadline": f"{m.verdict.deadline:%Y-%m-%d}",  # type: ignore[union-attr]
                "days_overdue": m.verdict.days,  # type: ignore[union-attr]
            }
            for m in members
        ]
        planned.append(
            Planned(
                template=ESCALATION,
                to=admin_email,
                user_id=admin_id,
                org_id=org_id,
                dedupe_key=f"escalation:{org_id}:{admin_id}:{now:%Y%m%d}",
                context={
                    "org_name": members[0].org_name,
                    "overdue": overdue_list,
                    "enrol_only": members[0].enrol_only,
                },
                stage="escalation",
            )
        )
    return planned


def plan(session: Session, now: datetime) -> tuple[list[MemberVerdict], list[Planned]]:
    """Every non-compliant member's verdict, and the emails due now (before removing those sent already)."""
    verdicts = list(evaluate(session, now, noncompliant_only=True))
    planned = []
    for v in verdicts:
        stage = due_stage(v, now)
        if stage is not None:
            planned.append(_reminder(v, stage[0]))
    overdue = [v for v in verdicts if isinstance(v.verdict, Overdue)]
    planned += _escalations(session, overdue, now)
    return verdicts, planned


def _store_deadlines(session: Session, verdicts: Sequence[MemberVerdict]) -> int:
    rows = [
        {
            "membership_id": v.membership_id,
            "org_id": v.org_id,
            "user_id": v.user_id,
            "subject_since": v.subject_since,
            "deadline": v.base_deadline,
        }
        for v in verdicts
        if not v.stored_deadline and v.base_deadline is not None
    ]
    if not rows:
        return 0
    insert_rows(
        session,
        PolicyDeadline,
        rows,
        returning=(PolicyDeadline.membership_id,),
        on_conflict=lambda stmt: stmt.on_conflict_do_update(
            index_elements=["membership_id"],
            set_={"subject_since": stmt.excluded.subject_since, "deadline": stmt.excluded.deadline},
        ),
    )
    return len(rows)


def run(session: Session, *, dry_run: bool = False, clock: Clock = SYSTEM_CLOCK) -> RunResult:
    """Plan and (unless ``dry_run``) write the due reminders and escalations; the caller commits."""
    now = clock.now()
    verdicts, planned = plan(session, now)
    result = RunResult(planned=planned)
    if dry_run:
        keys = [p.dedupe_key for p in planned]
        existing: set[str] = set()
        for i in range(0, len(keys), DRY_RUN_PAGE):
            found = session.execute(
                select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.in_(keys[i : i + DRY_RUN_PAGE]))
            ).scalars()
            existing |= {key for key in found if key is not None}
        result.sent = [p for p in planned if p.dedupe_key not in existing]
        return result
    result.deadlines_stored = _store_deadlines(session, verdicts)
    inserted = outbox.enqueue_unique(
        session,
        [
            {
                "template": p.template,
                "to": p.to,
                "user_id": p.user_id,
                "org_id": p.org_id,
                "dedupe_key": p.dedupe_key,
                "context": p.context,
            }
            for p in planned
        ],
        clock=clock,
    )
    result.sent = [p for p in planned if p.dedupe_key in inserted]
    if result.sent:
        written = insert_rows(
            session,
            AuditEvent,
            [
                {
                    "at": now,
                    "event": REMINDER_SENT if p.template == REMINDER else ESCALATION_SENT,
                    "user_id": p.user_id,
                    "org_id": p.org_id,
                    "actor": "system:policies",
                    "details": {"stage": p.stage, "to": p.to, "outbox_id": inserted[p.dedupe_key].id},
                    **audit.actor_columns(),
                }
                for p in result.sent
            ],
            returning=(AuditEvent.id,),
        )
        audit_chain.track(session, [row.id for row in written])
    return result
