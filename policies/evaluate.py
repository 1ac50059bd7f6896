"""Evaluating members against their organisations' policies, set-wise: two SQL statements (the members, and their
organisations with their policies) for any number of members; the verdict arithmetic then runs in Python.

A member is subject to a policy when the organisation does not sign in through SSO, its policy is on, and the
member's role is one the policy names (an organisation with no policy row follows the default policy). The
member's deadline is the stored one, or ``subject_since + grace`` where ``subject_since`` is the latest of
joining, the last role change and the policy being switched on. After 2FA was disabled (or reset by support) the
deadline becomes ``disabled_at + disable_grace_days`` at the latest: toggling 2FA never buys a new grace period.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, and_, false, func, or_, select, true
from sqlalchemy.orm import Session

from policies.models import OrgPolicy, OrgPolicyRole, PolicyDeadline
from policies.rules import DEFAULT, DEFAULT_ROLES
from policies.verdicts import Compliant, Exempt, MemberVerdict, Overdue, Pending, Verdict
from twofa.audit import Event
from twofa.models import AuditEvent, Membership, Organization, User

DISABLE_EVENTS = (Event.TWOFA_DISABLED, Event.TWOFA_RESET_BY_SUPPORT)
DAY = timedelta(days=1)


@lru_cache(maxsize=2)  # built once: constructing this join costs more than running it for one user
def _statement(noncompliant_only: bool) -> Select[*tuple[Any, ...]]:
    last_disabled = (
        select(AuditEvent.user_id.label("user_id"), func.max(AuditEvent.at).label("at"))
        .where(AuditEvent.event.in_(DISABLE_EVENTS))
        .group_by(AuditEvent.user_id)
        .subquery("last_disabled")
    )
    default_policy = OrgPolicy.org_id.is_(None)
    subject = and_(
        Organization.sso_idp.is_(None),
        or_(
            and_(default_policy, Membership.role.in_(DEFAULT_ROLES)),
            and_(OrgPolicy.required.is_(true()), OrgPolicyRole.role.is_not(None)),
        ),
    )
    totp_only = func.coalesce(OrgPolicyRole.totp_only, false())
    stmt = (
        select(
            Membership.id.label("membership_id"),
            Membership.org_id,
            Membership.user_id,
            Membership.role,
            Membership.created_at.label("joined_at"),
            Membership.role_changed_at,
            User.email,
            User.twofa_method,
            OrgPolicyRole.role.label("policy_role"),
            totp_only.label("totp_only"),
            PolicyDeadline.deadline.label("stored_deadline"),
            PolicyDeadline.subject_since.label("stored_since"),
            last_disabled.c.at.label("disabled_at"),
        )
        .join(Organization, Organization.id == Membership.org_id)
        .join(User, User.id == Membership.user_id)
        .outerjoin(OrgPolicy, OrgPolicy.org_id == Membership.org_id)
        .outerjoin(
            OrgPolicyRole, and_(OrgPolicyRole.org_id == Membership.org_id, OrgPolicyRole.role == Membership.role)
        )
        .outerjoin(PolicyDeadline, PolicyDeadline.membership_id == Membership.id)
        .outerjoin(last_disabled, last_disabled.c.user_id == Membership.user_id)
    )
    if noncompliant_only:
        stmt = stmt.where(subject, or_(User.twofa_method.is_(None), and_(totp_only, User.twofa_method == "email")))
    return stmt


@lru_cache(maxsize=1)
def _org_statement() -> Select[*tuple[Any, ...]]:
    """What is the same for every member of an organisation, read once per organisation, not once per member."""
    return select(
        Organization.id,
        Organization.slug,
        Organization.name,
        Organization.sso_idp,
        Organization.created_at.label("org_created_at"),
        OrgPolicy.org_id.label("policy_org_id"),
        OrgPolicy.required,
        OrgPolicy.grace_days,
        OrgPolicy.disable_grace_days,
        OrgPolicy.escalate,
        OrgPolicy.reminder_days,
        OrgPolicy.enabled_at,
    ).outerjoin(OrgPolicy, OrgPolicy.org_id == Organization.id)


def _verdict(row: Any, org: Any, now: datetime) -> tuple[Verdict, datetime | None, datetime | None, bool]:
    """(verdict, subject_since, base deadline, whether the base deadline is the stored one)."""
    if org.sso_idp is not None:
        return Exempt("managed_by_sso"), None, None, False
    if org.policy_org_id is None:
        applies, grace, disable_grace = row.role in DEFAULT_ROLES, DEFAULT.grace_days, DEFAULT.disable_grace_days
        enabled_at = org.org_created_at
    else:
        if not org.required:
            return Exempt("policy_off"), None, None, False
        applies, grace, disable_grace = row.policy_role is not None, org.grace_days, org.disable_grace_days
        enabled_at = org.enabled_at
    if not applies:
        return Exempt("role_not_required"), None, None, False
    if row.twofa_method is not None and not (row.totp_only and row.twofa_method == "email"):
        return Compliant(row.twofa_method), None, None, False
    since = max(row.joined_at, row.role_changed_at or row.joined_at, enabled_at)
    stored = row.stored_deadline is not None and row.stored_since == since
    base: datetime = row.stored_deadline if stored else since + timedelta(days=grace)
    deadline = base
    disabled_at = row.disabled_at
    if disabled_at is not None and disabled_at > since:
        short = disabled_at + timedelta(days=disable_grace)
        deadline = short if deadline <= disabled_at else min(deadline, short)
    reason = "totp_required" if row.twofa_method == "email" else "not_enrolled"
    if now < deadline:
        return Pending(deadline, math.ceil((deadline - now) / DAY), reason), since, base, stored
    return Overdue(deadline, max(1, math.ceil((now - deadline) / DAY)), reason), since, base, stored


def evaluate(
    session: Session,
    now: datetime,
    *,
    org_id: int | None = None,
    user_id: int | None = None,
    noncompliant_only: bool = False,
) -> Iterator[MemberVerdict]:
    """A verdict per membership (of one organisation, one user, or all), in two SQL statements: the members, and
    their organisations with their policies.

    With ``noncompliant_only`` the database filters out exempt and compliant members, so the rows fetched grow
    with the members who still need a reminder, not with the organisation.
    """
    stmt = _statement(noncompliant_only)
    orgs_stmt = _org_statement()
    if org_id is not None:
        stmt = stmt.where(Membership.org_id == org_id)
        orgs_stmt = orgs_stmt.where(Organization.id == org_id)
    if user_id is not None:
        stmt = stmt.where(Membership.user_id == user_id)
        orgs_stmt = orgs_stmt.where(Organization.id.in_(select(Membership.org_id).where(Membership.user_id == user_id)))
    # Core rows (plain tuples), not ORM rows: at 100,000 members the ORM's per-row bookkeeping costs more than the SQL.
    connection = session.connection()
    orgs = {org.id: org for org in connection.execute(orgs_stmt)}
    for row in connection.execute(stmt.order_by(Membership.org_id, Membership.id)):
        org = orgs[row.org_id]
        verdict, since, base, stored = _verdict(row, org, now)
        yield MemberVerdict(
            membership_id=row.membership_id,
            org_id=row.org_id,
            org_slug=org.slug,
            org_name=org.name,
            user_id=row.user_id,
            email=row.email,
            role=row.role,
            verdict=verdict,
            subject_since=since,
            base_deadline=base,
            stored_deadline=stored,
            escalate=True if org.policy_org_id is None else bool(org.escalate),
            reminder_days=DEFAULT.reminder_days if org.policy_org_id is None else tuple(org.reminder_days),
            totp_only=bool(row.totp_only),
        )
