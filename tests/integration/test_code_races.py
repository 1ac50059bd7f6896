"""Requests for email codes racing the worker's delivery of the codes they replace, through ``twofa serve`` and a
Celery worker on PostgreSQL: each new code voids the user's open ones and cancels their mail while the worker may be
sending one of them. One lock order (user, code, outbox row) on both sides: no deadlock, no 500, and every code
promised is delivered or replaced by a newer one."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import SmtpServer, Worker, api_server, wait_for
from tests.helpers import PASSWORD, make_user
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.delivery import REPLACED
from twofa.models import OutboxMessage, OutboxStatus, User

pytestmark = pytest.mark.integration

ROUNDS = 100  # per client thread: a sign-in and a resend each
EMAIL = "race@example.com"
UNLIMITED = "1000000"


def sign_in_and_resend(port: int, statuses: list[int], promised: list[int]) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30) as client:
        for _ in range(ROUNDS):
            answer = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD})
            statuses.append(answer.status_code)
            if answer.status_code != 200:
                continue
            promised.append(int(answer.json()["email_code_sent"]))
            resent = client.post("/auth/2fa/email-otp", json={"challenge": answer.json()["challenge"]})
            statuses.append(resent.status_code)
            promised.append(int(resent.status_code == 202))


def test_sign_ins_and_resends_racing_the_delivery_of_earlier_codes(
    it_factory: sessionmaker[Session], worker_env: dict[str, str], worker: Worker, smtp: SmtpServer, tmp_path: Path
) -> None:
    user = make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    with transaction(it_factory) as s:
        s.get_one(User, user.id).twofa_method = "email"
    env = worker_env | {
        "TWOFA_EMAIL_OTP_RESEND_COOLDOWN": "0",
        "TWOFA_EMAIL_OTP_HOURLY_CAP": UNLIMITED,
        "TWOFA_RATELIMIT_PER_IP": UNLIMITED,
        "TWOFA_RATELIMIT_AUTH_PER_IP": UNLIMITED,
        "TWOFA_RATELIMIT_AUTH_PER_ACCOUNT": UNLIMITED,
    }
    statuses: list[int] = []
    promised: list[int] = []
    log = tmp_path / "serve.log"
    with api_server(env, log, workers=2) as port:
        clients = [threading.Thread(target=sign_in_and_resend, args=(port, statuses, promised)) for _ in range(2)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(300)

    def rows() -> list[OutboxMessage]:
        with it_factory() as s:
            query = select(OutboxMessage).where(OutboxMessage.email_otp_id.is_not(None)).order_by(OutboxMessage.id)
            return list(s.scalars(query))

    wait_for(lambda: all(r.status != OutboxStatus.QUEUED for r in rows()), 60, what="every code's mail to settle")
    assert sorted(set(statuses)) in ([200, 202], [202, 200]), sorted(set(statuses))
    assert len(statuses) == 4 * ROUNDS
    for text in (log.read_text(), worker.log()):
        assert "deadlock" not in text.lower()
    settled = rows()
    assert len(settled) == sum(promised)
    assert {(r.status, r.last_error) for r in settled if r.status != OutboxStatus.SENT} <= {
        (OutboxStatus.CANCELLED, REPLACED)
    }
    assert settled[-1].status == OutboxStatus.SENT  # the newest code reached the user
    sent = [r for r in settled if r.status == OutboxStatus.SENT]
    assert len(smtp.to(EMAIL)) == len(sent)  # each once
