"""The login flow's enrolment gate: past a deadline, a member of a policy that says "enrol_only" may only set up
2FA until it is on (with a method the policy accepts)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.evaluate import evaluate
from policies.models import OrgPolicy
from policies.verdicts import Overdue
from twofa.models import User


def enrolment_required(session: Session, user: User, now: datetime) -> bool:
    if user.twofa_method == "totp":
        return False  # an authenticator app satisfies every policy: no query needed on the hot path
    user_id = user.id
    overdue = [
        v.org_id
        for v in evaluate(session, now, user_id=user_id, noncompliant_only=True)
        if isinstance(v.verdict, Overdue)
    ]
    if not overdue:
        return False
    lenient = set(
        session.execute(
            select(OrgPolicy.org_id).where(OrgPolicy.org_id.in_(overdue), OrgPolicy.after_deadline == "remind_only")
        ).scalars()
    )
    return any(org_id not in lenient for org_id in overdue)
