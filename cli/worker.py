"""``twofa worker``, ``twofa beat``, ``twofa expire``: the batch side."""

from __future__ import annotations

import typer

from twofa import maintenance
from twofa.db import transaction

ALL_QUEUES = "otp,mail,scheduled,reports"


def worker(
    queues: str = typer.Option(ALL_QUEUES, help="Comma-separated queues. Give OTP its own workers: --queues otp."),
    concurrency: int = typer.Option(2, min=1, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Start a Celery worker (same as `celery -A workers.app worker`)."""
    from twofa.settings import require_secret_key
    from workers.app import app
    from workers.dispatch import install

    require_secret_key()
    install(app)
    app.worker_main(["worker", "--queues", queues, "--concurrency", str(concurrency), "--loglevel", loglevel])


def beat(loglevel: str = typer.Option("INFO", help="Log level.")) -> None:
    """Start the beat scheduler (run exactly one; the jobs are safe to run twice anyway)."""
    from twofa.settings import require_secret_key
    from workers.app import app

    require_secret_key()
    app.start(["beat", "--loglevel", loglevel])


def expire() -> None:
    """Expire stale codes and purge old rows once, now (beat runs this every minute)."""
    with transaction() as session:
        done = maintenance.expire(session)
    typer.echo(f"expired {done.codes} codes and {done.mails} unsent mails; purged {done.purged} old rows")
