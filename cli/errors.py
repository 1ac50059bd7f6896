"""Turning failures into one line on stderr and exit status 2, never a stack trace."""

from __future__ import annotations

import getpass
from typing import Any

import sqlalchemy.exc
import typer
from typer._click.core import Context  # typer vendors its own click
from typer.core import TyperGroup

from twofa import audit
from twofa.errors import DomainError

USAGE_ERROR = 2


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(USAGE_ERROR)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


class ErrorHandlingGroup(TyperGroup):
    """The root command group: domain and database errors end the command with one clear line."""

    def invoke(self, ctx: Context) -> Any:
        try:
            # Audit rows written by any command name the CLI and the operating-system account that ran it.
            with audit.acting_as(audit.Actor(audit.Credential.CLI, name=_operator())):
                return super().invoke(ctx)
        except DomainError as exc:
            typer.echo(f"error: {exc.message} [{exc.code}]", err=True)
            ctx.exit(USAGE_ERROR)
        except sqlalchemy.exc.OperationalError as exc:
            typer.echo(f"error: database unavailable or not migrated ({exc.orig}); run `twofa db upgrade`", err=True)
            ctx.exit(USAGE_ERROR)
