"""A report's period: Monday to Sunday, the current week to date, a week not begun refused; the people behind
privileged sign-ins without 2FA; reminders up to the week's end; CSV cells that a spreadsheet cannot run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from policies.reminders import REMINDER
from reports.build import build, claim
from reports.models import WeeklyReport
from reports.week import IsoWeek, WeekNotBegun, WeekNotOver
from tests.helpers import make_user
from tests.reports.test_weekly import W49, acme, csv, report
from twofa import outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend
from twofa.models import Organization, User

__all__ = ["acme"]  # the fixture, shared with test_weekly


def test_a_week_reads_monday_to_sunday_and_counts_the_people(
    factory: sessionmaker[Session], acme: dict[str, User]
) -> None:
    r = report(factory, "acme")
    assert "Week 2026-W49: Monday 30 November 2026 to Sunday 6 December 2026 (UTC)." in r.html
    assert r.period == "Monday 30 November 2026 to Sunday 6 December 2026 (UTC)"
    assert "<td>2026-W49</td><td>30 Nov to 6 Dec</td>" in r.html
    assert "to date" not in r.html and r.summary["partial"] is False
    # finance signed in twice with the password alone: two sign-ins, one person
    assert (r.summary["privileged_unverified_logins"], r.summary["privileged_unverified_members"]) == (2, 1)
    assert "Privileged sign-ins without a second factor: 2 by 1 person" in r.html


def test_the_current_week_is_partial_and_a_future_week_is_refused(
    factory: sessionmaker[Session], acme: dict[str, User]
) -> None:
    with factory() as s:
        org = s.execute(select(Organization).where(Organization.slug == "acme")).scalar_one()
        sunday = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC)  # the week's last sign-in is this second
        r = build(s, org, W49, sunday)
        with pytest.raises(WeekNotBegun) as refused:
            build(s, org, IsoWeek(2026, 50), sunday)
    assert r.summary["partial"] is True and r.summary["as_of"] == "2026-12-06T23:59:59Z"
    assert (
        "Week 2026-W49 to date: Monday 30 November 2026 to Sunday 6 December 2026, 23:59 UTC"
        " (the week ends on Sunday 6 December 2026)." in r.html
    )
    assert "This week is not over: the figures are to date" in r.html
    assert "<td>2026-W49 (to date)</td>" in r.html and "Sign-ins this week to date" in r.html
    assert r.summary["logins"] == 7
    assert str(refused.value) == (
        "week 2026-W50 has not begun: it starts on Monday 7 December 2026 (this is week 2026-W49)"
    )
    assert refused.value.code == "week_not_begun"


def test_the_mailed_job_takes_only_a_week_that_is_over(
    factory: sessionmaker[Session], acme: dict[str, User], mailbox: MemoryBackend
) -> None:
    with factory() as s:
        org_id = s.execute(select(Organization.id).where(Organization.slug == "acme")).scalar_one()
    sent = len(mailbox.sent)
    sunday = FrozenClock(datetime(2026, 12, 6, 23, 59, tzinfo=UTC))
    for week, error in ((W49, WeekNotOver), (IsoWeek(2026, 50), WeekNotBegun)):
        with pytest.raises(error), transaction(factory) as s:
            claim(s, org_id, week, sunday.now())
    with factory() as s:
        assert s.execute(select(func.count()).select_from(WeeklyReport)).scalar_one() == 0
    assert len(mailbox.sent) == sent


def test_reminders_are_counted_up_to_the_weeks_end(factory: sessionmaker[Session], acme: dict[str, User]) -> None:
    finance = acme["finance"]
    context = {"org_name": "acme", "role": "finance", "deadline": "x", "days_left": 0, "email_allowed": True}
    for at in (datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 8, tzinfo=UTC)):
        with transaction(factory) as s:
            org_id = s.execute(select(Organization.id).where(Organization.slug == "acme")).scalar_one()
            outbox.enqueue(
                s,
                template=REMINDER,
                to=finance.email,
                context=context,
                user_id=finance.id,
                org_id=org_id,
                clock=FrozenClock(at),
            )
    # Built on Tuesday 8 December 12:00: the reminder of 2 December counts, those of Monday 7 and Tuesday 8 not
    with factory() as s:
        org = s.get(Organization, org_id)
        assert org is not None
        r = build(s, org, W49, datetime(2026, 12, 8, 12, tzinfo=UTC))
    assert csv(r, "non_compliant.csv")[["email", "reminders_sent"]].values.tolist() == [["finance@acme.io", 1]]


def test_report_csv_cells_cannot_run_as_formulas(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    clock.set(datetime(2026, 11, 1, tzinfo=UTC))
    for address in ("=1+2@evil.io", "+1@evil.io", "-1@evil.io", "plain@evil.io"):
        make_user(factory, address, org="evil", role="finance", clock=clock)
    r = report(factory, "evil")
    assert csv(r, "non_compliant.csv")["email"].tolist() == [
        "'+1@evil.io",
        "'-1@evil.io",
        "'=1+2@evil.io",
        "plain@evil.io",
    ]
    assert sorted(csv(r, "activity.csv")["email"]) == ["'+1@evil.io", "'-1@evil.io", "'=1+2@evil.io", "plain@evil.io"]
    assert "<td>=1+2@evil.io</td>" in r.html  # the HTML shows the address as it is
