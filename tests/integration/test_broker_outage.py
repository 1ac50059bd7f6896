"""Email codes promised while the broker (Redis) is down: ``twofa serve`` answers every sign-in, the rows wait in the
outbox, and once Redis is back the outbox sweeper hands them to a running worker. Every code promised is delivered
or replaced by a newer one for the same user; the newest always arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import ApiServer, RedisServer, SmtpServer, Worker, service_env, wait_for
from tests.helpers import PASSWORD, make_user
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.delivery import REPLACED
from twofa.models import OutboxMessage, OutboxStatus, User

pytestmark = pytest.mark.integration

USERS = [f"mail{i}@acme.io" for i in range(3)]


def code_rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as s:
        query = select(OutboxMessage).where(OutboxMessage.email_otp_id.is_not(None)).order_by(OutboxMessage.id)
        return list(s.scalars(query))


def test_codes_promised_while_the_broker_is_down_go_out_once_it_is_back(
    it_db: str, it_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    for email in USERS:
        user = make_user(it_factory, email, clock=FrozenClock(datetime.now(UTC)))
        with transaction(it_factory) as s:
            s.get_one(User, user.id).twofa_method = "email"
    (tmp_path / "redis-a").mkdir()
    redis = RedisServer(tmp_path / "redis-a")
    port = redis.port
    smtp = SmtpServer()
    env = service_env(it_db, redis.url, smtp.port, TWOFA_OUTBOX_SWEEP_GRACE="1", TWOFA_EMAIL_OTP_RESEND_COOLDOWN="0")
    worker = Worker(env=env, log_path=tmp_path / "worker.log").start()
    server = ApiServer(env, tmp_path / "serve.log", quiet=True).start()
    sweeper = Celery("sweeper")
    sweeper.config_from_object("celeryconfig")
    sweeper.conf.broker_url = redis.url
    try:
        redis.stop()
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as c:
            answers = [c.post("/auth/login", json={"email": e, "password": PASSWORD}) for e in USERS * 2]
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert all(a.json()["email_code_sent"] for a in answers)  # promised, though no broker took them
        waiting = code_rows(it_factory)  # each user's newer code replaced the older one, still unsent
        assert [r.status for r in waiting] == [OutboxStatus.CANCELLED] * len(USERS) + [OutboxStatus.QUEUED] * len(USERS)

        (tmp_path / "redis-b").mkdir()
        redis = RedisServer(tmp_path / "redis-b", port=port)  # back, empty, where everyone expects it
        sweeper.send_task("twofa.sweep_outbox", queue="scheduled")  # what beat runs every minute

        def settled() -> bool:
            return all(r.status in (OutboxStatus.SENT, OutboxStatus.CANCELLED) for r in code_rows(it_factory))

        wait_for(settled, 60, what="every promised code sent or replaced")
    finally:
        sweeper.close()
        assert server.stop() == 0
        worker.stop()
        smtp.stop()
        redis.stop()
    rows = code_rows(it_factory)
    assert len(rows) == len(answers)
    assert {r.last_error for r in rows if r.status == OutboxStatus.CANCELLED} <= {REPLACED}
    for email in USERS:  # the newest code of each user arrived, and each sent row once
        mine = [r for r in rows if r.to_address == email]
        assert mine[-1].status == OutboxStatus.SENT
        assert len(smtp.to(email)) == sum(r.status == OutboxStatus.SENT for r in mine)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
