"""The organisation page's members table. A stand-in built on what ``reports`` and ``policies`` offer on this
branch (the report's member frame, which carries the policy verdicts) plus each member's last sign-in; a
members-list function in ``policies`` replaces it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reports.extract import SIGNED_IN
from reports.extract import members as member_frame
from twofa.models import LoginHistory, Membership, Organization

NON_COMPLIANT = ("pending", "overdue")


@dataclass(frozen=True)
class MemberRow:
    user_id: int
    email: str
    role: str
    method: str | None
    verdict: str
    reason: str | None
    deadline: datetime | None
    reminders_sent: int
    last_sign_in: datetime | None

    @property
    def compliant(self) -> bool:
        return self.verdict not in NON_COMPLIANT


def _value(v: object) -> object:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v  # type: ignore[call-overload]


def members_of(session: Session, org: Organization, now: datetime) -> tuple[pd.DataFrame, list[MemberRow]]:
    """The report's member frame (for the coverage figures) and a row per member for the table."""
    frame = member_frame(session, org, now)
    last = dict(
        session.execute(
            select(LoginHistory.user_id, func.max(LoginHistory.at))
            .join(Membership, Membership.user_id == LoginHistory.user_id)
            .where(Membership.org_id == org.id, LoginHistory.outcome.in_(SIGNED_IN))
            .group_by(LoginHistory.user_id)
        ).all()
    )
    rows = []
    for r in frame.to_dict("records"):
        deadline = _value(r["deadline"])
        rows.append(
            MemberRow(
                user_id=int(r["user_id"]),
                email=str(r["email"]),
                role=str(r["role"]),
                method=_value(r["method"]),  # type: ignore[arg-type]
                verdict=str(r["verdict"]),
                reason=_value(r["reason"]),  # type: ignore[arg-type]
                deadline=pd.Timestamp(deadline).to_pydatetime() if deadline is not None else None,  # type: ignore[arg-type]
                reminders_sent=int(r["reminders_sent"]),
                last_sign_in=last.get(int(r["user_id"])),
            )
        )
    return frame, rows
