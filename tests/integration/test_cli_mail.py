"""Mail written by a command run by hand goes out at once through the running worker, as the API's does.

No beat runs here, so no outbox sweep: a message that arrives was handed to the queue by the command itself."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import ROOT, SmtpServer, Worker, refusing_port, wait_for
from tests.helpers import enrol_totp, make_user
from twofa.clock import FrozenClock
from twofa.models import OutboxMessage

pytestmark = pytest.mark.integration
WITHIN = 10.0  # seconds from the command's return to the SMTP server's receipt


def twofa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_reminders_run_by_hand_is_delivered_by_the_running_worker(
    worker: Worker, worker_env: dict[str, str], it_factory: sessionmaker[Session], smtp: SmtpServer
) -> None:
    make_user(it_factory, "owner@acme.io", role="owner", clock=FrozenClock(datetime.now(UTC)))
    done = twofa(worker_env, "reminders", "run")
    returned = time.monotonic()
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines() == [
        "wrote policy_reminder    start      to owner@acme.io",
        "1 email(s) written to the outbox; 0 due but written by an earlier run",
        "mail: 1 email handed to the queue; a worker sends it",
    ]
    wait_for(lambda: smtp.to("owner@acme.io"), WITHIN, what="the reminder")
    [received] = smtp.to("owner@acme.io")
    assert received.at - returned < WITHIN
    with it_factory() as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.to_address == "owner@acme.io")).scalar_one()
        assert (row.template, row.status) == ("policy_reminder", "sent")
        assert received.message["Message-ID"] == row.message_id


def test_support_reset_by_hand_mails_the_user_through_the_running_worker(
    worker: Worker, worker_env: dict[str, str], it_factory: sessionmaker[Session], smtp: SmtpServer
) -> None:
    clock = FrozenClock(datetime.now(UTC))
    user = make_user(it_factory, "ann@acme.io", role="member", clock=clock)
    enrol_totp(it_factory, user, clock)  # its "2FA turned on" mail goes through the worker as well
    wait_for(lambda: len(smtp.to("ann@acme.io")) == 1, WITHIN, what="the 2FA-enabled mail")
    done = twofa(
        worker_env, "support", "reset-2fa", "--email", "ann@acme.io", "--operator", "carol", "--reason", "lost phone"
    )
    returned = time.monotonic()
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert done.stdout.splitlines() == [
        "2FA reset for ann@acme.io; audited",
        "mail: 1 email handed to the queue; a worker sends it",
    ]
    wait_for(lambda: len(smtp.to("ann@acme.io")) == 2, WITHIN, what="the reset mail")
    reset = smtp.to("ann@acme.io")[1]
    assert reset.at - returned < WITHIN
    with it_factory() as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.template == "twofa_reset_by_support")).scalar_one()
        assert row.status == "sent" and reset.message["Message-ID"] == row.message_id


def test_without_a_broker_the_command_says_the_sweeper_will_send_it(
    worker_env: dict[str, str], it_factory: sessionmaker[Session], smtp: SmtpServer
) -> None:
    make_user(it_factory, "owner@acme.io", role="owner", clock=FrozenClock(datetime.now(UTC)))
    env = {k: v for k, v in worker_env.items() if k != "TWOFA_BROKER_URL"}
    done = twofa(env, "reminders", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "mail: 1 email waits in the outbox (no broker is configured, TWOFA_BROKER_URL); "
        "the beat's outbox sweeper will send it"
    )
    with it_factory() as s:
        row = s.execute(select(OutboxMessage)).scalar_one()
        assert row.status == "queued"
    assert not smtp.received


def test_a_broker_that_does_not_answer_leaves_the_mail_to_the_sweeper_and_says_so(
    worker_env: dict[str, str], it_factory: sessionmaker[Session]
) -> None:
    make_user(it_factory, "owner@acme.io", role="owner", clock=FrozenClock(datetime.now(UTC)))
    with refusing_port() as port:
        done = twofa(worker_env | {"TWOFA_BROKER_URL": f"redis://127.0.0.1:{port}/0"}, "reminders", "run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "mail: 1 email waits in the outbox (the broker did not take it); the beat's outbox sweeper will send it"
    )
    with it_factory() as s:
        assert s.execute(select(OutboxMessage.status)).scalar_one() == "queued"
