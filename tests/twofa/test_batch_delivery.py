"""Bulk mail in batches: claimed together, each message sent at most once, nothing left behind on any error."""

from __future__ import annotations

import functools
from datetime import timedelta
from email.message import Message

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import at_once, make_user
from twofa import audit, email_otp, outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend, PermanentMailError, TransientMailError
from twofa.mail.batch import deliver_batch
from twofa.mail.sweep import stale
from twofa.models import AuditEvent, OutboxMessage

LEASE = timedelta(minutes=3)
RETRY = timedelta(seconds=30)


# The batch marks rows on connections of its own: its tests commit for real.
pytestmark = [pytest.mark.usefixtures("no_dispatch"), pytest.mark.committed]


def queue_bulk(factory: sessionmaker[Session], clock: FrozenClock, n: int, **extra: object) -> list[int]:
    with transaction(factory) as s:
        refs = outbox.enqueue_unique(
            s,
            [
                {
                    "template": "policy_reminder",
                    "to": f"m{i}@example.com",
                    "dedupe_key": f"test:{i}:{clock.now().isoformat()}",
                    "context": {
                        "org_name": "Acme",
                        "role": "admin",
                        "deadline": "1 Dec",
                        "days_left": 3,
                        "email_allowed": True,
                    }
                    | extra,
                }
                for i in range(n)
            ],
            clock=clock,
        )
    return sorted(ref.id for ref in refs.values())


def statuses(factory: sessionmaker[Session]) -> dict[int, str]:
    with factory() as s:
        return {row.id: row.status for row in s.execute(select(OutboxMessage.id, OutboxMessage.status))}


def recipients(backend: MemoryBackend) -> list[str]:
    return [str(m["To"]) for m in backend.sent]


class Scripted(MemoryBackend):
    """Sends, except that the n-th message (1-based) raises the given error."""

    def __init__(self, failures: dict[int, BaseException]) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def send(self, message: Message) -> None:
        self.calls += 1
        if self.calls in self.failures:
            raise self.failures[self.calls]
        super().send(message)


def run(factory: sessionmaker[Session], ids: list[int], backend: MemoryBackend, clock: FrozenClock) -> dict[str, int]:
    with factory() as s:
        return deliver_batch(s, ids, backend, retry_in=RETRY, lease=LEASE, clock=clock).counts


def test_a_batch_sends_each_row_once_and_marks_it(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    ids = queue_bulk(factory, clock, 5)
    backend = MemoryBackend()
    assert run(factory, ids, backend, clock) == {"sent": 5}
    assert run(factory, ids, backend, clock) == {"skipped": 5}  # a redelivered or duplicated batch task
    assert sorted(recipients(backend)) == [f"m{i}@example.com" for i in range(5)]
    assert set(statuses(factory).values()) == {"sent"}
    with factory() as s:
        rows = s.execute(select(OutboxMessage)).scalars().all()
        assert {(r.attempts, r.sent_at, r.lease_until) for r in rows} == {(1, clock.now(), None)}
    assert {m["Message-ID"] for m in backend.sent} == {r.message_id for r in rows}


def test_a_4xx_sends_that_row_to_retry_alone_and_the_batch_goes_on(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    ids = queue_bulk(factory, clock, 4)
    backend = Scripted({2: TransientMailError("451 try later")})
    with factory() as s:
        outcome = deliver_batch(s, ids, backend, retry_in=RETRY, lease=LEASE, clock=clock)
    assert outcome.counts == {"sent": 3, "retry": 1}
    assert outcome.retry == [ids[1]]
    with factory() as s:
        row = s.get(OutboxMessage, ids[1])
        assert row is not None
        assert (row.status, row.lease_until, row.next_attempt_at, row.attempts) == (
            "queued",
            None,
            clock.now() + RETRY,
            1,
        )
        assert row.last_error == "451 try later"


def test_a_5xx_fails_that_row_at_once_and_is_audited(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    ids = queue_bulk(factory, clock, 3)
    backend = Scripted({3: PermanentMailError("550 no such user")})
    assert run(factory, ids, backend, clock) == {"sent": 2, "failed": 1}
    assert statuses(factory)[ids[2]] == "failed"
    with factory() as s:
        events = s.execute(select(AuditEvent.event, AuditEvent.details)).all()
    assert [(e, d["outbox_id"]) for e, d in events if e == audit.Event.MAIL_FAILED] == [
        (audit.Event.MAIL_FAILED, ids[2])
    ]


def test_an_unexpected_error_puts_every_unsent_row_back_in_the_queue(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    ids = queue_bulk(factory, clock, 5)
    backend = Scripted({3: RuntimeError("a bug, or the task's time limit")})
    with pytest.raises(RuntimeError):
        run(factory, ids, backend, clock)
    assert [statuses(factory)[i] for i in ids] == ["sent", "sent", "queued", "queued", "queued"]
    retry = MemoryBackend()
    assert run(factory, ids, retry, clock) == {"sent": 3, "skipped": 2}  # the task retried: nothing twice
    assert len(backend.sent) + len(retry.sent) == 5


def test_rows_a_dead_batch_left_claimed_return_when_the_lease_ends(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    ids = queue_bulk(factory, clock, 3)

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs in the process, so we stop the release too."""

    backend = Scripted({2: Killed()})
    with factory() as s, pytest.MonkeyPatch.context() as mp:
        mp.setattr("twofa.mail.batch._release", lambda conn, ids: None)
        with pytest.raises(Killed):
            deliver_batch(s, ids, backend, retry_in=RETRY, lease=LEASE, clock=clock)
    assert [statuses(factory)[i] for i in ids] == ["sent", "sending", "sending"]
    assert run(factory, ids, MemoryBackend(), clock) == {"skipped": 3}  # the redelivered task: still claimed
    clock.advance(seconds=LEASE.total_seconds() - 1)
    with transaction(factory) as s:
        assert stale(s, clock, grace=timedelta(seconds=30)) == []
    clock.advance(seconds=1)
    with transaction(factory) as s:
        assert [r.id for r in stale(s, clock, grace=timedelta(seconds=30))] == ids[1:]
    again = MemoryBackend()
    assert run(factory, ids, again, clock) == {"sent": 2, "skipped": 1}
    assert recipients(backend) + recipients(again) == [f"m{i}@example.com" for i in range(3)]


def test_a_row_past_its_validity_is_not_sent(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    ids = queue_bulk(factory, clock, 2)
    with factory() as s:
        row = s.get(OutboxMessage, ids[0])
        assert row is not None
        row.not_after = clock.now()
        s.commit()
    backend = MemoryBackend()
    assert run(factory, ids, backend, clock) == {"expired": 1, "sent": 1}
    assert recipients(backend) == ["m1@example.com"]


def test_email_codes_never_travel_in_a_batch(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, "code@example.com", clock=clock)
    with transaction(factory) as s:
        otp = email_otp.issue(s, user, email_otp.ENROL, clock=clock)
        s.flush()
        code_row = s.execute(select(OutboxMessage.id).where(OutboxMessage.email_otp_id == otp.id)).scalar_one()
    backend = MemoryBackend()
    assert run(factory, [code_row], backend, clock) == {"skipped": 1}
    assert backend.sent == [] and statuses(factory)[code_row] == "queued"


def test_two_batches_of_the_same_rows_at_once_send_each_once(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    ids = queue_bulk(factory, clock, 40)
    backend = MemoryBackend()
    results = at_once([functools.partial(run, factory, ids, backend, clock)] * 2)
    counts = [r for r in results if isinstance(r, dict)]
    assert len(counts) == 2, results
    assert sorted(recipients(backend)) == sorted(f"m{i}@example.com" for i in range(40))
    assert sum(r.get("sent", 0) for r in counts) == 40
    assert sum(r.get("skipped", 0) for r in counts) == 40
