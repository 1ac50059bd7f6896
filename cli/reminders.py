"""``twofa reminders``: the policy reminder and escalation run (beat runs it on a schedule)."""

from __future__ import annotations

import typer

from policies import reminders
from twofa.db import transaction

app = typer.Typer(help="Policy reminders and escalations.", no_args_is_help=True)


@app.command()
def run(dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent; write nothing.")) -> None:
    """Write the reminders and escalations that are due to the outbox (each goes out once) and hand them to the
    workers' queue when a broker is configured (TWOFA_BROKER_URL); otherwise the beat's outbox sweeper sends them."""
    with transaction() as session:
        result = reminders.run(session, dry_run=dry_run)
        if dry_run:
            session.rollback()
    for p in result.sent:
        typer.echo(f"{'would write' if dry_run else 'wrote'} {p.template:18} {p.stage:10} to {p.to}")
    already = len(result.planned) - len(result.sent)
    verb = "would be written" if dry_run else "written to the outbox"
    typer.echo(f"{len(result.sent)} email(s) {verb}; {already} due but written by an earlier run")
