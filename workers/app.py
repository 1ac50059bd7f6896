"""The Celery application. ``celery -A workers.app worker`` and ``twofa worker`` both start it."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from twofa.db import dispose_engines
from twofa.mail.backends import MailBackend, backend_from_settings

app = Celery(
    "twofa", include=["workers.mail_tasks", "workers.scheduled_tasks", "workers.policy_tasks", "workers.report_tasks"]
)
app.config_from_object("celeryconfig")

_backend: MailBackend | None = None


def mail_backend() -> MailBackend:
    """This process's mail backend; for SMTP, one connection reused across the tasks this process runs."""
    global _backend
    if _backend is None:
        _backend = backend_from_settings()
    return _backend


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
