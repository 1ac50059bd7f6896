"""Queued email delivery through real processes: PostgreSQL, Redis, a Celery worker, an SMTP server.

The test process plays the API: it commits rows and publishes their ids; the worker is a separate process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.harness.services import RedisServer, SmtpServer, Worker, wait_for
from tests.helpers import PASSWORD, code_of, make_user
from twofa import email_otp, enrolment, logins, outbox
from twofa.clock import FrozenClock, SystemClock
from twofa.db import transaction
from twofa.models import AuditEvent, EmailOtp, OutboxMessage, User
from twofa.sessions import Client

pytestmark = pytest.mark.integration
CLOCK = SystemClock()
WEB = Client(ip="127.0.0.1", user_agent="integration")


def code_in(smtp: SmtpServer, to: str, index: int = -1) -> str:
    return code_of(smtp.to(to)[index].message)


def decoded(traffic: str) -> str:
    """The traffic plus every base64 message body in it, decoded (Celery base64-encodes task bodies)."""
    bodies = re.findall(r'body\\*": \\*"([A-Za-z0-9+/=]+)', traffic)
    return traffic + "\n" + "\n".join(base64.b64decode(b).decode(errors="replace") for b in bodies)


def arrivals(smtp: SmtpServer, to: str, count: int, timeout: float = 15) -> None:
    wait_for(lambda: len(smtp.to(to)) >= count, timeout, what=f"{count} message(s) to {to}")


def new_user(factory: sessionmaker[Session], email: str) -> User:
    return make_user(factory, email, clock=FrozenClock(datetime.now(UTC)))


def rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def drain(redis: RedisServer, factory: sessionmaker[Session], *, killed: int = 0, timeout: float = 30) -> None:
    """Until nothing is left to send: every row final, and no task waiting in a queue or held by a worker (Celery's
    Redis transport keeps a delivered task in ``unacked`` until it is acknowledged, after it ran). ``killed``: the
    tasks a killed worker left in ``unacked`` (they stay there until the visibility timeout)."""

    def settled() -> bool:
        return tasks_done(redis, killed) and all(r.status not in ("queued", "sending") for r in rows(factory))

    wait_for(settled, timeout, what="the queues drained and every row final")


def tasks_done(redis: RedisServer, killed: int = 0) -> bool:
    queued = sum(redis.client.llen(q) for q in ("otp", "mail", "scheduled"))
    return queued == 0 and redis.client.hlen("unacked") <= killed


def test_email_code_from_request_to_smtp_and_back(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, it_redis: RedisServer
) -> None:
    commands: list[str] = []
    stop = threading.Event()

    def monitor() -> None:  # every command Redis sees during the scenario
        with it_redis.client.monitor() as m:
            for command in m.listen():
                commands.append(str(command))
                if stop.is_set():
                    return

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    wait_for(lambda: any("O" in c["flags"] for c in it_redis.client.client_list()), 10, what="the monitor to listen")
    user = new_user(it_factory, "ema@example.com")
    started = time.monotonic()
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    arrivals(smtp, user.email, 1)
    first_latency = smtp.to(user.email)[0].at - started
    enrol_code = code_in(smtp, user.email)
    with transaction(it_factory) as s:
        enrolment.confirm_email(s, user, enrol_code, clock=CLOCK)
    arrivals(smtp, user.email, 2)  # "2FA is on"
    with it_factory() as s:  # skip the resend cooldown: age the enrolment code
        s.execute(EmailOtp.__table__.update().values(created_at=datetime.now(UTC) - timedelta(minutes=2)))
        s.commit()
    with transaction(it_factory) as s:
        challenge = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=CLOCK)
    assert isinstance(challenge, logins.SecondFactorRequired) and challenge.email_code_sent
    arrivals(smtp, user.email, 3)
    login_code = code_in(smtp, user.email)
    with transaction(it_factory) as s:
        done = logins.complete_login(s, challenge.challenge, login_code, WEB, gate=enrolment_required, clock=CLOCK)
    assert done.session.twofa_verified
    stop.set()
    it_redis.client.ping()  # wakes the monitor so it sees stop
    watcher.join(5)

    assert first_latency < 5
    message = smtp.to(user.email)[0].message
    assert message["From"] == "Wevion <noreply@wevion.ai>" and message["Message-ID"]
    assert message.is_multipart() and {p.get_content_type() for p in message.get_payload()} == {  # type: ignore[union-attr]
        "text/plain",
        "text/html",
    }
    traffic = decoded("\n".join(commands))
    assert "twofa.deliver_email" in traffic  # the monitor did see the task messages
    assert re.search(r"\[\[\d+\], \{\}", traffic), "the decoded task bodies carry only a row id"
    log = worker.log()
    for code in (enrol_code, login_code):
        assert code not in traffic, "an email code went through the broker"
        assert code not in log, "an email code is in the worker's log"
    assert all(r.status == "sent" for r in rows(it_factory))


def test_email_codes_use_the_otp_queue_only(
    it_factory: sessionmaker[Session], client_app: Celery, it_redis: RedisServer
) -> None:
    user = new_user(it_factory, "q@example.com")
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    with it_factory() as s:
        row_id = s.execute(select(OutboxMessage.id)).scalar_one()
    assert it_redis.client.llen("otp") == 1 and it_redis.client.llen("mail") == 0
    payload = it_redis.client.lindex("otp", 0)
    assert payload is not None
    message = json.loads(payload)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (message["headers"]["task"], args, kwargs) == ("twofa.deliver_email", [row_id], {})


def test_worker_killed_mid_delivery_then_restarted_delivers_once(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, client_app: Celery, it_redis: RedisServer
) -> None:
    smtp.handler.script.append("hold")
    user = new_user(it_factory, "kill@example.com")
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    assert smtp.handler.holding.wait(15), "the worker never reached DATA"
    worker.kill()
    killed = it_redis.client.hlen("unacked")
    assert smtp.handler.dropped.wait(10), "the SMTP server did not see the client go"
    assert smtp.to(user.email) == []
    worker.start()
    # The killed worker's message is unacknowledged in Redis; the sweeper re-sends the still-queued row once it is
    # older than the sweeper's grace (1 s here): we age the row rather than wait.
    with it_factory() as s:
        s.execute(OutboxMessage.__table__.update().values(created_at=datetime.now(UTC) - timedelta(seconds=2)))
        s.commit()
    client_app.send_task("twofa.sweep_outbox", queue="scheduled")
    arrivals(smtp, user.email, 1)
    client_app.send_task("twofa.sweep_outbox", queue="scheduled")  # a second sweep finds nothing to re-send
    drain(it_redis, it_factory, killed=killed)
    assert len(smtp.to(user.email)) == 1
    assert [r.status for r in rows(it_factory)] == ["sent"]
    with transaction(it_factory) as s:
        enrolment.confirm_email(s, user, code_in(smtp, user.email), clock=CLOCK)


def test_pool_child_killed_mid_delivery_is_redelivered_once(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, it_redis: RedisServer
) -> None:
    smtp.handler.script.append("hold")
    user = new_user(it_factory, "child@example.com")
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    assert smtp.handler.holding.wait(15)
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    assert smtp.handler.dropped.wait(10), "the SMTP server did not see the client go"
    # task_reject_on_worker_lost puts the message back at once; a fresh pool child delivers it.
    arrivals(smtp, user.email, 1, timeout=30)
    drain(it_redis, it_factory)
    assert len(smtp.to(user.email)) == 1
    assert [r.status for r in rows(it_factory)] == ["sent"]


def test_redis_flushed_while_rows_are_queued_then_the_sweeper_delivers(
    it_factory: sessionmaker[Session],
    smtp: SmtpServer,
    worker_env: dict[str, str],
    tmp_path,
    client_app: Celery,
    it_redis: RedisServer,
) -> None:
    users = [new_user(it_factory, f"flush{i}@example.com") for i in range(3)]
    for user in users:
        with transaction(it_factory) as s:
            enrolment.start_email(s, user, PASSWORD, CLOCK)
    assert it_redis.client.llen("otp") == 3
    it_redis.client.flushall()
    proc = Worker(env=worker_env, log_path=tmp_path / "w.log").start()
    try:
        time.sleep(1.5)
        assert smtp.received == []
        client_app.send_task("twofa.sweep_outbox", queue="scheduled")
        for user in users:
            arrivals(smtp, user.email, 1)
        drain(it_redis, it_factory)
        assert len(smtp.received) == 3
    finally:
        proc.stop()


def test_451_twice_then_250_is_delivered_once(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, it_redis: RedisServer
) -> None:
    smtp.handler.script.extend(["451 4.3.0 try again later", "451 4.3.0 try again later"])
    user = new_user(it_factory, "retry@example.com")
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    arrivals(smtp, user.email, 1, timeout=30)
    drain(it_redis, it_factory)
    assert smtp.handler.attempts == 3 and len(smtp.to(user.email)) == 1
    [row] = rows(it_factory)
    assert (row.status, row.attempts) == ("sent", 3)
    # Each attempt made a new code, so each is a new message: the row's Message-ID with a version of its own.
    base, _, domain = row.message_id.strip("<>").rpartition("@")
    ids = smtp.handler.message_ids
    assert len(set(ids)) == 3 and all(i.startswith(f"<{base}.") and i.endswith(f"@{domain}>") for i in ids)
    assert smtp.to(user.email)[0].message["Message-ID"] == ids[-1]
    with transaction(it_factory) as s:
        enrolment.confirm_email(s, user, code_in(smtp, user.email), clock=CLOCK)


def test_550_fails_at_once_and_frees_the_user_to_ask_again(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, it_redis: RedisServer
) -> None:
    smtp.handler.script.append("550 5.1.1 no such mailbox")
    user = new_user(it_factory, "bounce@example.com")
    with transaction(it_factory) as s:
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    wait_for(lambda: rows(it_factory)[0].status == "failed", 15, what="the row to fail")
    drain(it_redis, it_factory)
    assert smtp.handler.attempts == 1 and smtp.received == []
    with it_factory() as s:
        failed = s.execute(select(AuditEvent).where(AuditEvent.event == "mail_failed")).scalar_one()
        assert "550" in failed.details["error"]
    with transaction(it_factory) as s:  # no resend cooldown for a code that never left
        enrolment.start_email(s, user, PASSWORD, CLOCK)
    arrivals(smtp, user.email, 1)


def test_an_expired_code_is_not_sent(it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker) -> None:
    user = new_user(it_factory, "late@example.com")
    six_minutes_ago = FrozenClock(datetime.now(UTC) - timedelta(minutes=6))
    with transaction(it_factory) as s:
        email_otp.issue(s, user, email_otp.ENROL, clock=six_minutes_ago)
    wait_for(lambda: rows(it_factory)[0].status != "queued", 15, what="the worker to look at the row")
    assert rows(it_factory)[0].status == "expired"
    assert smtp.received == [] and smtp.handler.attempts == 0


def test_smtp_down_for_30_seconds(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, it_redis: RedisServer
) -> None:
    users = [new_user(it_factory, f"down{i}@example.com") for i in range(3)]
    smtp.stop()
    requested = time.monotonic()
    for user in users:
        with transaction(it_factory) as s:
            enrolment.start_email(s, user, PASSWORD, CLOCK)
    time.sleep(30)
    assert all(r.status == "queued" for r in rows(it_factory))
    back = time.monotonic()
    smtp.start()
    for user in users:
        arrivals(smtp, user.email, 1, timeout=30)
    drain(it_redis, it_factory)
    assert len(smtp.received) == 3
    assert max(r.at for r in smtp.received) - back < 15  # backoff for codes is capped at a few seconds
    assert max(r.at for r in smtp.received) - requested < 300  # within their validity
    for user in users:
        with transaction(it_factory) as s:
            enrolment.confirm_email(s, user, code_in(smtp, user.email), clock=CLOCK)


def test_worker_killed_mid_batch_then_restarted_sends_every_reminder_once(
    it_factory: sessionmaker[Session], smtp: SmtpServer, worker: Worker, client_app: Celery, it_redis: RedisServer
) -> None:
    """Bulk mail travels in batches: the SMTP server accepts two messages and holds the third when the worker dies.
    The two accepted were marked sent; the rest stay claimed until the batch's lease ends, then the sweeper queues
    them again: each reminder arrives once."""
    smtp.handler.script.extend(["250 OK", "250 OK", "hold"])
    people = [f"batch{i}@example.com" for i in range(6)]
    context = {"org_name": "Acme", "role": "admin", "deadline": "1 Dec", "days_left": 3, "email_allowed": True}
    with transaction(it_factory) as s:
        outbox.enqueue_unique(
            s,
            [{"template": "policy_reminder", "to": to, "dedupe_key": f"it:{to}", "context": context} for to in people],
            clock=CLOCK,
        )
    assert smtp.handler.holding.wait(15), "the worker never reached the third DATA"
    worker.kill()
    killed = it_redis.client.hlen("unacked")
    assert smtp.handler.dropped.wait(10), "the SMTP server did not see the client go"
    assert sorted(r.message["To"] for r in smtp.received) == people[:2]
    assert [r.status for r in rows(it_factory)] == ["sent"] * 2 + ["sending"] * 4
    worker.start()
    client_app.send_task("twofa.sweep_outbox", queue="scheduled")  # the lease still runs: nothing moves
    wait_for(lambda: tasks_done(it_redis, killed), 30, what="the sweep to run")
    assert len(smtp.received) == 2
    with it_factory() as s:  # the lease ends (minutes in production; here we move it rather than wait)
        for row in s.execute(select(OutboxMessage).where(OutboxMessage.status == "sending")).scalars():
            row.lease_until = datetime.now(UTC) - timedelta(seconds=1)
            # and the rows are as old as a lease makes them: past the sweeper's grace (1 s here), which a worker
            # restarted in under a second did not always leave them, and the sweep then queued them for no one
            row.created_at = datetime.now(UTC) - timedelta(minutes=2)
        s.commit()
    client_app.send_task("twofa.sweep_outbox", queue="scheduled")
    wait_for(lambda: len(smtp.received) >= 6, 20, what="the four unsent reminders")
    client_app.send_task("twofa.sweep_outbox", queue="scheduled")  # a second sweep finds nothing to re-send
    drain(it_redis, it_factory, killed=killed)
    assert sorted(r.message["To"] for r in smtp.received) == people
    assert [r.status for r in rows(it_factory)] == ["sent"] * 6
