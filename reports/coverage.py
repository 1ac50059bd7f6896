"""An organisation's 2FA coverage now: who is enrolled, by role and overall (the API's and the CLI's summary)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from reports import compute
from reports.extract import members
from twofa.models import Organization


@dataclass(frozen=True)
class RoleCoverage:
    role: str
    members: int
    sso_managed: int
    in_scope: int
    enrolled: int
    totp: int
    email: int
    coverage: float | None  # enrolled / in scope; None when nobody of this role is in scope


@dataclass(frozen=True)
class CoverageSummary:
    org: str
    members: int
    in_scope: int
    enrolled: int
    sso_managed: int
    coverage_pct: float | None
    non_compliant: int
    overdue: int
    by_role: list[RoleCoverage]

    def line(self) -> str:
        pct = "n/a" if self.coverage_pct is None else f"{self.coverage_pct}%"
        return (
            f"{self.enrolled} of {self.in_scope} members in scope enrolled ({pct}); {self.non_compliant} not yet "
            f"compliant, {self.overdue} overdue; {self.sso_managed} managed by SSO; {self.members} members in all"
        )


def summary(session: Session, org: Organization, now: datetime) -> CoverageSummary:
    frame = members(session, org, now)
    by_role = compute.coverage_by_role(frame)
    in_scope = int(by_role["in_scope"].sum())
    enrolled = int(by_role["enrolled"].sum())
    return CoverageSummary(
        org=org.slug,
        members=len(frame),
        in_scope=in_scope,
        enrolled=enrolled,
        sso_managed=int(by_role["sso_managed"].sum()),
        coverage_pct=round(100 * enrolled / in_scope, 1) if in_scope else None,
        non_compliant=int(frame["verdict"].isin(["pending", "overdue"]).sum()),
        overdue=int(frame["verdict"].eq("overdue").sum()),
        by_role=[
            RoleCoverage(
                role=str(role),
                members=int(row["members"]),
                sso_managed=int(row["sso_managed"]),
                in_scope=int(row["in_scope"]),
                enrolled=int(row["enrolled"]),
                totp=int(row["totp"]),
                email=int(row["email"]),
                coverage=None if math.isnan(row["coverage"]) else float(row["coverage"]),
            )
            for role, row in by_role.iterrows()
        ],
    )
