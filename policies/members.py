"""Who manages an organisation, and its members with their 2FA state, for the API, the CLI and the report.

The rows of a whole organisation come from four statements whatever its size: the verdicts (two, see
``policies.evaluate``), the reminders sent, and the sign-ins; never a statement per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.orm import Session

from policies.evaluate import evaluate
from policies.reminders import REMINDER
from twofa import accounts
from twofa.errors import InvalidInput
from twofa.login_history import Outcome
from twofa.models import LoginHistory, Membership, Organization, OutboxMessage, Role, User

MANAGERS = (Role.OWNER.value, Role.ADMIN.value, Role.SUPER_ADMIN.value)
VERDICTS = ("compliant", "exempt", "pending", "overdue")
ROLES = tuple(r.value for r in Role)
SIGNED_IN = (Outcome.SUCCESS, Outcome.ENROLMENT_REQUIRED)
MAX_PER_PAGE = 500


@dataclass(frozen=True)
class Manager:
    org: Organization
    user_id: int
    role: str


def managed_org(session: Session, user_id: int, slug: str) -> Manager | None:
    """The organisation ``slug`` with the caller's role in it, when the caller is one of its owners or admins."""
    org = accounts.get_org(session, slug)
    if org is None:
        return None
    role = session.execute(
        select(Membership.role).where(Membership.org_id == org.id, Membership.user_id == user_id)
    ).scalar_one_or_none()
    return Manager(org, user_id, role) if role in MANAGERS else None


def may_reset(manager: Manager, member_role: str) -> bool:
    """Owners reset anyone's 2FA; admins reset members, not owners or other admins."""
    return manager.role == Role.OWNER.value or member_role not in MANAGERS


@dataclass(frozen=True)
class MemberRow:
    user_id: int
    email: str
    role: str
    method: str | None  # totp, email, or None
    verdict: str  # compliant, exempt, pending, overdue
    reason: str | None  # why exempt, pending or overdue
    deadline: datetime | None
    reminders_sent: int
    last_sign_in: datetime | None
    last_sign_in_2fa: datetime | None  # the last sign-in that passed a second factor
    enabled_at: datetime | None
    joined_at: datetime


# A member row as the API's CSV, its JSON and `twofa policy check` give it out, in this order.
EXPORTED = (
    "email",
    "role",
    "method",
    "verdict",
    "reason",
    "deadline",
    "reminders_sent",
    "last_sign_in",
    "last_sign_in_2fa",
)


@dataclass(frozen=True)
class MemberPage:
    rows: list[MemberRow]
    total: int  # members matching the filters, over every page
    page: int
    per_page: int


def check_filters(verdict: str | None, role: str | None) -> None:
    if verdict is not None and verdict not in VERDICTS:
        raise InvalidInput(f"verdict: one of {', '.join(VERDICTS)}")
    if role is not None and role not in ROLES:
        raise InvalidInput(f"role: one of {', '.join(ROLES)}")


def member_rows(
    session: Session,
    org_id: int,
    now: datetime,
    *,
    verdict: str | None = None,
    role: str | None = None,
    sign_ins: bool = True,
) -> list[MemberRow]:
    """Every member of the organisation (with ``verdict`` and ``role``, those only), by email. Without
    ``sign_ins`` the last sign-ins are left empty and the login history is not read (the weekly report reads it
    for its week)."""
    check_filters(verdict, role)
    verdicts = {v.user_id: v.verdict for v in evaluate(session, now, org_id=org_id)}
    reminders = dict(
        session.execute(
            select(OutboxMessage.user_id, func.count())
            .where(OutboxMessage.org_id == org_id, OutboxMessage.template == REMINDER, OutboxMessage.created_at < now)
            .group_by(OutboxMessage.user_id)
        ).all()
    )
    members = select(Membership.user_id).where(Membership.org_id == org_id)
    if role is not None:
        members = members.where(Membership.role == role)
    last_sign_ins = _last_sign_ins(session, members) if sign_ins else {}
    stmt = (
        select(
            Membership.user_id,
            User.email,
            Membership.role,
            User.twofa_method,
            User.twofa_enabled_at,
            Membership.created_at,
        )
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org_id)
        .order_by(User.email)
    )
    if role is not None:
        stmt = stmt.where(Membership.role == role)
    rows = []
    for user_id, email, member_role, method, enabled_at, joined_at in session.execute(stmt).all():
        found = verdicts[user_id]
        if verdict is not None and found.kind != verdict:
            continue
        last, last_2fa = last_sign_ins.get(user_id, (None, None))
        rows.append(
            MemberRow(
                user_id=user_id,
                email=email,
                role=member_role,
                method=method,
                verdict=found.kind,
                reason=getattr(found, "reason", None),
                deadline=getattr(found, "deadline", None),
                reminders_sent=int(reminders.get(user_id, 0)),
                last_sign_in=last,
                last_sign_in_2fa=last_2fa,
                enabled_at=enabled_at,
                joined_at=joined_at,
            )
        )
    return rows


def _last_sign_ins(session: Session, members: Select[int]) -> dict[int, tuple[datetime | None, datetime | None]]:
    """Each member's last sign-in, and last sign-in that passed a second factor, in one statement."""
    signed_in = LoginHistory.outcome.in_(SIGNED_IN)
    verified = and_(signed_in, LoginHistory.twofa_verified.is_(True))
    found = session.execute(
        select(
            LoginHistory.user_id,
            func.max(case((signed_in, LoginHistory.at))),
            func.max(case((verified, LoginHistory.at))),
        )
        .where(LoginHistory.user_id.in_(members))
        .group_by(LoginHistory.user_id)
    ).all()
    return {user_id: (last, last_2fa) for user_id, last, last_2fa in found}


def members_page(
    session: Session,
    org_id: int,
    now: datetime,
    *,
    verdict: str | None = None,
    role: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> MemberPage:
    """One page of ``member_rows`` (the verdicts are computed for the whole organisation, then the page is cut)."""
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidInput(f"page starts at 1; per_page is 1 to {MAX_PER_PAGE}")
    rows = member_rows(session, org_id, now, verdict=verdict, role=role)
    start = (page - 1) * per_page
    return MemberPage(rows[start : start + per_page], len(rows), page, per_page)
