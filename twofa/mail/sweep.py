"""The outbox sweeper: finds rows a lost broker message left behind, and ends rows that can no longer go.

Tasks can be lost (a Redis restart, a FLUSHALL, a ``kill -9`` between publish and persist: celery#1307, #7924).
The database row is the truth: a row still ``queued`` well after it was due is handed to the dispatcher again.
Delivery is idempotent, so a row that was only slow, not lost, is at worst looked at twice and sent once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import OutboxMessage, OutboxStatus
from twofa.outbox import OutboxRef
from twofa.settings import get_settings

MAX_ATTEMPTS = 12


def stale(
    session: Session, clock: Clock = SYSTEM_CLOCK, grace: timedelta | None = None, limit: int = 1000
) -> list[OutboxRef]:
    """Rows to dispatch again: queued and more than ``grace`` (default ``TWOFA_OUTBOX_SWEEP_GRACE``) past due, or
    left ``sending`` by a batch whose lease ended. Rows past their validity become ``expired`` and rows out of
    attempts ``failed``."""
    now = clock.now()
    grace = grace if grace is not None else timedelta(seconds=get_settings().outbox_sweep_grace)
    # A batch that claimed rows and died (twofa.mail.batch) leaves them ``sending``; its lease ends, they queue again.
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until <= now)
        .values(status=OutboxStatus.QUEUED, lease_until=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, OutboxMessage.not_after <= now)
        .values(status=OutboxStatus.EXPIRED, last_error="expired before it could be sent")
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.QUEUED, OutboxMessage.attempts >= MAX_ATTEMPTS)
        .values(status=OutboxStatus.FAILED, last_error=func.coalesce(OutboxMessage.last_error, "") + " (gave up)")
        .execution_options(synchronize_session=False)
    )
    due = func.coalesce(OutboxMessage.next_attempt_at, OutboxMessage.created_at)
    rows = session.execute(
        select(OutboxMessage.id, OutboxMessage.queue)
        .where(
            OutboxMessage.status == OutboxStatus.QUEUED,
            due <= now - grace,
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    ).all()
    return [OutboxRef(id=row.id, queue=row.queue) for row in rows]
