"""Building a report once per organisation and week, and mailing it to the organisation's owners and admins."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from reports.extract import extract
from reports.models import WeeklyReport
from reports.render import CHART_CID, Rendered, render, summarise
from reports.week import IsoWeek
from twofa import outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import conflict_insert
from twofa.models import Membership, Organization, Role, User
from twofa.settings import get_settings

RECIPIENT_ROLES = (Role.OWNER.value, Role.ADMIN.value)
SUMMARY_IN_MAIL = (
    "coverage_pct",
    "enrolled",
    "in_scope",
    "logins",
    "verified",
    "verified_pct",
    "non_compliant",
    "privileged_unverified_logins",
    "privileged_unverified_members",
)
STALE_CLAIM = timedelta(minutes=30)  # a claim this old belongs to a build that died; another may take it over


def build(session: Session, org: Organization, week: IsoWeek, now: datetime) -> Rendered:
    """The report of ``week`` as of ``now``: the current week's is partial ("to date"); a week that has not begun
    is refused (``WeekNotBegun``)."""
    return render(extract(session, org, week, now))


def summary(session: Session, org: Organization, week: IsoWeek, now: datetime) -> dict[str, Any]:
    """The headline figures of ``week``'s report as of ``now``, as ``build`` gives them, without rendering."""
    return summarise(extract(session, org, week, now))


def write(rendered: Rendered, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "report.html"]
    paths[0].write_text(rendered.html, encoding="utf-8")
    for name, data in rendered.csv.items():
        path = directory / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def claim(session: Session, org_id: int, week: IsoWeek, now: datetime) -> WeeklyReport | None:
    """Take the right to build this report; None when it is built, or being built by someone else. Only a week
    that is over (``WeekNotOver``, ``WeekNotBegun``, before anything is written): a week is mailed once, so a report
    to date would stand in for the full one."""
    week.require_over(now)
    new_id = session.execute(
        conflict_insert(session, WeeklyReport)
        .values(org_id=org_id, week=str(week), status="building", claimed_at=now, summary={}, recipients=0)
        .on_conflict_do_nothing(index_elements=["org_id", "week"])
        .returning(WeeklyReport.id)
    ).scalar_one_or_none()
    if new_id is None:
        new_id = session.execute(
            update(WeeklyReport)
            .where(
                WeeklyReport.org_id == org_id,
                WeeklyReport.week == str(week),
                WeeklyReport.status == "building",
                WeeklyReport.claimed_at < now - STALE_CLAIM,
            )
            .values(claimed_at=now)
            .returning(WeeklyReport.id)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
    return session.get(WeeklyReport, new_id) if new_id is not None else None


def send(session: Session, org: Organization, rendered: Rendered, clock: Clock = SYSTEM_CLOCK) -> int:
    """One email per owner and admin, through the outbox: the report as the HTML body with its chart inline, the
    report file and its CSVs attached. Returns the count."""
    recipients = session.execute(
        select(User.id, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org.id, Membership.role.in_(RECIPIENT_ROLES))
        .order_by(User.email)
    ).all()
    s = rendered.summary
    context = {
        "org_name": org.name,
        "week": f"{s['week']} to date" if s["partial"] else s["week"],
        "period": rendered.period,
        **{k: s[k] for k in SUMMARY_IN_MAIL},
        "report_html": rendered.email_html,
        "inline_images": [
            {
                "cid": CHART_CID,
                "mimetype": "image/png",
                "filename": "trend.png",
                "content_base64": base64.b64encode(rendered.chart_png).decode(),
            }
        ],
        "attachments": [
            {"filename": "report.html", "mimetype": "text/html", "content": rendered.html},
            *(
                {"filename": name, "mimetype": "text/csv", "content": data.decode()}
                for name, data in rendered.csv.items()
            ),
        ],
    }
    for user_id, email in recipients:
        outbox.enqueue(
            session, template="weekly_report", to=email, context=context, user_id=user_id, org_id=org.id, clock=clock
        )
    return len(recipients)


def build_and_send(session: Session, report_id: int, clock: Clock = SYSTEM_CLOCK) -> str:
    """Build a claimed report (``claim``, committed first so that other workers see it before the slow build),
    store its summary and mail it, in the caller's transaction."""
    row = session.get_one(WeeklyReport, report_id)
    org = session.get(Organization, row.org_id)
    if org is None:
        return "skipped"
    week = IsoWeek.parse(row.week)
    rendered = build(session, org, week, clock.now())
    write(rendered, get_settings().reports_dir / org.slug / str(week))  # an archive beside the emails
    row.recipients = send(session, org, rendered, clock)
    row.summary = rendered.summary
    row.status = "done"
    row.finished_at = clock.now()
    return "built"


def organisations(session: Session) -> list[int]:
    return list(session.execute(select(Organization.id).order_by(Organization.id)).scalars())
