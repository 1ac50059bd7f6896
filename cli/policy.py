"""``twofa policy``: an organisation's 2FA policy, and who complies with it."""

from __future__ import annotations

import enum
import json
import sys
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from policies.members import EXPORTED, MemberRow, member_rows
from policies.rules import get_policy, set_policy
from reports.csv_export import write_csv
from twofa import accounts
from twofa.clock import SYSTEM_CLOCK
from twofa.db import transaction

app = typer.Typer(help="Organisation 2FA policies.", no_args_is_help=True)
console = Console()


def _csv(value: str | None, cast: type = str) -> list[Any] | None:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"not a comma-separated list of {cast.__name__}: {value!r}") from None


@app.command()
def show(org: str = typer.Option(..., help="Organisation slug.")) -> None:
    """Print the organisation's policy."""
    with transaction() as session:
        policy = get_policy(session, accounts.require_org(session, org))
    for key, value in policy.as_dict().items():
        typer.echo(f"{key:20} {', '.join(map(str, value)) if isinstance(value, list) else value}")
    if not policy.stored:
        typer.echo("(the default policy: the organisation never changed it)")


@app.command("set")
def set_(
    org: str = typer.Option(..., help="Organisation slug."),
    required: bool | None = typer.Option(None, "--required/--not-required", help="Switch the policy on or off."),
    roles: str | None = typer.Option(None, help="Roles that must use 2FA, comma-separated."),
    totp_only_roles: str | None = typer.Option(None, help="Roles for which email codes do not count."),
    grace_days: int | None = typer.Option(None, help="Days a member has to enrol."),
    reminder_days: str | None = typer.Option(None, help="Reminders this many days before the deadline, e.g. 7,3,1."),
    escalate: bool | None = typer.Option(None, "--escalate/--no-escalate", help="Tell owners and admins."),
    after_deadline: str | None = typer.Option(None, help="enrol_only (next login may only enrol) or remind_only."),
    disable_grace_days: int | None = typer.Option(None, help="Deadline after a member disables 2FA."),
    actor: str = typer.Option("cli", help="Who makes the change, for the audit log."),
) -> None:
    """Change the organisation's policy (audited)."""
    changes: dict[str, Any] = {
        "required": required,
        "roles": _csv(roles),
        "totp_only_roles": _csv(totp_only_roles),
        "grace_days": grace_days,
        "reminder_days": _csv(reminder_days, int),
        "escalate": escalate,
        "after_deadline": after_deadline,
        "disable_grace_days": disable_grace_days,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    with transaction() as session:
        policy = set_policy(session, accounts.require_org(session, org), changes, actor=actor)
    typer.echo(
        f"policy of {org} updated: {'on' if policy.required else 'off'}, roles {', '.join(sorted(policy.roles))}"
    )


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _verdict_text(row: MemberRow, now: datetime) -> str:
    """The verdict, with whole days past the deadline for an overdue member, and its reason."""
    text = row.verdict
    if row.verdict == "overdue" and row.deadline is not None:
        days = (now - row.deadline).days
        text = "less than a day overdue" if days < 1 else f"{days} day{'' if days == 1 else 's'} overdue"
    return text if row.reason is None else f"{text} ({row.reason.replace('_', ' ')})"


@app.command()
def check(
    org: str = typer.Option(..., help="Organisation slug."),
    format: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    verdict: str | None = typer.Option(
        None, help="Only members with this verdict (compliant, exempt, pending, overdue)."
    ),
    role: str | None = typer.Option(None, help="Only members with this role."),
) -> None:
    """Every member's verdict (compliant, exempt, pending, overdue), deadline, reminders and last sign-ins."""
    from reports import coverage  # pandas: loaded by this command only, not by every `twofa` start (the worker's)

    now = SYSTEM_CLOCK.now()
    with transaction() as session:
        found = accounts.require_org(session, org)
        rows = member_rows(session, found.id, now, verdict=verdict, role=role)
        summary = coverage.summary(session, found, now)
    if format is Format.csv:
        write_csv(sys.stdout, EXPORTED, ([getattr(r, c) for c in EXPORTED] for r in rows))
        return
    if format is Format.json:
        typer.echo(json.dumps([{c: getattr(r, c) for c in EXPORTED} for r in rows], default=str, indent=2))
        return
    table = Table("member", "role", "method", "verdict", "deadline", "reminders", "last sign-in (2FA)")
    for r in rows:
        table.add_row(
            r.email,
            r.role,
            r.method or "-",
            _verdict_text(r, now),
            f"{r.deadline:%Y-%m-%d %H:%M}" if r.deadline else "",
            str(r.reminders_sent),
            f"{r.last_sign_in_2fa:%Y-%m-%d %H:%M}" if r.last_sign_in_2fa else "",
        )
    # Piped or captured output has no width to fit: one line per member reads and greps better than wrapped cells.
    (console if console.is_terminal else Console(width=200)).print(table)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    typer.echo(summary.line())
    typer.echo(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no members")
