"""Delivering many bulk messages (reminders, escalations, reports) in one go: claim them all, send, mark each sent.

The per-row path (``delivery.deliver``) holds a row lock across the SMTP exchange and commits once per message;
for bulk mail those per-row transactions, not SMTP, were most of the cost. Here one conditional UPDATE claims the
whole batch (``queued`` -> ``sending``, with a lease), and each message, as soon as the SMTP server has accepted it,
is marked sent by one single-statement transaction. So the guarantees are those of the per-row path:

- a row is sent by whoever moved it to ``sending``, and only while it is ``sending``: a duplicated or redelivered
  batch task claims nothing and sends nothing;
- the one window for a duplicate is still a crash between the SMTP acceptance and that row's mark (a single
  message, never the batch; the stable Message-ID lets the receiver drop the copy);
- nothing is lost: on any error the rows not yet sent go back to ``queued`` at once, and rows left ``sending`` by a
  process that died go back when their lease ends (``sweep.stale``). The lease must outlast the longest a batch can
  legitimately run: the worker passes its hard time limit plus a margin.

Email codes never come here: they travel alone on their own queue, each with its durable commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime
from twofa.mail.backends import MailBackend, PermanentMailError, TransientMailError
from twofa.mail.delivery import Delivery, compose, record_failure
from twofa.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

_outbox = cast(Table, OutboxMessage.__table__)
_c = _outbox.c
_MINE = (_c.id == bindparam("rid")) & (_c.status == OutboxStatus.SENDING)  # still ours to end
_MARK_SENT = (
    update(_outbox)
    .where(_MINE)
    .values(
        status=OutboxStatus.SENT,
        sent_at=bindparam("at", type_=UTCDateTime()),
        attempts=_c.attempts + 1,
        lease_until=None,
        last_error=None,
    )
)
_MARK_EXPIRED = (
    update(_outbox)
    .where(_MINE)
    .values(status=OutboxStatus.EXPIRED, last_error="expired before it could be sent", lease_until=None)
)


@dataclass
class BatchOutcome:
    counts: dict[str, int] = field(default_factory=dict)  # a ``Delivery`` value, "retry" or "failed" -> rows
    retry: list[int] = field(default_factory=list)  # rows to try again after ``retry_in``, one by one

    def add(self, status: str, n: int = 1) -> None:
        if n:
            self.counts[status] = self.counts.get(status, 0) + n


@contextmanager
def _marking_connection(session: Session) -> Iterator[Connection]:
    """A connection of the session's engine on which every statement is its own transaction.

    On PostgreSQL each statement then costs one round trip, and its commit does not wait for the WAL flush: were the
    database itself to crash and lose the last marks, those messages would be sent again with the same Message-ID.
    SQLite keeps ordinary transactions (its ``BEGIN IMMEDIATE`` hook owns them)."""
    engine = session.get_bind().engine
    with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            yield conn
            return
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("SET synchronous_commit TO OFF")
        try:
            yield conn
        finally:
            conn.exec_driver_sql("RESET synchronous_commit")


def deliver_batch(
    session: Session,
    outbox_ids: Sequence[int],
    backend: MailBackend,
    *,
    retry_in: timedelta,
    lease: timedelta,
    clock: Clock = SYSTEM_CLOCK,
) -> BatchOutcome:
    """Send the bulk rows ``outbox_ids`` that are still queued, each at most once, committing as it goes. A mail
    error on one row is recorded on that row (to retry after ``retry_in``, or failed and audited); the batch goes
    on with the next."""
    outcome = BatchOutcome()
    with _marking_connection(session) as conn:
        claimed = conn.execute(
            update(_outbox)
            .where(_c.id.in_(list(outbox_ids)), _c.status == OutboxStatus.QUEUED, _c.email_otp_id.is_(None))
            .values(status=OutboxStatus.SENDING, lease_until=clock.now() + lease)
            .returning(_c.id, _c.template, _c.to_address, _c.context, _c.message_id, _c.not_after)
        ).all()
        conn.commit()
        outcome.add(Delivery.SKIPPED, len(set(outbox_ids)) - len(claimed))
        pending = {row.id for row in claimed}
        try:
            for row in sorted(claimed, key=lambda r: r.id):
                if row.not_after is not None and clock.now() >= row.not_after:
                    conn.execute(_MARK_EXPIRED, {"rid": row.id})
                    conn.commit()
                    pending.discard(row.id)
                    outcome.add(Delivery.EXPIRED)
                    continue
                try:
                    backend.send(compose(row.template, row.context, row.to_address, row.message_id, clock))
                except (TransientMailError, PermanentMailError) as exc:
                    permanent = isinstance(exc, PermanentMailError)
                    again = record_failure(
                        session, row.id, str(exc), permanent=permanent, retry_in=retry_in, clock=clock
                    )
                    session.commit()
                    pending.discard(row.id)
                    outcome.add("retry" if again else "failed")
                    if again:
                        outcome.retry.append(row.id)
                    continue
                conn.execute(_MARK_SENT, {"rid": row.id, "at": clock.now()})
                conn.commit()
                pending.discard(row.id)
                outcome.add(Delivery.SENT)
        finally:
            if pending:  # an unexpected error, or the task's time limit: what was not sent goes back to the queue
                _release(conn, pending)
    return outcome


def _release(conn: Connection, ids: set[int]) -> None:
    try:
        conn.rollback()
        conn.execute(
            update(_outbox)
            .where(_c.id.in_(sorted(ids)), _c.status == OutboxStatus.SENDING)
            .values(status=OutboxStatus.QUEUED, lease_until=None)
        )
        conn.commit()
    except Exception:  # the database is gone too: the rows return when their lease ends
        log.warning("could not release %d claimed outbox rows; the sweeper will queue them again", len(ids))
