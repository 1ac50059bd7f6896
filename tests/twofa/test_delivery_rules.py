"""Outbox delivery rules: claiming, retries bounded by validity, the sweeper, expiry; and the Celery settings."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import at_once, queue_code
from twofa import email_otp, maintenance, outbox
from twofa.clock import FrozenClock
from twofa.db import get_engine, transaction
from twofa.mail.backends import MemoryBackend
from twofa.mail.delivery import Delivery, deliver, record_failure
from twofa.mail.sweep import MAX_ATTEMPTS, stale
from twofa.models import EmailOtp, OutboxMessage, User
from twofa.settings import get_settings


def status(factory: sessionmaker[Session], row_id: int) -> str:
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None
        return row.status


def test_a_row_is_sent_once(factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None) -> None:
    row_id = queue_code(factory, clock)
    backend = MemoryBackend()
    results = []
    for _ in range(3):  # a duplicated, redelivered or retried task
        with transaction(factory) as s:
            results.append(deliver(s, row_id, backend, clock))
    assert results == [Delivery.SENT, Delivery.SKIPPED, Delivery.SKIPPED]
    assert len(backend.sent) == 1


@pytest.mark.committed
def test_the_claim_locks_the_code_before_the_row(
    factory: sessionmaker[Session], db_url: str, clock: FrozenClock, no_dispatch: None
) -> None:
    """The lock order of ``email_otp.issue`` (user, code, outbox row): a delivery whose code a request holds waits
    for it without holding the row. Were the row locked first, a resend (which waits for the row while holding the
    code) and the delivery would deadlock."""
    row_id = queue_code(factory, clock)
    backend = MemoryBackend()

    def delivery() -> Delivery:
        with transaction(factory) as s:
            return deliver(s, row_id, backend, clock)

    with ThreadPoolExecutor(1) as pool, factory() as request:  # on a failure the request lets go first
        code_id = request.scalar(select(OutboxMessage.email_otp_id).where(OutboxMessage.id == row_id))
        request.execute(select(EmailOtp.id).where(EmailOtp.id == code_id).with_for_update())
        delivered = pool.submit(delivery)
        _wait_for_a_lock_wait(db_url, delivered)
        with factory() as other:  # the row is free (NOWAIT would raise otherwise): the delivery holds nothing yet
            other.execute(select(OutboxMessage.id).where(OutboxMessage.id == row_id).with_for_update(nowait=True))
        request.rollback()
        assert delivered.result(10) == Delivery.SENT
    assert len(backend.sent) == 1


def _wait_for_a_lock_wait(db_url: str, until: Future[Delivery]) -> None:
    """Until a statement of this database waits for a lock; fails after 10 s or once ``until`` is done."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 10
    # In autocommit: a transaction would see the activity as it was at its first read.
    with get_engine(db_url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while conn.execute(waiting).scalar_one() == 0:
            assert time.monotonic() < deadline and not until.done(), until
            time.sleep(0.01)


def test_retry_past_validity_fails_the_row_and_frees_the_user(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    row_id = queue_code(factory, clock)
    with transaction(factory) as s:
        assert record_failure(s, row_id, "451 later", permanent=False, retry_in=timedelta(seconds=5), clock=clock)
    assert status(factory, row_id) == "queued"
    clock.advance(seconds=290)
    with transaction(factory) as s:
        assert not record_failure(s, row_id, "451 later", permanent=False, retry_in=timedelta(seconds=15), clock=clock)
    assert status(factory, row_id) == "failed"
    with factory() as s:
        otp = s.execute(select(EmailOtp)).scalar_one()
        assert otp.delivery_failed_at == clock.now()
        user = s.get(User, otp.user_id)
        assert user is not None
    # The user asks again at once: the code that never left counts for no cooldown and no hourly cap (both set so
    # that it would refuse, had it counted).
    monkeypatch.setenv("TWOFA_EMAIL_OTP_RESEND_COOLDOWN", "3600")
    monkeypatch.setenv("TWOFA_EMAIL_OTP_HOURLY_CAP", "1")
    get_settings.cache_clear()
    with transaction(factory) as s:
        again = email_otp.issue(s, user, email_otp.ENROL, clock=clock)
    assert again.id != otp.id


def test_sweeper_finds_lost_rows_and_ends_dead_ones(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None
) -> None:
    lost = queue_code(factory, clock, "lost@example.com")
    clock.advance(seconds=10)
    fresh = queue_code(factory, clock, "fresh@example.com")
    with transaction(factory) as s:
        assert stale(s, clock, grace=timedelta(seconds=30)) == []
    clock.advance(seconds=25)
    with transaction(factory) as s:
        refs = stale(s, clock, grace=timedelta(seconds=30))
    assert [(r.id, r.queue) for r in refs] == [(lost, "otp")]
    with transaction(factory) as s:  # safe to run twice: same answer, nothing changed
        assert stale(s, clock, grace=timedelta(seconds=30)) == refs
    with factory() as s:
        row = s.get(OutboxMessage, fresh)
        assert row is not None
        row.attempts = MAX_ATTEMPTS
        s.commit()
    clock.advance(seconds=300)
    with transaction(factory) as s:
        assert stale(s, clock, grace=timedelta(seconds=30)) == []
    assert (status(factory, lost), status(factory, fresh)) == ("expired", "expired")


def test_expire_is_idempotent_and_purges_old_rows(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None
) -> None:
    queue_code(factory, clock)
    clock.advance(minutes=6)
    with transaction(factory) as s:
        first = maintenance.expire(s, clock)
    with transaction(factory) as s:
        second = maintenance.expire(s, clock)
    assert (first.codes, first.mails) == (1, 1) and (second.codes, second.mails, second.purged) == (0, 0, 0)
    clock.advance(days=100)
    with transaction(factory) as s:
        purged = maintenance.expire(s, clock).purged
    assert purged == 2  # the code and its (expired) mail
    with factory() as s:
        assert s.execute(select(EmailOtp)).first() is None


def test_celery_settings() -> None:
    import celeryconfig
    from workers.mail_tasks import MAX_BACKOFF, backoff

    assert celeryconfig.accept_content == ["json"] and celeryconfig.task_serializer == "json"
    assert celeryconfig.task_acks_late and celeryconfig.task_reject_on_worker_lost
    assert celeryconfig.worker_prefetch_multiplier == 1
    vt = celeryconfig.VISIBILITY_TIMEOUT
    assert celeryconfig.broker_transport_options["visibility_timeout"] == vt
    assert celeryconfig.result_backend_transport_options["visibility_timeout"] == vt
    assert max(MAX_BACKOFF.values()) < vt and celeryconfig.task_time_limit < vt
    assert celeryconfig.task_soft_time_limit < celeryconfig.task_time_limit
    assert {q.name for q in celeryconfig.task_queues} == {"otp", "mail", "scheduled", "reports"}
    for retries in range(20):
        for queue in ("otp", "mail"):
            cap = min(2.0**retries, MAX_BACKOFF[queue])
            assert cap / 2 <= backoff(retries, queue) <= cap
    assert MAX_BACKOFF["otp"] <= 5  # an email code lives 5 minutes: it is retried every few seconds


def test_a_template_error_fails_the_row_instead_of_looping(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None
) -> None:
    from twofa.mail.backends import PermanentMailError
    from twofa.mail.sync import deliver_now

    with transaction(factory) as s:
        row = outbox.enqueue(s, template="policy_reminder", to="x@example.com", context={}, clock=clock)
    with pytest.raises(PermanentMailError), transaction(factory) as s:
        deliver(s, row.id, MemoryBackend(), clock)
    assert deliver_now(factory, row.id, MemoryBackend(), clock) is None
    assert status(factory, row.id) == "failed"


@pytest.mark.committed
def test_expiry_and_sweeps_run_twice_at_once(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None
) -> None:
    """Beat may start a job while the previous run still works (or two beats run): two expiries and two sweeps at
    once end each code and each row once, without errors."""
    rows = [queue_code(factory, clock, f"u{i}@example.com") for i in range(30)]
    clock.advance(seconds=600)  # every code past its validity, every row past its due time
    barrier = threading.Barrier(4)

    def expire() -> int:
        with transaction(factory) as s:
            barrier.wait(10)
            return maintenance.expire(s, clock).codes

    def sweep() -> int:
        with transaction(factory) as s:
            barrier.wait(10)
            return len(stale(s, clock, grace=timedelta(seconds=30)))

    results = at_once([expire, expire, sweep, sweep], barrier=barrier)
    assert all(isinstance(r, int) for r in results), results  # no run failed
    assert sorted(r for r in results[:2] if isinstance(r, int)) == [0, 30]  # one run ended them all; the other none
    assert results[2:] == [0, 0]  # the rows expired: none handed out again
    assert {status(factory, r) for r in rows} == {"expired"}
    with factory() as s:
        assert s.execute(select(EmailOtp).where(EmailOtp.invalidated_at.is_(None))).scalars().all() == []
