"""The typed answer to "is this member compliant?", shared by the scheduler, the CLI, the login flow and reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Compliant:
    method: str
    kind: str = "compliant"


@dataclass(frozen=True)
class Exempt:
    reason: str  # "managed_by_sso", "policy_off", "role_not_required"
    kind: str = "exempt"


@dataclass(frozen=True)
class Pending:
    deadline: datetime
    days_left: int
    reason: str = "not_enrolled"  # or "totp_required": enrolled with email where the role needs an app
    kind: str = "pending"


@dataclass(frozen=True)
class Overdue:
    deadline: datetime
    days: int  # whole days past the deadline: 0 during the first day
    reason: str = "not_enrolled"
    kind: str = "overdue"


Verdict = Compliant | Exempt | Pending | Overdue


@dataclass(frozen=True)
class MemberVerdict:
    membership_id: int
    org_id: int
    org_slug: str
    org_name: str
    user_id: int
    email: str
    role: str
    verdict: Verdict
    subject_since: datetime | None = None
    base_deadline: datetime | None = None  # subject_since + grace, before any shortening after a disable
    stored_deadline: bool = False  # False: base_deadline is computed and not yet written
    escalate: bool = True
    reminder_days: tuple[int, ...] = ()
    totp_only: bool = False
    enrol_only: bool = True  # the policy's after_deadline: an overdue member's sign-in may only set up 2FA
