"""An organisation's weekly coverage report, for its owners and admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from api.context import Ctx, get_ctx
from api.routes.orgs import Slug, managed_by_caller
from api.routing import Router
from api.schemas import WeeklyReportResponse
from reports.build import summary
from reports.week import IsoWeek

# A report reads a week of sign-ins and evaluates every member: off the sign-in slots, as coverage is.
router = Router(tags=["organisations"], limited=False)
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.get("/orgs/{slug}/reports/weekly", response_model=WeeklyReportResponse)
def weekly_report(
    slug: Slug,
    ctx: CtxDep,
    week: Annotated[str | None, Query(max_length=16, description="ISO week, e.g. 2026-W47")] = None,
) -> WeeklyReportResponse:
    """The figures of a week's report, Monday to Sunday (UTC): by default the last complete week; the current
    week's are to date (``partial``); a week that has not begun is refused (``week_not_begun``)."""
    now = ctx.clock.now()
    iso = IsoWeek.parse(week) if week is not None else IsoWeek.last_complete(now)
    with ctx.unit() as s:
        org = managed_by_caller(s, ctx.principal(s, api_key=True), slug).org
        return WeeklyReportResponse(**summary(s, org, iso, now))
