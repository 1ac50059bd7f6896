"""An organisation's 2FA policy and coverage, for its owners and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import Ctx, Principal, get_ctx
from api.errors import ApiError
from api.routing import Router
from api.schemas import CoverageResponse, PolicyResponse, PolicyUpdate
from policies.rules import Policy, get_policy, set_policy
from reports import compute
from reports.extract import members
from twofa import accounts
from twofa.models import Membership, Organization

# Coverage builds a pandas frame of every member: slow for a big organisation, so off the sign-in slots.
router = Router(tags=["organisations"], limited=False)
CtxDep = Annotated[Ctx, Depends(get_ctx)]
Slug = Annotated[str, Path(min_length=1, max_length=63)]
MANAGERS = ("owner", "admin", "super_admin")


def _managed_org(s: Session, principal: Principal, slug: str) -> Organization:
    org = accounts.get_org(s, slug)
    role = None
    if org is not None:
        role = s.execute(
            select(Membership.role).where(Membership.org_id == org.id, Membership.user_id == principal.user.id)
        ).scalar_one_or_none()
    if org is None or role not in MANAGERS:
        # The same answer for "no such organisation" and "not yours": slugs are not enumerable.
        raise ApiError(404, "not_found", f"no organisation {slug!r} that you manage")
    return org


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
        return _policy(get_policy(s, _managed_org(s, ctx.principal(s, api_key=True), slug)))


@router.put("/orgs/{slug}/2fa-policy", response_model=PolicyResponse)
def update_policy(slug: Slug, body: PolicyUpdate, ctx: CtxDep) -> PolicyResponse:
    """Change the policy; only the fields sent change. Audited."""
    with ctx.unit() as s:
        principal = ctx.principal(s, api_key=True)
        org = _managed_org(s, principal, slug)
        changes = body.model_dump(exclude_none=True)
        return _policy(set_policy(s, org, changes, actor=f"user:{principal.user.email}", clock=ctx.clock))


@router.get("/orgs/{slug}/2fa-coverage", response_model=CoverageResponse)
def coverage(slug: Slug, ctx: CtxDep) -> CoverageResponse:
    """Who is enrolled now, by role and overall; members of SSO organisations are counted apart."""
    with ctx.unit() as s:
        org = _managed_org(s, ctx.principal(s, api_key=True), slug)
        frame = members(s, org, ctx.clock.now())
    by_role = compute.coverage_by_role(frame)
    in_scope = int(by_role["in_scope"].sum())
    enrolled = int(by_role["enrolled"].sum())
    return CoverageResponse(
        org=slug,
        members=len(frame),
        in_scope=in_scope,
        enrolled=enrolled,
        sso_managed=int(by_role["sso_managed"].sum()),
        coverage_pct=round(100 * enrolled / in_scope, 1) if in_scope else None,
        non_compliant=int(frame["verdict"].isin(["pending", "overdue"]).sum()),
        overdue=int(frame["verdict"].eq("overdue").sum()),
        by_role=[
            {
                "role": role,
                **{k: int(v) for k, v in row.items() if k != "coverage"},
                "coverage": None if row["coverage"] != row["coverage"] else float(row["coverage"]),
            }
            for role, row in by_role.iterrows()
        ],
    )
