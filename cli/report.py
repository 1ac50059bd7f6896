"""``twofa report``: build a weekly coverage report on demand."""

from __future__ import annotations

from pathlib import Path

import typer

from twofa import accounts
from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction

app = typer.Typer(help="Coverage reports.", no_args_is_help=True)


@app.command()
def weekly(
    org: str = typer.Option(..., metavar="SLUG", help="The organisation."),
    week: str | None = typer.Option(
        None,
        metavar="WEEK",
        help="ISO week, e.g. 2026-W47 (default: the last complete week; the current week gives its figures to date).",
    ),
    out: Path = typer.Option(..., metavar="DIR", help="Directory for report.html and the CSV files."),
) -> None:
    """Build one organisation's weekly report into a directory (no email; the Monday job mails them)."""
    # Imported here: every ``twofa`` command loads this module, and a worker must not carry pandas and matplotlib.
    from reports.build import build, write
    from reports.week import IsoWeek

    now = SYSTEM_CLOCK.now()
    iso = IsoWeek.parse(week) if week else IsoWeek.last_complete(now)
    with transaction() as session:
        rendered = build(session, accounts.require_org(session, org), iso, now)
    paths = write(rendered, out)
    s = rendered.summary
    name = f"{iso} to date" if s["partial"] else str(iso)
    typer.echo(
        f"{org} {name}: {s['enrolled']}/{s['in_scope']} enrolled, {s['logins']} sign-ins, {s['verified']} verified"
    )
    typer.echo(f"wrote {paths[0]} and {len(paths) - 1} CSV files")
