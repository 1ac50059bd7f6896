"""Mail that a task writes (here a policy reminder) reaches the SMTP server through the queue, with a worker started
as ``twofa worker`` or as plain ``celery -A workers worker``: no outbox sweep runs here (no beat), so the mail can
only have been handed to the queue after the task's commit."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import SmtpServer, Worker, wait_for
from tests.helpers import make_user
from twofa.clock import FrozenClock
from twofa.models import OutboxMessage

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("twofa", [True, False], ids=["twofa-worker", "celery-A-workers"])
def test_mail_written_by_a_task_is_queued_after_its_commit(
    twofa: bool,
    worker_env: dict[str, str],
    tmp_path: Path,
    it_factory: sessionmaker[Session],
    smtp: SmtpServer,
    client_app: Celery,
) -> None:
    make_user(it_factory, "admin@acme.io", role="admin", clock=FrozenClock(datetime.now(UTC)))
    worker = Worker(env=worker_env, log_path=tmp_path / "worker.log", app="workers", twofa=twofa).start()
    try:
        client_app.send_task("twofa.enforce_policies", queue="scheduled")
        wait_for(lambda: any("admin@acme.io" in r.recipients for r in smtp.received), 30, what="the reminder")
    finally:
        worker.stop()
    with it_factory() as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.to_address == "admin@acme.io")).scalar_one()
        assert (row.template, row.status) == ("policy_reminder", "sent")
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
