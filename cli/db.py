"""``twofa db``: the database schema."""

from __future__ import annotations

import typer

from twofa.settings import get_settings

app = typer.Typer(help="The database schema.", no_args_is_help=True)


@app.command()
def upgrade(
    revision: str = typer.Argument("head", metavar="REVISION", help="The Alembic revision to move to."),
) -> None:
    """Create or migrate the schema (Alembic)."""
    from twofa import migrate  # Alembic, loaded by this command only

    migrate.upgrade(revision=revision)
    url = get_settings().database_url
    typer.echo(f"database at {url.rsplit('@', 1)[-1]} is at revision {revision}")
