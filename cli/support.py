"""``twofa support``: operator actions."""

from __future__ import annotations

import typer

from cli.errors import fail
from policies import notices
from twofa import accounts, manage
from twofa.db import transaction

app = typer.Typer(help="Support operations (audited).", no_args_is_help=True)


@app.command("reset-2fa")
def reset_2fa(
    email: str = typer.Option(..., metavar="EMAIL", help="The account whose 2FA is reset."),
    operator: str = typer.Option(..., metavar="NAME", help="Your name, for the audit log."),
    reason: str = typer.Option(..., metavar="REASON", help="Why (ticket, how identity was checked)."),
) -> None:
    """Turn a user's 2FA off after they lost their device and backup codes; the user and their organisations'
    owners and admins are emailed, and the user's sessions end."""
    with transaction() as session:
        user = accounts.get_user(session, email)
        if user is None:
            raise fail(f"no user {email!r}")
        manage.support_reset(session, user, operator=operator, reason=reason)
        notices.member_reset(session, user.id, by=f"Support ({operator.strip()})")
    typer.echo(f"2FA reset for {user.email}; audited")
