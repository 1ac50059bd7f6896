"""The Celery application. ``celery -A workers.app worker`` and ``twofa worker`` both start it."""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from pathlib import Path
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
from twofa.settings import get_settings, require_service_settings

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


def lower_priority_for_reports(queues: Collection[str], nice: int) -> bool:
    """Lower this process's CPU priority to ``nice`` when it serves the ``reports`` queue and not ``otp``: a report
    on the same host then takes only the CPU that email codes leave. Only ever lowers the priority."""
    if "reports" not in queues or "otp" in queues or nice <= 0:
        return False
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    _lower_autogroup(nice)
    return True


AUTOGROUP = Path("/proc/self/autogroup")


def _lower_autogroup(nice: int) -> None:
    """Linux's autogrouping (on by default in many distributions) shares the CPU between sessions first, and a
    process's nice value counts only against processes of its own session: a report worker started in a session of
    its own (systemd, ``setsid``) would take half the CPU from the code workers whatever its nice value. Such a
    worker lowers its session's autogroup as well. In a shared session (a terminal) it does not, as that would lower
    everything started there. Without autogrouping, or under cgroup CPU control, this changes nothing."""
    if os.getsid(0) not in (os.getpid(), os.getppid()):  # the session is not this worker's own
        return
    try:
        line = AUTOGROUP.read_text().split()  # "/autogroup-85 nice 0"; empty in the root group (no autogroup)
        if line and int(line[-1]) < nice:
            AUTOGROUP.write_text(str(nice))
    except (OSError, ValueError):
        pass  # no autogroups here: the process priority above is all there is


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
    skip it instead of holding up the email codes in flight for about 100 ms. Celery sends this signal once the app
    is finalised and logging set up, before the pool forks; a worker run inside another process for tests
    (``celery.contrib.testing``) does not send it, so a test run is never frozen."""
    logger.info("froze %d objects made at start-up: garbage collections skip them", freeze_startup_objects())


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked child must not reuse the parent's database connections or SMTP socket.
    global _backend
    _backend = None
    dispose_engines()
    lower_priority_for_reports(set(app.amqp.queues.consume_from or ()), get_settings().reports_nice)


@worker_process_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    if _backend is not None:
        _backend.close()
