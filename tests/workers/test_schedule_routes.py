"""Where each task goes and when beat starts it: the queues decide which worker runs what (email codes never wait
behind reports), and the schedule is what keeps codes expiring and lost mail moving."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.schedules import crontab

from workers.app import app


def queue_of(task: str) -> str:
    route = app.amqp.router.route({}, task)
    return str(route["queue"].name)


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("twofa.deliver_email", "mail"),  # email codes go to "otp", named by the dispatcher itself
        ("twofa.deliver_email_batch", "mail"),
        ("twofa.expire_codes", "scheduled"),
        ("twofa.sweep_outbox", "scheduled"),
        ("twofa.enforce_policies", "scheduled"),
        ("twofa.report.weekly_all", "reports"),
        ("twofa.report.weekly_org", "reports"),
    ],
)
def test_every_task_has_its_queue(task: str, queue: str) -> None:
    app.loader.import_default_modules()
    assert task in app.tasks
    assert queue_of(task) == queue


def test_the_beat_schedule() -> None:
    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    every = {name: entry["schedule"] for name, entry in schedule.items()}
    assert every["expire-codes"] == every["sweep-outbox"] == 60.0  # codes expire and lost mail moves every minute
    assert every["enforce-policies"] == 900.0
    assert every["weekly-reports"] == crontab(minute="0", hour="6", day_of_week="1")  # Mondays, 06:00 UTC
    for entry in schedule.values():
        assert entry["task"] in app.tasks
        expires = entry.get("options", {}).get("expires")
        if isinstance(entry["schedule"], float):  # a run that could not start before the next one is dropped
            assert expires is not None and timedelta(seconds=expires) < timedelta(seconds=entry["schedule"])
