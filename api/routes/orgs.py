"""An organisation's 2FA policy, coverage, members, audit trail and member resets, for its owners and admins."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Depends, Path, Query
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import Ctx, Principal, get_ctx
from api.errors import ApiError
from api.routing import Router
from api.schemas import (
    AuditResponse,
    AuditRowOut,
    CoverageResponse,
    MemberOut,
    MembersResponse,
    PathId,
    PolicyResponse,
    PolicyUpdate,
    ResetRequest,
    ResetResponse,
)
from policies import members as org_members
from policies import notices
from policies.rules import Policy, covers, get_policy, set_policy
from reports import audit_trail
from reports import coverage as coverage_summary
from reports.csv_export import csv_text
from twofa import manage
from twofa.models import Membership, User

# Coverage builds a pandas frame of every member: slow for a big organisation, so off the sign-in slots.
router = Router(tags=["organisations"], limited=False)
CtxDep = Annotated[Ctx, Depends(get_ctx)]
Slug = Annotated[str, Path(min_length=1, max_length=63)]
Page = Annotated[int, Query(ge=1, le=1_000_000)]
PerPage = Annotated[int, Query(ge=1, le=org_members.MAX_PER_PAGE)]


def managed_by_caller(s: Session, principal: Principal, slug: str) -> org_members.Manager:
    manager = org_members.managed_org(s, principal.user.id, slug)
    if manager is None:
        # The same answer for "no such organisation" and "not yours": slugs are not enumerable.
        raise ApiError(404, "not_found", f"no organisation {slug!r} that you manage")
    return manager


def _governed(s: Session, ctx: Ctx, slug: str) -> tuple[Principal, org_members.Manager]:
    """An organisation the caller may change: a full session (never an API key) of an owner or admin, signed in
    with a second factor when the organisation's policy requires one of the caller's role."""
    principal = ctx.principal(s)
    manager = managed_by_caller(s, principal, slug)
    if not principal.verified and covers(get_policy(s, manager.org), manager.role):
        raise ApiError(403, "second_factor_required", "sign in with your second factor to change this organisation")
    return principal, manager


def _policy(p: Policy) -> PolicyResponse:
    return PolicyResponse(
        required=p.required,
        roles=sorted(p.roles),
        totp_only_roles=sorted(p.totp_only_roles),
        grace_days=p.grace_days,
        reminder_days=list(p.reminder_days),
        escalate=p.escalate,
        after_deadline=p.after_deadline,
        disable_grace_days=p.disable_grace_days,
        enabled_at=p.enabled_at,
    )


@router.get("/orgs/{slug}/2fa-policy", response_model=PolicyResponse)
def read_policy(slug: Slug, ctx: CtxDep) -> PolicyResponse:
    """The organisation's 2FA policy (the default one until an owner or admin changes it)."""
    with ctx.unit() as s:
        return _policy(get_policy(s, managed_by_caller(s, ctx.principal(s, api_key=True), slug).org))


@router.put("/orgs/{slug}/2fa-policy", response_model=PolicyResponse)
def update_policy(slug: Slug, body: PolicyUpdate, ctx: CtxDep) -> PolicyResponse:
    """Change the policy; only the fields sent change. Audited; the owners and admins are emailed. Needs a signed-in
    session, not an API key."""
    with ctx.unit() as s:
        principal, manager = _governed(s, ctx, slug)
        org = manager.org
        changes = body.model_dump(exclude_none=True)
        return _policy(set_policy(s, org, changes, actor=f"user:{principal.user.email}", clock=ctx.clock))


@router.get("/orgs/{slug}/2fa-coverage", response_model=CoverageResponse)
def coverage(slug: Slug, ctx: CtxDep) -> CoverageResponse:
    """Who is enrolled now, by role and overall; members of SSO organisations are counted apart."""
    with ctx.unit() as s:
        summary = coverage_summary.summary(
            s, managed_by_caller(s, ctx.principal(s, api_key=True), slug).org, ctx.clock.now()
        )
    return CoverageResponse(**asdict(summary))


@router.get("/orgs/{slug}/members", response_model=MembersResponse)
def list_members(
    slug: Slug,
    ctx: CtxDep,
    verdict: Literal["compliant", "exempt", "pending", "overdue"] | None = None,
    role: Literal["owner", "admin", "super_admin", "finance", "member"] | None = None,
    page: Page = 1,
    per_page: PerPage = 50,
    format: Literal["json", "csv"] = "json",
) -> MembersResponse | Response:
    """Each member's 2FA state: method, verdict, deadline, reminders sent, last sign-in (and last with a second
    factor). ``format=csv``: the same rows as CSV (every page)."""
    with ctx.unit() as s:
        org = managed_by_caller(s, ctx.principal(s, api_key=True), slug).org
        if format == "csv":
            rows = org_members.member_rows(s, org.id, ctx.clock.now(), verdict=verdict, role=role)
            body = csv_text(org_members.EXPORTED, ([getattr(r, c) for c in org_members.EXPORTED] for r in rows))
            headers = {"Content-Disposition": f'attachment; filename="{org.slug}-members.csv"'}
            return Response(body, media_type="text/csv; charset=utf-8", headers=headers)
        found = org_members.members_page(
            s, org.id, ctx.clock.now(), verdict=verdict, role=role, page=page, per_page=per_page
        )
    return MembersResponse(
        org=org.slug,
        total=found.total,
        page=found.page,
        per_page=found.per_page,
        members=[MemberOut(**{k: v for k, v in asdict(r).items() if k in MemberOut.model_fields}) for r in found.rows],
    )


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("/orgs/{slug}/audit", response_model=AuditResponse)
def audit_log(
    slug: Slug,
    ctx: CtxDep,
    event: Annotated[str | None, Query(max_length=50)] = None,
    member: Annotated[str | None, Query(max_length=320, description="A member's email")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> AuditResponse:
    """The organisation's audit trail, newest first: its own events and those of its members' accounts, each with
    who acted, with which credential and from where. Times without a zone are UTC."""
    filters = audit_trail.Filters(event=event, member=member, since=_utc(since), until=_utc(until))
    with ctx.unit() as s:
        org = managed_by_caller(s, ctx.principal(s, api_key=True), slug).org
        rows, total = audit_trail.page(s, org.id, filters, page=page, per_page=per_page)
    return AuditResponse(
        org=org.slug,
        total=total,
        page=page,
        per_page=per_page,
        events=[AuditRowOut(**{k: v for k, v in asdict(r).items() if k in AuditRowOut.model_fields}) for r in rows],
    )


@router.post("/orgs/{slug}/members/{user_id}/reset-2fa", response_model=ResetResponse)
def reset_member(slug: Slug, user_id: PathId, body: ResetRequest, ctx: CtxDep) -> ResetResponse:
    """Turn a member's 2FA off (a lost device and backup codes), with a reason. Owners reset anyone; admins reset
    members, not owners or other admins. Audited; the member is emailed and signed out everywhere; the owners and
    admins are emailed."""
    with ctx.unit() as s:
        principal, manager = _governed(s, ctx, slug)
        role = s.execute(
            select(Membership.role).where(Membership.org_id == manager.org.id, Membership.user_id == user_id)
        ).scalar_one_or_none()
        member = s.get(User, user_id) if role is not None else None
        if role is None or member is None:
            raise ApiError(404, "not_found", f"no member {user_id} in {slug!r}")
        if user_id == principal.user.id:
            raise ApiError(403, "own_account", "turn your own 2FA off with POST /auth/2fa/disable")
        if not org_members.may_reset(manager, role):
            raise ApiError(403, "forbidden", "an admin resets members, not owners or other admins")
        manage.admin_reset(
            s, member, org_id=manager.org.id, admin_email=principal.user.email, reason=body.reason, clock=ctx.clock
        )
        told = notices.member_reset(s, member.id, by=f"{principal.user.email} ({manager.role})", clock=ctx.clock)
        return ResetResponse(user_id=member.id, email=member.email, status="reset", admins_notified=told)
