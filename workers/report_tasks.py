"""Weekly reports: a Monday job fans out one task per organisation on the ``reports`` queue.

The report modules (pandas, matplotlib) are imported inside the tasks: a worker that serves only the ``otp`` or
``mail`` queues never loads them, so it starts fast and stays small.
"""

from __future__ import annotations

from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction
from workers.app import app


@app.task(name="twofa.report.weekly_all")
def weekly_all() -> int:
    from reports.build import organisations
    from reports.week import IsoWeek

    week = IsoWeek.last_complete(SYSTEM_CLOCK.now())
    with transaction() as session:
        org_ids = organisations(session)
    for org_id in org_ids:
        weekly_org.apply_async(args=(org_id, str(week)), queue="reports")
    return len(org_ids)


@app.task(name="twofa.report.weekly_org", soft_time_limit=1800, time_limit=1900)
def weekly_org(org_id: int, week: str) -> str:
    from reports.build import build_and_send, claim
    from reports.week import IsoWeek

    with transaction() as session:  # committed before the slow build, so that other workers see the claim
        claimed = claim(session, org_id, IsoWeek.parse(week), SYSTEM_CLOCK.now())
        report_id = claimed.id if claimed is not None else None
    if report_id is None:
        return "skipped"
    with transaction() as session:
        return build_and_send(session, report_id)
