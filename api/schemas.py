"""Request and response bodies. Every request model forbids unknown fields and bounds every string."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

# No NUL character in any string (PostgreSQL text cannot hold one): refused as bad input, not failed in the database.
NO_NUL = r"^[^\x00]*$"
Str320 = Field(min_length=1, max_length=320, pattern=NO_NUL)
# A row id in a path: the id columns are INTEGER, so a larger number names nothing (404, not a database error).
MAX_ID = 2**31 - 1
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


Password = Field(min_length=1, pattern=NO_NUL, max_length=1024)
Code = Field(min_length=1, pattern=NO_NUL, max_length=64)


class LoginRequest(Body):
    email: str = Str320
    password: str = Password


class SecondFactorRequest(Body):
    challenge: str = Field(min_length=1, pattern=NO_NUL, max_length=200)
    code: str = Field(
        min_length=1, pattern=NO_NUL, max_length=64, description="6-digit app or email code, or a backup code"
    )
    method: Literal["totp", "email", "backup_code"] | None = None


class CodeRequest(Body):
    code: str = Code


class EmailOtpRequest(Body):
    challenge: str | None = Field(
        default=None, pattern=NO_NUL, max_length=200, description="During a login: resend the code for this challenge."
    )
    password: str | None = Field(
        default=None,
        min_length=1,
        pattern=NO_NUL,
        max_length=1024,
        description="To start email codes as the second factor.",
    )


class SetupRequest(Body):
    password: str = Password
    code: str | None = Field(
        default=None,
        min_length=1,
        pattern=NO_NUL,
        max_length=64,
        description="While 2FA is on: a current code, or a backup code",
    )


class DisableRequest(Body):
    password: str = Password
    code: str = Field(min_length=1, pattern=NO_NUL, max_length=64, description="A current code, or a backup code")


class RegenerateRequest(Body):
    password: str = Password
    code: str = Field(min_length=1, pattern=NO_NUL, max_length=64, description="A current app or email code")


class ApiKeyRequest(Body):
    name: str = Field(min_length=1, pattern=NO_NUL, max_length=100)


class PolicyUpdate(Body):
    required: bool | None = None
    roles: list[Literal["owner", "admin", "super_admin", "finance", "member"]] | None = Field(
        default=None, max_length=5
    )
    totp_only_roles: list[Literal["owner", "admin", "super_admin", "finance", "member"]] | None = Field(
        default=None, max_length=5
    )
    grace_days: int | None = Field(default=None, ge=0, le=365)
    reminder_days: list[int] | None = Field(default=None, max_length=10)
    escalate: bool | None = None
    after_deadline: Literal["enrol_only", "remind_only"] | None = None
    disable_grace_days: int | None = Field(default=None, ge=0, le=30)


class SessionOut(BaseModel):
    token: str
    session_id: int
    scope: Literal["full", "enrol"]
    twofa_verified: bool = Field(serialization_alias="2fa_verified")


class LoginResponse(BaseModel):
    status: Literal["ok", "2fa_required", "enrolment_required"]
    session: SessionOut | None = None
    challenge: str | None = None
    methods: list[str] | None = None
    expires_at: datetime | None = None
    email_code_sent: bool | None = None


class SetupResponse(BaseModel):
    otpauth_url: str
    qr_code: str = Field(description="PNG as a data URL")
    secret: str


class BackupCodesResponse(BaseModel):
    enabled: bool = True
    backup_codes: list[str]


class Accepted(BaseModel):
    status: Literal["queued"] = "queued"


class Done(BaseModel):
    status: Literal["ok"] = "ok"


class StatusResponse(BaseModel):
    enabled: bool
    method: str | None
    managed_by_sso: bool
    backup_codes_left: int
    required_by_policy: bool
    deadline: datetime | None
    policy_status: str | None


class HistoryEntry(BaseModel):
    at: datetime
    ip: str | None
    user_agent: str | None
    outcome: str
    method: str | None
    twofa_verified: bool = Field(serialization_alias="2fa_verified")


class SessionInfo(BaseModel):
    id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    twofa_verified: bool = Field(serialization_alias="2fa_verified")
    current: bool


class ApiKeyInfo(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="Shown once")


class PolicyResponse(BaseModel):
    required: bool
    roles: list[str]
    totp_only_roles: list[str]
    grace_days: int
    reminder_days: list[int]
    escalate: bool
    after_deadline: str
    disable_grace_days: int
    enabled_at: datetime | None


class WeeklyReportResponse(BaseModel):
    """The headline figures of an organisation's weekly report (Monday to Sunday, UTC)."""

    org: str
    week: str = Field(examples=["2026-W47"])
    first_day: date
    last_day: date
    partial: bool = Field(description="the week is not over: the figures are to date (as_of)")
    as_of: datetime
    members: int
    in_scope: int
    sso_managed: int
    enrolled: int
    coverage_pct: float | None
    non_compliant: int
    overdue: int
    logins: int
    verified: int
    verified_pct: float | None
    privileged_unverified_logins: int
    privileged_unverified_members: int
    backup_codes_used: int
    failed_2fa: int
    failed_password: int
    lockouts: int


class CoverageResponse(BaseModel):
    org: str
    members: int
    in_scope: int
    enrolled: int
    sso_managed: int
    coverage_pct: float | None
    non_compliant: int
    overdue: int
    by_role: list[dict[str, Any]]


class MemberOut(BaseModel):
    user_id: int
    email: str
    role: str
    method: str | None
    verdict: Literal["compliant", "exempt", "pending", "overdue"]
    reason: str | None
    deadline: datetime | None
    reminders_sent: int
    last_sign_in: datetime | None
    last_sign_in_2fa: datetime | None = Field(description="The last sign-in that passed a second factor")


class MembersResponse(BaseModel):
    org: str
    total: int
    page: int
    per_page: int
    members: list[MemberOut]


class AuditRowOut(BaseModel):
    id: int
    at: datetime
    event: str
    member: str | None
    actor: str | None
    credential: str | None = Field(description="session, api_key, cli, anonymous or system")
    credential_id: int | None
    client_ip: str | None
    details: dict[str, Any]


class AuditResponse(BaseModel):
    org: str
    total: int
    page: int
    per_page: int
    events: list[AuditRowOut]


class ResetRequest(Body):
    reason: str = Field(
        min_length=1, pattern=NO_NUL, max_length=500, description="Why (ticket, how the member's identity was checked)"
    )


class ResetResponse(BaseModel):
    user_id: int
    email: str
    status: Literal["reset"]
    admins_notified: int
