"""The outbox dispatcher the worker package provides: one Celery message per committed outbox row, carrying only
the row id, on the row's queue (``otp`` for email codes)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from twofa import outbox
from twofa.outbox import OutboxRef

DELIVER_TASK = "twofa.deliver_email"
DELIVER_BATCH_TASK = "twofa.deliver_email_batch"
# Bulk mail (reminders) travels in batches, sent by one task over one SMTP connection; an email code always
# travels alone, so it never waits behind other mail.
BATCH_SIZE = 200
log = logging.getLogger(__name__)


class CeleryDispatcher:
    def __init__(self, app: Celery, batch_size: int = BATCH_SIZE) -> None:
        self.app = app
        self.batch_size = batch_size

    def __call__(self, refs: Sequence[OutboxRef]) -> None:
        self.hand_over(refs)

    def hand_over(self, refs: Sequence[OutboxRef]) -> list[int]:
        """Send the tasks for these rows; returns the ids of the rows the broker did not take (the sweeper's)."""
        bulk = [ref.id for ref in refs if ref.queue != outbox.OTP_QUEUE]
        singles = [ref for ref in refs if ref.queue == outbox.OTP_QUEUE]
        if len(bulk) == 1:
            singles.append(OutboxRef(bulk[0], outbox.MAIL_QUEUE))
            bulk = []
        refused = []
        for ref in singles:
            if not self._send(DELIVER_TASK, [ref.id], ref.queue):
                refused.append(ref.id)
        for i in range(0, len(bulk), self.batch_size):
            batch = bulk[i : i + self.batch_size]
            if not self._send(DELIVER_BATCH_TASK, [batch], outbox.MAIL_QUEUE):
                refused.extend(batch)
        return refused

    def _send(self, task: str, args: list[object], queue: str) -> bool:
        try:
            self.app.send_task(task, args=args, queue=queue)
        except Exception:  # the rows are committed; the sweeper re-sends what the broker did not take
            log.warning("could not enqueue %s on %s; the outbox sweeper will retry", task, queue)
            return False
        return True


def install(app: Celery | None = None) -> CeleryDispatcher:
    if app is None:
        from workers.app import app as default_app

        app = default_app
    dispatcher = CeleryDispatcher(app)
    outbox.install_dispatcher(dispatcher)
    return dispatcher
