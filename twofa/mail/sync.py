"""Synchronous delivery, for the demo, the tests and the outbox sweeper's fallback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.mail.backends import MailBackend
from twofa.mail.delivery import Delivery, attempt
from twofa.models import OutboxMessage, OutboxStatus
from twofa.outbox import OutboxRef

RETRY_AFTER = timedelta(seconds=30)


def deliver_now(
    factory: sessionmaker[Session], outbox_id: int, backend: MailBackend, clock: Clock = SYSTEM_CLOCK
) -> Delivery | None:
    """Deliver one row in its own transaction; a failure is recorded on the row (None), not raised."""
    with factory.begin() as session:
        status, _ = attempt(session, outbox_id, backend, retry_in=RETRY_AFTER, clock=clock)
    return None if status in ("retry", "failed") else Delivery(status)


class SynchronousDispatcher:
    """An outbox dispatcher that sends each committed row at once, in the committing thread."""

    def __init__(self, factory: sessionmaker[Session], backend: MailBackend, clock: Clock = SYSTEM_CLOCK):
        self.factory = factory
        self.backend = backend
        self.clock = clock

    def __call__(self, refs: Sequence[OutboxRef]) -> None:
        for ref in refs:
            deliver_now(self.factory, ref.id, self.backend, self.clock)


def deliver_queued(
    factory: sessionmaker[Session], backend: MailBackend, clock: Clock = SYSTEM_CLOCK, limit: int = 500
) -> int:
    """Deliver every queued row that is due; returns how many were sent."""
    with factory() as session:
        now = clock.now()
        ids = (
            session.execute(
                select(OutboxMessage.id)
                .where(
                    OutboxMessage.status == OutboxStatus.QUEUED,
                    or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
            )
            .scalars()
            .all()
        )
    return sum(deliver_now(factory, i, backend, clock) == Delivery.SENT for i in ids)
