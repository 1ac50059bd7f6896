"""``twofa policy``: an organisation's 2FA policy, and who complies with it."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from policies.evaluate import evaluate
from policies.rules import get_policy, set_policy
from policies.verdicts import Compliant, Exempt, Overdue, Pending
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


def describe(verdict: Any) -> tuple[str, str]:
    if isinstance(verdict, Compliant):
        return "compliant", verdict.method
    if isinstance(verdict, Exempt):
        return "exempt", "Managed by SSO" if verdict.reason == "managed_by_sso" else verdict.reason.replace("_", " ")
    if isinstance(verdict, Pending):
        return (
            "pending",
            f"deadline {verdict.deadline:%Y-%m-%d %H:%M}, {verdict.days_left} day(s) left ({verdict.reason})",
        )
    assert isinstance(verdict, Overdue)
    late = "less than a day" if verdict.days < 1 else f"{verdict.days} day{'' if verdict.days == 1 else 's'}"
    return "overdue", f"deadline {verdict.deadline:%Y-%m-%d %H:%M}, {late} overdue ({verdict.reason})"


@app.command()
def check(org: str = typer.Option(..., help="Organisation slug.")) -> None:
    """Every member's verdict: compliant, exempt, pending (deadline) or overdue."""
    with transaction() as session:
        found = accounts.require_org(session, org)
        verdicts = list(evaluate(session, SYSTEM_CLOCK.now(), org_id=found.id))
    table = Table("member", "role", "verdict", "detail")
    for v in verdicts:
        table.add_row(v.email, v.role, *describe(v.verdict))
    console.print(table)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.verdict.kind] = counts.get(v.verdict.kind, 0) + 1
    typer.echo(", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no members")
