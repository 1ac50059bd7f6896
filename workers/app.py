"""The Celery application. ``celery -A workers.app worker`` and ``twofa worker`` both start it."""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_after_setup,
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from celery.utils.log import get_logger

from twofa.db import dispose_engines
from twofa.errors import InvalidInput
from twofa.heap import freeze_startup_objects
from twofa.mail.backends import MailBackend, backend_from_settings
from twofa.settings import require_service_settings

app = Celery(
    "twofa", include=["workers.mail_tasks", "workers.scheduled_tasks", "workers.policy_tasks", "workers.report_tasks"]
)
app.config_from_object("celeryconfig")

logger = get_logger(__name__)
_backend: MailBackend | None = None


def mail_backend() -> MailBackend:
    """This process's mail backend; for SMTP, one connection reused across the tasks this process runs."""
    global _backend
    if _backend is None:
        _backend = backend_from_settings()
    return _backend


@celeryd_init.connect
@beat_init.connect
def _refuse_unsafe_settings(**_: Any) -> None:
    """A worker or beat started by ``celery -A workers ...`` checks what ``twofa worker`` and ``beat`` do: no
    development or weak key, and a mail backend chosen on purpose. One line on the real stderr (beat has sent its own
    to the log by then), then ``SystemExit``: Celery logs and ignores the other exceptions of a signal's receivers.
    (The demo's worker, run in its own process by ``celery.contrib.testing``, sends neither signal.)"""
    try:
        require_service_settings()
    except InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.__stderr__, flush=True)
        raise SystemExit(2) from None


@worker_init.connect
def _queue_mail_after_commits(sender: Any, **_: Any) -> None:
    """Mail that tasks write (policy reminders and escalations, weekly reports) is handed to the queue after each
    commit, however the worker was started (``twofa worker``, ``celery -A workers worker``): without a dispatcher it
    would wait for the outbox sweeper. Installed before the pool forks; the children inherit it."""
    from workers.dispatch import install

    install(sender.app)  # sender: the worker being set up


@celeryd_after_setup.connect
def _freeze_startup_objects(**_: Any) -> None:
    """Start-up frozen out of the garbage collector's reach (``twofa.heap``): full collections in the main process,
    which receives and acknowledges every message, and in each pool child, which inherits the frozen objects, then
    skip it instead of holding up the email codes in flight. Celery sends this signal once the app
    is finalised and logging set up, before the pool forks; a worker run inside another process for tests
    (``celery.contrib.testing``) does not send it, so a test run is never frozen."""
    logger.info("froze %d objects made at start-up: garbage collections skip them", freeze_startup_objects())


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked child must not reuse the parent's database connections or SMTP socket.
    global _backend
    _backend = None
    dispose_engines()


@worker_process_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _backend is not None:
        _backend.close()
