"""``twofa org``: organisations."""

from __future__ import annotations

import typer

from twofa import accounts
from twofa.db import transaction

app = typer.Typer(help="Organisations.", no_args_is_help=True)


@app.command("create")
def create(
    slug: str = typer.Argument(..., help="Short name: lowercase letters, digits, dashes."),
    name: str | None = typer.Option(None, help="Display name (default: the slug)."),
    sso: str | None = typer.Option(None, help="Identity provider, for an organisation that signs in via SSO."),
) -> None:
    """Create an organisation."""
    with transaction() as session:
        org = accounts.create_org(session, slug, name=name, sso_idp=sso)
        managed = f", 2FA managed by SSO ({org.sso_idp})" if org.sso_idp else ""
    typer.echo(f"created organisation {org.slug}{managed}")
