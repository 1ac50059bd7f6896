"""``/orgs/{slug}/security``, for an organisation's owners and admins: coverage and its trend, the members, the
policy, the weekly reports."""

from __future__ import annotations

import csv
import io
import re
from typing import Annotated, Any

from fastapi import Depends, Form, Path
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.routing import Router
from policies.rules import AFTER_DEADLINE, get_policy, set_policy
from reports import compute
from reports.build import build
from reports.models import WeeklyReport
from reports.week import IsoWeek
from twofa import accounts
from twofa.errors import DomainError, InvalidInput
from twofa.models import Membership, Organization, Role, User
from web import reauth
from web.members import NON_COMPLIANT, MemberRow, members_of
from web.pages import Web, WebError, get_web
from web.settings import MANAGERS

# The coverage figures and the chart build pandas frames of every member: slow reads, off the sign-in slots.
router = Router(include_in_schema=False, limited=False)
WebDep = Annotated[Web, Depends(get_web)]
Slug = Annotated[str, Path(min_length=1, max_length=63)]
Field = Annotated[str, Form(max_length=1024)]
ROLES = [r.value for r in Role]
REPORT_FILE = re.compile(r"report\.html|[a-z_]+\.csv")


def _managed(s: Session, web: Web, slug: str) -> tuple[Organization, User]:
    _, user = web.signed_in(s)
    org = accounts.get_org(s, slug)
    role = None
    if org is not None:
        role = s.execute(
            select(Membership.role).where(Membership.org_id == org.id, Membership.user_id == user.id)
        ).scalar_one_or_none()
    if org is None or role not in MANAGERS:
        # One answer for "no such organisation" and "not yours": slugs are not enumerable.
        raise WebError(404, "No organisation by that name that you manage.")
    return org, user


def _coverage(frame: Any) -> dict[str, Any]:
    by_role = compute.coverage_by_role(frame)
    in_scope, enrolled = int(by_role["in_scope"].sum()), int(by_role["enrolled"].sum())
    return {
        "members": len(frame),
        "in_scope": in_scope,
        "enrolled": enrolled,
        "pct": round(100 * enrolled / in_scope) if in_scope else None,
        "non_compliant": int(frame["verdict"].isin(NON_COMPLIANT).sum()) if len(frame) else 0,
        "by_role": [
            {"role": role, "in_scope": int(row["in_scope"]), "enrolled": int(row["enrolled"])}
            for role, row in by_role.iterrows()
            if int(row["members"])
        ],
    }


def _page(web: Web, s: Session, org: Organization, status: int = 200, **extra: Any) -> Response:
    frame, rows = members_of(s, org, web.ctx.clock.now())
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
        coverage=_coverage(frame),
        members=[r for r in rows if not r.compliant] if only else rows,
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


def _csv(rows: list[MemberRow]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "role", "method", "verdict", "reason", "deadline", "reminders_sent", "last_sign_in"])
    for r in rows:
        when = [f"{t:%Y-%m-%dT%H:%M:%SZ}" if t else "" for t in (r.deadline, r.last_sign_in)]
        method, reason = r.method or "", r.reason or ""
        writer.writerow([r.email, r.role, method, r.verdict, reason, when[0], r.reminders_sent, when[1]])
    return out.getvalue().encode()


@router.get("/orgs/{slug}/security/members.csv")
def members_csv(slug: Slug, web: WebDep) -> Response:
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        _, rows = members_of(s, org, web.ctx.clock.now())
    if web.request.query_params.get("show") == "noncompliant":
        rows = [r for r in rows if not r.compliant]
    name = f"{org.slug}-members-{web.ctx.clock.now():%Y-%m-%d}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return web.finish(Response(_csv(rows), media_type="text/csv; charset=utf-8", headers=headers))


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
            if user.twofa_method is not None:
                reauth.confirm_person(s, user, password, code.strip(), web.ctx.clock)
            else:
                reauth.check_password(user, password)
            set_policy(s, org, changes, actor=f"user:{user.email}", clock=web.ctx.clock)
            return web.redirect(f"/orgs/{org.slug}/security?saved=1")
    except DomainError as exc:
        error = exc
    with web.ctx.unit() as s:
        org, _ = _managed(s, web, slug)
        return _page(web, s, org, error.status, error=error.message)
