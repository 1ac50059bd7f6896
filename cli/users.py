"""``twofa user``: accounts."""

from __future__ import annotations

import sys

import typer
from sqlalchemy import select

from cli.errors import fail
from cli.table import print_table
from twofa import accounts
from twofa.db import transaction
from twofa.models import Membership, Organization, User

app = typer.Typer(help="User accounts.", no_args_is_help=True)
ROLES = "owner, admin, super_admin, finance or member."
METHODS = {"totp": "authenticator app", "email": "email codes"}


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
    email: str = typer.Option(..., metavar="EMAIL", help="The user's email address (also the login)."),
    org: str = typer.Option(..., metavar="SLUG", help="Organisation; created when missing."),
    role: str = typer.Option("member", metavar="ROLE", help=ROLES),
    password: str | None = typer.Option(
        None,
        metavar="PASSWORD",
        help="The password; '-' or leaving it out reads it from standard input (prompted on a terminal).",
    ),
) -> None:
    """Create a user and make them a member of an organisation."""
    accounts.parse_role(role)  # refuse a bad role before asking for a password or writing anything
    secret = _read_password(password)
    with transaction() as session:
        organisation = accounts.get_org(session, org) or accounts.create_org(session, org)
        user = accounts.create_user(session, email, secret)
        accounts.add_member(session, organisation, user, role)
    typer.echo(f"created {user.email} as {role} of {organisation.slug}")


@app.command("add")
def add(
    email: str = typer.Option(..., metavar="EMAIL", help="An existing user's email address."),
    org: str = typer.Option(..., metavar="SLUG", help="An existing organisation."),
    role: str = typer.Option(..., metavar="ROLE", help=ROLES),
) -> None:
    """Make an existing user a member of another organisation."""
    accounts.parse_role(role)
    with transaction() as session:
        user = accounts.get_user(session, email)
        if user is None:
            raise fail(f"no user {email.strip().lower()!r} (create one with `twofa user create`)")
        organisation = accounts.require_org(session, org)
        accounts.add_member(session, organisation, user, role)
    managed = f"; their 2FA is managed by SSO ({organisation.sso_idp})" if organisation.sso_idp else ""
    typer.echo(f"added {user.email} as {role} of {organisation.slug}{managed}")


def _method(user: User, sso: list[str]) -> str:
    if sso:
        return f"managed by SSO ({', '.join(sorted(set(sso)))})"
    return METHODS.get(user.twofa_method or "", "none")


@app.command("list")
def list_(
    org: str | None = typer.Option(None, metavar="SLUG", help="Only the members of this organisation."),
) -> None:
    """Every user (or an organisation's members): email, organisations and roles, and the second factor."""
    with transaction() as session:
        users = select(User).order_by(User.email)
        memberships = (
            select(Membership.user_id, Organization.slug, Organization.sso_idp, Membership.role)
            .join(Organization, Organization.id == Membership.org_id)
            .order_by(Organization.slug)
        )
        if org is not None:
            members = select(Membership.user_id).where(Membership.org_id == accounts.require_org(session, org).id)
            users = users.where(User.id.in_(members))
            memberships = memberships.where(Membership.user_id.in_(members))
        listed = session.execute(users).scalars().all()
        rows = session.execute(memberships).all()
    roles: dict[int, list[str]] = {}
    sso: dict[int, list[str]] = {}
    for user_id, slug, idp, role in rows:
        roles.setdefault(user_id, []).append(f"{slug} ({role})")
        if idp:
            sso.setdefault(user_id, []).append(idp)
    print_table(
        ["email", "organisations", "2FA"],
        [[u.email, ", ".join(roles.get(u.id, [])) or "-", _method(u, sso.get(u.id, []))] for u in listed],
    )
    typer.echo(f"{len(listed)} user(s)" + (f" in {org}" if org else ""))
