"""``twofa audit``: an organisation's audit trail exported, and the hash chains checked."""

from __future__ import annotations

import enum
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer

from reports import audit_trail
from reports.csv_export import write_csv
from twofa import accounts, audit_chain
from twofa.db import transaction

app = typer.Typer(help="The audit trail: export it, verify that no row was changed or deleted.", no_args_is_help=True)
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
BROKEN = 1  # verify found a change: a finding, not a usage error (2)


class Format(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


@app.command()
def export(
    org: str = typer.Option(..., help="Organisation slug."),
    since: datetime | None = typer.Option(None, formats=DATE_FORMATS, help="From this day or time (UTC)."),
    until: datetime | None = typer.Option(None, formats=DATE_FORMATS, help="Before this day or time (UTC)."),
    event: str | None = typer.Option(None, help="Only this event type."),
    member: str | None = typer.Option(None, help="Only this member's events (email)."),
    format: Format = typer.Option(Format.jsonl, "--format", help="jsonl (one JSON object a line) or csv."),
    out: Path | None = typer.Option(None, help="Write to this file (default: standard output)."),
) -> None:
    """The organisation's events and its members' account events, oldest first, with who acted and how."""
    filters = audit_trail.Filters(event=event, member=member, since=_utc(since), until=_utc(until)).check()
    with transaction() as session:
        found = accounts.require_org(session, org)
        target = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
        try:
            rows = audit_trail.export(session, found.id, filters)
            if format is Format.csv:
                write_csv(target, audit_trail.COLUMNS, (r.values() for r in rows))
            else:
                for row in rows:
                    record = dict(zip(audit_trail.COLUMNS, row.values(), strict=True))
                    target.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        finally:
            if out:
                target.close()
    if out:
        typer.echo(f"audit trail of {org} written to {out}", err=True)


@app.command()
def verify(org: str | None = typer.Option(None, help="Only this organisation's chain (default: every chain).")) -> None:
    """Recompute every row's hash along its chain; name the first row changed or deleted in each chain (exit 1)."""
    with transaction() as session:
        if org is None:
            result = audit_chain.verify(session)
        else:
            found = accounts.require_org(session, org)
            result = audit_chain.verify(session, org_id=found.id, every_chain=False)
    for broken in result.breaks:
        typer.echo(f"BROKEN {broken.describe()}")
    if result.breaks:
        raise typer.Exit(BROKEN)
    typer.echo(f"audit trail intact: {result.rows} rows in {result.chains} chain(s)")
