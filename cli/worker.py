"""``twofa worker``, ``twofa beat``, ``twofa expire``: the batch side."""

from __future__ import annotations

from pathlib import Path

import typer

from twofa import maintenance
from twofa.db import transaction

QUEUES = ("otp", "mail", "scheduled", "reports")
DEFAULT_QUEUES = "otp,mail,scheduled"


def check_queues(queues: str) -> str:
    """The queues a worker may take: known ones, and never email codes beside reports (invariant 4: an email code
    waits for no report, so a worker that builds reports delivers no codes)."""
    from twofa.errors import InvalidInput

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if not chosen or unknown:
        raise InvalidInput(f"unknown queue(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(QUEUES)}")
    if "otp" in chosen and "reports" in chosen:
        raise InvalidInput("email codes wait for no report: run reports on a worker of their own (--queues reports)")
    return ",".join(chosen)


def worker(
    queues: str = typer.Option(
        DEFAULT_QUEUES,
        metavar="QUEUES",
        help="Comma-separated: otp, mail, scheduled, reports (reports never beside otp).",
    ),
    concurrency: int = typer.Option(2, min=1, metavar="N", help="Worker processes."),
    loglevel: str = typer.Option("INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR or CRITICAL."),
) -> None:
    """Start a Celery worker (same as `celery -A workers.app worker`)."""
    from twofa.settings import require_service_settings
    from workers.app import app  # its worker_init handler hands new mail to the queue (workers.dispatch)

    queues = check_queues(queues)
    require_service_settings()
    app.worker_main(["worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", loglevel])


def beat(
    loglevel: str = typer.Option("INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    schedule: Path = typer.Option(
        Path("celerybeat-schedule"),
        metavar="FILE",
        help="Where beat keeps the time each job last ran (a file it creates).",
    ),
) -> None:
    """Start the beat scheduler (run exactly one; the jobs are safe to run twice anyway)."""
    from twofa.settings import require_service_settings
    from workers.app import app

    require_service_settings()
    app.start(["beat", "--loglevel", loglevel, "--schedule", str(schedule)])


def expire() -> None:
    """Expire stale codes and purge old rows once, now (beat runs this every minute)."""
    with transaction() as session:
        done = maintenance.expire(session)
    typer.echo(f"expired {done.codes} codes and {done.mails} unsent mails; purged {done.purged} old rows")
