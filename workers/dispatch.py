"""The outbox dispatcher the worker package provides: one Celery message per committed outbox row, carrying only
the row id, on the row's queue (``otp`` for email codes)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from twofa import outbox
from twofa.outbox import OutboxRef

DELIVER_TASK = "twofa.deliver_email"
log = logging.getLogger(__name__)


class CeleryDispatcher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, refs: Sequence[OutboxRef]) -> None:
        for ref in refs:
            try:
                self.app.send_task(DELIVER_TASK, args=[ref.id], queue=ref.queue)
            except Exception:  # the row is committed; the sweeper re-sends what the broker did not take
                log.warning("could not enqueue outbox row %s on %s; the sweeper will retry", ref.id, ref.queue)


def install(app: Celery | None = None) -> CeleryDispatcher:
    if app is None:
        from workers.app import app as default_app

        app = default_app
    dispatcher = CeleryDispatcher(app)
    outbox.install_dispatcher(dispatcher)
    return dispatcher
