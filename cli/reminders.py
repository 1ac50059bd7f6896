"""``twofa reminders``: the policy reminder and escalation run (beat runs it on a schedule)."""

from __future__ import annotations

import typer

from policies import reminders
from twofa.db import transaction

app = typer.Typer(help="Policy reminders and escalations.", no_args_is_help=True)


@app.command()
def run(dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be sent; write nothing.")) -> None:
    """Write the reminders and escalations that are due to the outbox (each goes out once)."""
    with transaction() as session:
        result = reminders.run(session, dry_run=dry_run)
        if dry_run:
            session.rollback()
    for p in result.sent:
        typer.echo(f"{'would send' if dry_run else 'queued'} {p.template:18} {p.stage:10} to {p.to}")
    already = len(result.planned) - len(result.sent)
    verb = "would be sent" if dry_run else "queued"
    typer.echo(f"{len(result.sent)} email(s) {verb}; {already} due but sent by an earlier run")
