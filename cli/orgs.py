"""``twofa org``: organisations."""

from __future__ import annotations

import typer
from sqlalchemy import func, select

from cli.table import print_table
from policies.rules import Policy, get_policy
from twofa import accounts
from twofa.db import transaction
from twofa.models import Membership, Organization, Role

app = typer.Typer(help="Organisations.", no_args_is_help=True)


@app.command("create")
def create(
    slug: str = typer.Argument(..., metavar="SLUG", help="Short name: lowercase letters, digits, dashes."),
    name: str | None = typer.Option(None, metavar="NAME", help="Display name (default: the slug)."),
    sso: str | None = typer.Option(
        None, metavar="IDP", help="Identity provider, for an organisation that signs in via SSO."
    ),
) -> None:
    """Create an organisation."""
    with transaction() as session:
        org = accounts.create_org(session, slug, name=name, sso_idp=sso)
        managed = f", 2FA managed by SSO ({org.sso_idp})" if org.sso_idp else ""
    typer.echo(f"created organisation {org.slug}{managed}")


def describe_policy(policy: Policy) -> str:
    if not policy.required:
        return "2FA not required"
    roles = ", ".join(r.value for r in Role if r.value in policy.roles)
    default = " (default)" if not policy.stored else ""
    return f"2FA required for {roles}; {policy.grace_days} days to enrol{default}"


@app.command("list")
def list_() -> None:
    """Every organisation: slug, SSO identity provider, members and 2FA policy."""
    with transaction() as session:
        members = dict(session.execute(select(Membership.org_id, func.count()).group_by(Membership.org_id)).all())
        orgs = session.execute(select(Organization).order_by(Organization.slug)).scalars().all()
        rows = [
            [
                org.slug,
                org.sso_idp or "-",
                str(members.get(org.id, 0)),
                "managed by SSO" if org.sso_idp else describe_policy(get_policy(session, org)),
            ]
            for org in orgs
        ]
    print_table(["organisation", "SSO", "members", "policy"], rows)
    typer.echo(f"{len(rows)} organisation(s)")
