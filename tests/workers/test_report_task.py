"""The weekly report task refuses a week that has not begun, or is not over, and writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from reports.models import WeeklyReport
from reports.week import IsoWeek, WeekNotBegun, WeekNotOver
from tests.helpers import make_user
from twofa.clock import SYSTEM_CLOCK, FrozenClock
from twofa.models import Organization
from twofa.settings import get_settings
from workers.report_tasks import weekly_org


def test_the_task_refuses_a_week_not_begun_or_not_over(
    factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWOFA_DATABASE_URL", db_url)
    get_settings.cache_clear()
    make_user(factory, "owner@acme.io", role="owner", clock=FrozenClock(datetime(2026, 11, 1, tzinfo=UTC)))
    with factory() as s:
        org_id = s.execute(select(Organization.id)).scalar_one()
    with pytest.raises(WeekNotBegun, match=r"^week 2099-W01 has not begun: it starts on Monday 29 December 2098"):
        weekly_org.run(org_id, "2099-W01")
    this_week = str(IsoWeek.containing(SYSTEM_CLOCK.now()))
    with pytest.raises(WeekNotOver, match=rf"^week {this_week} is not over until the end of Sunday"):
        weekly_org.run(org_id, this_week)
    with factory() as s:
        assert s.execute(select(func.count()).select_from(WeeklyReport)).scalar_one() == 0
