"""``twofa user``: accounts."""

from __future__ import annotations

import sys

import typer

from cli.errors import fail
from twofa import accounts
from twofa.db import transaction

app = typer.Typer(help="User accounts.", no_args_is_help=True)


def _read_password(password: str | None) -> str:
    if password is not None and password != "-":  # noqa: S105 ("-" means standard input)
        return password
    if password is None and sys.stdin.isatty():
        return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise fail("no password given (use --password, or pipe it on standard input)")
    return value


@app.command("create")
def create(
    email: str = typer.Option(..., help="The user's email address (also the login)."),
    org: str = typer.Option(..., help="Organisation slug; created when missing."),
    role: str = typer.Option("member", help="owner, admin, super_admin, finance or member."),
    password: str | None = typer.Option(
        None, help="The password; '-' or leaving it out reads it from standard input (prompted on a terminal)."
    ),
) -> None:
    """Create a user and make them a member of an organisation."""
    secret = _read_password(password)
    accounts.parse_role(role)  # refuse a bad role before anything is written
    with transaction() as session:
        organisation = accounts.get_org(session, org) or accounts.create_org(session, org)
        user = accounts.create_user(session, email, secret)
        accounts.add_member(session, organisation, user, role)
    typer.echo(f"created {user.email} as {role} of {organisation.slug}")
