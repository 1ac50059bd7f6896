"""``/orgs/{slug}/security``, for an organisation's owners and admins: coverage and its trend, the members, the
policy, the weekly reports."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Form, Path
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.routing import Router
from policies import members as org_members
from policies.members import EXPORTED, MemberRow, member_rows
from policies.rules import AFTER_DEADLINE, get_policy, set_policy
from reports import coverage
from reports.build import build
from reports.csv_export import csv_text
from reports.models import WeeklyReport
from reports.week import IsoWeek
from twofa import second_factor
from twofa.errors import DomainError, InvalidInput
from twofa.models import Organization, Role, User
from twofa.throttle import lock_user
from web.pages import Web, WebError, get_web

# The coverage figures and the chart build pandas frames of every member: slow reads, off the sign-in slots.
router = Router(include_in_schema=False, limited=False)
WebDep = Annotated[Web, Depends(get_web)]
Slug = Annotated[str, Path(min_length=1, max_length=63)]
Field = Annotated[str, Form(max_length=1024)]
ROLES = [r.value for r in Role]
NON_COMPLIANT = ("pending", "overdue")
REPORT_FILE = re.compile(r"report\.html|[a-z_]+\.csv")


def _managed(s: Session, web: Web, slug: str) -> tuple[Organization, User]:
    _, user = web.signed_in(s)
    manager = org_members.managed_org(s, user.id, slug)
    if manager is None:
        # One answer for "no such organisation" and "not yours": slugs are not enumerable.
        raise WebError(404, "No organisation by that name that you manage.")
    return manager.org, user


def _coverage(s: Session, org: Organization, now: datetime) -> dict[str, Any]:
    summary = coverage.summary(s, org, now)
    return {
        "members": summary.members,
        "in_scope": summary.in_scope,
        "enrolled": summary.enrolled,
        "pct": round(summary.coverage_pct) if summary.coverage_pct is not None else None,
        "non_compliant": summary.non_compliant,
        "by_role": [r for r in summary.by_role if r.members],
    }


def _members(s: Session, org: Organization, now: datetime, only_noncompliant: bool) -> list[MemberRow]:
    rows = member_rows(s, org.id, now)
    return [r for r in rows if r.verdict in NON_COMPLIANT] if only_noncompliant else rows


def _page(web: Web, s: Session, org: Organization, status: int = 200, **extra: Any) -> Response:
    now = web.ctx.clock.now()
    only = web.request.query_params.get("show") == "noncompliant"
    reports = s.execute(
        select(WeeklyReport.week)
        .where(WeeklyReport.org_id == org.id, WeeklyReport.status == "done")
        .order_by(WeeklyReport.week.desc())
        .limit(12)
    ).scalars()
    files = {}
    for week in reports:
        directory = web.ctx.settings.reports_dir / org.slug / week
        if directory.is_dir():
            files[week] = sorted(p.name for p in directory.iterdir() if REPORT_FILE.fullmatch(p.name))
    return web.render(
        "org.html",
        status,
        org=org,
        coverage=_coverage(s, org, now),
        members=_members(s, org, now, only),
        only_noncompliant=only,
        policy=get_policy(s, org),
        roles=ROLES,
        after_deadline=AFTER_DEADLINE,
        reports=files,
        saved=web.request.query_params.get("saved") == "1",
        **extra,
    )


@router.get("/orgs/{slug}/security")
def org_page(slug: Slug, web: WebDep) -> Response:
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        return _page(web, s, org)


@router.get("/orgs/{slug}/security/trend.png")
def trend_chart(slug: Slug, web: WebDep) -> Response:
    """The weekly report's chart, up to the current week."""
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        png = build(s, org, IsoWeek.containing(web.ctx.clock.now()), web.ctx.clock.now()).chart_png
    return web.finish(Response(png, media_type="image/png"))


@router.get("/orgs/{slug}/security/members.csv")
def members_csv(slug: Slug, web: WebDep) -> Response:
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        rows = _members(s, org, web.ctx.clock.now(), web.request.query_params.get("show") == "noncompliant")
    body = csv_text(EXPORTED, ([getattr(r, c) for c in EXPORTED] for r in rows)).encode()
    name = f"{org.slug}-members-{web.ctx.clock.now():%Y-%m-%d}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return web.finish(Response(body, media_type="text/csv; charset=utf-8", headers=headers))


@router.get("/orgs/{slug}/security/reports/{week}/{name}")
def report_file(
    slug: Slug, week: Annotated[str, Path(max_length=8)], name: Annotated[str, Path(max_length=64)], web: WebDep
) -> Response:
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
    try:
        parsed = IsoWeek.parse(week)
    except DomainError:
        raise WebError(404, "No such report.") from None
    path = web.ctx.settings.reports_dir / org.slug / str(parsed) / name
    if not REPORT_FILE.fullmatch(name) or not path.is_file():
        raise WebError(404, "No such report.")
    kind = "text/html" if name.endswith(".html") else "text/csv"
    headers = {"Content-Disposition": f'attachment; filename="{org.slug}-{parsed}-{name}"'}
    return web.finish(Response(path.read_bytes(), media_type=f"{kind}; charset=utf-8", headers=headers))


def _days(text: str) -> list[int]:
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise InvalidInput("reminder days are whole numbers of days before the deadline, e.g. 7, 3, 1")
    return [int(p) for p in parts]


@router.post("/orgs/{slug}/security/policy")
def save_policy(
    slug: Slug,
    web: WebDep,
    csrf: Field = "",
    required: Field = "",
    roles: Annotated[list[str], Form(max_length=5)] = [],  # noqa: B006  (FastAPI copies defaults)
    totp_only_roles: Annotated[list[str], Form(max_length=5)] = [],  # noqa: B006
    grace_days: Field = "",
    reminder_days: Field = "",
    after_deadline: Field = "",
    password: Field = "",
    code: Field = "",
) -> Response:
    web.check_csrf(csrf)
    web.limit_auth()
    error: DomainError | None = None
    try:
        with web.ctx.unit() as s:
            org, user = _managed(s, web, slug)
            if not grace_days.strip().isdigit() or len(grace_days.strip()) > 3:
                raise InvalidInput("the grace period is a whole number of days (0 to 365)")
            changes: dict[str, Any] = {
                "required": required == "on",
                "roles": roles,
                "totp_only_roles": totp_only_roles,
                "grace_days": int(grace_days),
                "reminder_days": _days(reminder_days),
                "after_deadline": after_deadline,
            }
            # A change to how the organisation is protected needs the person: password, and a code with 2FA on.
            second_factor.confirm_person(s, lock_user(s, user.id), password, code.strip() or None, clock=web.ctx.clock)
            set_policy(s, org, changes, actor=f"user:{user.email}", clock=web.ctx.clock)
            return web.redirect(f"/orgs/{org.slug}/security?saved=1")
    except DomainError as exc:
        web.ctx.failed(exc)
        error = exc
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        return _page(web, s, org, error.status, error=error.message)
