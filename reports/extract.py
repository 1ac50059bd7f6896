"""Reading what a report needs, aggregated in SQL: every result here has a row per member (or per week), never
a row per login event, so memory grows with members and not with the login history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from policies.members import member_rows
from reports.week import IsoWeek
from twofa.audit import Event
from twofa.login_history import Outcome
from twofa.models import AuditEvent, LoginHistory, Membership, Organization

TREND_WEEKS = 8
FAILED_2FA = (Outcome.BAD_CODE, Outcome.CODE_REUSED, Outcome.MALFORMED_CODE, Outcome.LOCKED)
SIGNED_IN = (Outcome.SUCCESS, Outcome.ENROLMENT_REQUIRED)
TOGGLES = {
    Event.TWOFA_ENABLED: True,
    Event.TWOFA_DISABLED: False,
    Event.TWOFA_RESET_BY_SUPPORT: False,
    Event.TWOFA_RESET_BY_ADMIN: False,
}


@dataclass(frozen=True)
class ReportData:
    org: Organization
    week: IsoWeek
    as_of: datetime  # the week's end, or now for the current week (a partial report)
    members: pd.DataFrame
    logins: pd.DataFrame
    lockouts: pd.DataFrame
    trend_logins: pd.DataFrame
    toggles: pd.DataFrame


def _frame(rows: Sequence[tuple[Any, ...]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=columns)


MEMBER_COLUMNS = ["user_id", "email", "role", "method", "enabled_at", "verdict", "reason", "deadline", "joined_at"]


def members(session: Session, org: Organization, now: datetime) -> pd.DataFrame:
    """Columns: user_id, email, role, method, enabled_at, verdict, reason, deadline, joined_at, reminders_sent
    (the reminders sent before ``now``: the report's end, for a week that is over)."""
    rows = member_rows(session, org.id, now, sign_ins=False)
    return _frame(
        [(*tuple(getattr(r, c) for c in MEMBER_COLUMNS), r.reminders_sent) for r in rows],
        [*MEMBER_COLUMNS, "reminders_sent"],
    )


def logins(session: Session, org: Organization, week: IsoWeek) -> pd.DataFrame:
    """One row per member with logins in the week. Columns: user_id, signed_in, verified, unverified,
    failed_password, failed_2fa, backup_codes_used."""

    def count(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    signed_in = LoginHistory.outcome.in_(SIGNED_IN)
    stmt = (
        select(
            LoginHistory.user_id,
            count(signed_in),
            count(and_(signed_in, LoginHistory.twofa_verified.is_(True))),
            count(and_(signed_in, LoginHistory.twofa_verified.is_(False))),
            count(LoginHistory.outcome == Outcome.INVALID_CREDENTIALS),
            count(LoginHistory.outcome.in_(FAILED_2FA)),
            count(and_(LoginHistory.outcome == Outcome.SUCCESS, LoginHistory.method == "backup_code")),
        )
        .join(Membership, and_(Membership.user_id == LoginHistory.user_id, Membership.org_id == org.id))
        .where(LoginHistory.at >= week.start, LoginHistory.at < week.end)
        .group_by(LoginHistory.user_id)
    )
    columns = ["user_id", "signed_in", "verified", "unverified", "failed_password", "failed_2fa", "backup_codes_used"]
    frame = _frame([tuple(r) for r in session.execute(stmt)], columns)
    return frame.astype({c: "int64" for c in columns})


def lockouts(session: Session, org: Organization, week: IsoWeek) -> pd.DataFrame:
    """Columns: user_id, lockouts (second-factor lockouts in the week)."""
    rows = session.execute(
        select(AuditEvent.user_id, func.count())
        .join(Membership, and_(Membership.user_id == AuditEvent.user_id, Membership.org_id == org.id))
        .where(AuditEvent.event == Event.SECOND_FACTOR_LOCKED, AuditEvent.at >= week.start, AuditEvent.at < week.end)
        .group_by(AuditEvent.user_id)
    ).all()
    return _frame([tuple(r) for r in rows], ["user_id", "lockouts"]).astype({"user_id": "int64", "lockouts": "int64"})


def trend_logins(session: Session, org: Organization, week: IsoWeek, this_week: pd.DataFrame) -> pd.DataFrame:
    """One row per week of the trend, oldest first. Columns: week, signed_in, verified. One SQL statement for the
    earlier weeks; the report's own week comes from ``this_week`` (the ``logins`` frame), so its events, usually
    the largest share, are read once."""
    weeks = [week.minus(n) for n in reversed(range(1, TREND_WEEKS))]
    signed_in = LoginHistory.outcome.in_(SIGNED_IN)
    columns = []
    for w in weeks:
        in_week = and_(LoginHistory.at >= w.start, LoginHistory.at < w.end, signed_in)
        columns.append(func.coalesce(func.sum(case((in_week, 1), else_=0)), 0))
        verified = and_(in_week, LoginHistory.twofa_verified.is_(True))
        columns.append(func.coalesce(func.sum(case((verified, 1), else_=0)), 0))
    row = session.execute(
        select(*columns)
        .join(Membership, and_(Membership.user_id == LoginHistory.user_id, Membership.org_id == org.id))
        .where(LoginHistory.at >= weeks[0].start, LoginHistory.at < week.start)
    ).one()
    return pd.DataFrame(
        {
            "week": [str(w) for w in weeks] + [str(week)],
            "signed_in": [int(row[2 * i]) for i in range(len(weeks))] + [int(this_week["signed_in"].sum())],
            "verified": [int(row[2 * i + 1]) for i in range(len(weeks))] + [int(this_week["verified"].sum())],
        }
    )


def toggles(session: Session, org: Organization, until: datetime) -> pd.DataFrame:
    """Every time a member's 2FA went on or off. Columns: user_id, at, enabled."""
    rows = session.execute(
        select(AuditEvent.user_id, AuditEvent.at, AuditEvent.event)
        .join(Membership, and_(Membership.user_id == AuditEvent.user_id, Membership.org_id == org.id))
        .where(AuditEvent.event.in_(list(TOGGLES)), AuditEvent.at < until)
        .order_by(AuditEvent.at, AuditEvent.id)
    ).all()
    return _frame([(u, at, TOGGLES[e]) for u, at, e in rows], ["user_id", "at", "enabled"])


def extract(session: Session, org: Organization, week: IsoWeek, now: datetime) -> ReportData:
    """What the report of ``week`` needs, as of ``now``; a week that has not begun is refused (``WeekNotBegun``)."""
    week.require_begun(now)
    as_of = min(now, week.end)
    week_logins = logins(session, org, week)
    return ReportData(
        org=org,
        week=week,
        as_of=as_of,
        members=members(session, org, as_of),
        logins=week_logins,
        lockouts=lockouts(session, org, week),
        trend_logins=trend_logins(session, org, week, week_logins),
        toggles=toggles(session, org, week.end),
    )
