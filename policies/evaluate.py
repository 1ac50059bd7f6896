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
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, false, func, or_, select, true
from sqlalchemy.orm import Session

from policies.models import OrgPolicy, OrgPolicyRole, PolicyDeadline
from policies.rules import DEFAULT, DEFAULT_ROLES
from policies.verdicts import Compliant, Exempt, MemberVerdict, Overdue, Pending, Verdict
from twofa.audit import Event
from twofa.models import AuditEvent, Membership, Organization, User

DISABLE_EVENTS = (Event.TWOFA_DISABLED, Event.TWOFA_RESET_BY_SUPPORT, Event.TWOFA_RESET_BY_ADMIN)
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
        OrgPolicy.after_deadline,
    ).outerjoin(OrgPolicy, OrgPolicy.org_id == Organization.id)


class _OrgRules(NamedTuple):
    """What every member of one organisation shares, worked out once per organisation."""

    slug: str
    name: str
    exempt: str | None  # "managed_by_sso" or "policy_off": every member is exempt for this reason
    default_roles: bool  # the default policy: the role decides; otherwise the policy's role row does
    grace: timedelta
    disable_grace: timedelta
    enabled_at: datetime
    escalate: bool
    reminder_days: tuple[int, ...]
    enrol_only: bool  # after the deadline a sign-in may only set up 2FA (else: reminders only)


def _org_rules(org: Any) -> _OrgRules:
    default = org.policy_org_id is None
    exempt = "managed_by_sso" if org.sso_idp is not None else None
    if exempt is None and not default and not org.required:
        exempt = "policy_off"
    return _OrgRules(
        slug=org.slug,
        name=org.name,
        exempt=exempt,
        default_roles=default,
        grace=timedelta(days=DEFAULT.grace_days if default else org.grace_days),
        disable_grace=timedelta(days=DEFAULT.disable_grace_days if default else org.disable_grace_days),
        enabled_at=org.org_created_at if default else org.enabled_at,
        escalate=True if default else bool(org.escalate),
        reminder_days=DEFAULT.reminder_days if default else tuple(org.reminder_days),
        enrol_only=(DEFAULT.after_deadline if default else org.after_deadline) == "enrol_only",
    )


def _verdict(
    org: _OrgRules,
    now: datetime,
    role: str,
    twofa_method: str | None,
    policy_role: str | None,
    totp_only: bool,
    joined_at: datetime,
    role_changed_at: datetime | None,
    stored_deadline: datetime | None,
    stored_since: datetime | None,
    disabled_at: datetime | None,
) -> tuple[Verdict, datetime | None, datetime | None, bool]:
    """(verdict, subject_since, base deadline, whether the base deadline is the stored one)."""
    if org.exempt is not None:
        return Exempt(org.exempt), None, None, False
    if not (role in DEFAULT_ROLES if org.default_roles else policy_role is not None):
        return Exempt("role_not_required"), None, None, False
    if twofa_method is not None and not (totp_only and twofa_method == "email"):
        return Compliant(twofa_method), None, None, False
    since = max(joined_at, role_changed_at or joined_at, org.enabled_at)
    stored = stored_deadline is not None and stored_since == since
    base: datetime = stored_deadline if stored and stored_deadline is not None else since + org.grace
    deadline = base
    if disabled_at is not None and disabled_at > since:
        short = disabled_at + org.disable_grace
        deadline = short if deadline <= disabled_at else min(deadline, short)
    reason = "totp_required" if twofa_method == "email" else "not_enrolled"
    if now < deadline:
        return Pending(deadline, math.ceil((deadline - now) / DAY), reason), since, base, stored
    return Overdue(deadline, (now - deadline) // DAY, reason), since, base, stored


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
    # Core rows unpacked into locals, not ORM rows (nor attribute access on rows): at 100,000 members the per-row
    # bookkeeping costs more than the SQL.
    connection = session.connection()
    orgs = {org.id: _org_rules(org) for org in connection.execute(orgs_stmt)}
    for (
        membership_id,
        member_org_id,
        member_user_id,
        role,
        joined_at,
        role_changed_at,
        email,
        twofa_method,
        policy_role,
        totp_only,
        stored_deadline,
        stored_since,
        disabled_at,
    ) in connection.execute(stmt.order_by(Membership.org_id, Membership.id)):
        org = orgs[member_org_id]
        totp_only = bool(totp_only)
        verdict, since, base, stored = _verdict(
            org,
            now,
            role,
            twofa_method,
            policy_role,
            totp_only,
            joined_at,
            role_changed_at,
            stored_deadline,
            stored_since,
            disabled_at,
        )
        yield MemberVerdict(
            membership_id=membership_id,
            org_id=member_org_id,
            org_slug=org.slug,
            org_name=org.name,
            user_id=member_user_id,
            email=email,
            role=role,
            verdict=verdict,
            subject_since=since,
            base_deadline=base,
            stored_deadline=stored,
            escalate=org.escalate,
            reminder_days=org.reminder_days,
            totp_only=totp_only,
            enrol_only=org.enrol_only,
        )


class Asked(NamedTuple):
    """What the organisations' policies ask of one user: the API's status and the security page both show it."""

    required: bool
    deadline: datetime | None  # the earliest open deadline
    status: str | None  # overdue, pending, compliant, or None where no policy requires 2FA of the user
    totp_required: bool  # an open deadline asks for an authenticator app


def asked_of(session: Session, user_id: int, now: datetime) -> Asked:
    verdicts = [v.verdict for v in evaluate(session, now, user_id=user_id)]
    open_ = [v for v in verdicts if isinstance(v, Pending | Overdue)]
    required = any(v.kind != "exempt" for v in verdicts)
    overdue = any(isinstance(v, Overdue) for v in open_)
    status = "overdue" if overdue else "pending" if open_ else "compliant" if required else None
    return Asked(
        required=required,
        deadline=min((v.deadline for v in open_), default=None),
        status=status,
        totp_required=any(getattr(v, "reason", None) == "totp_required" for v in open_),
    )
