"""The root of the ``twofa`` command: failures as one line on stderr and exit status 2, never a stack trace or a
usage box; help that names values (``cli.help``); mail handed on after each command's commits (``cli.mail``)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import sqlalchemy.exc
import typer
from typer._click.core import Context  # typer vendors its own click
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup
from typer.exceptions import Abort

from cli import mail
from cli.help import name_values
from twofa import audit
from twofa.errors import DomainError

USAGE_ERROR = 2


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(USAGE_ERROR)


# Typer's own words for a value of the wrong type, in ours.
PLAIN_WORDS = {
    "Input should be a valid integer, unable to parse string as an integer": "not a whole number",
    "Input should be a valid number, unable to parse string as a number": "not a number",
    "Input should be greater than or equal to": "the least allowed is",
    "Input should be less than or equal to": "the most allowed is",
    "Value error, ": "",
}


def one_line(exc: ClickException) -> str:
    """Click's message on one line, lower-cased like ours, pointing at the command's help for usage errors."""
    text = " ".join(exc.format_message().split())
    for theirs, ours in PLAIN_WORDS.items():
        text = text.replace(theirs, ours)
    text = text[:1].lower() + text[1:].rstrip(".")
    if isinstance(exc, UsageError) and exc.ctx is not None:
        text += f"{'' if text.endswith('?') else '.'} Try '{exc.ctx.command_path} --help'"
    return text


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


class ErrorHandlingGroup(TyperGroup):
    """The root command group: every failure, Click's usage errors included, ends the command with one clear
    ``error: ...`` line on stderr and status 2; mail a command writes is handed on and said so (``cli.mail``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        name_values(self)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as exc:  # `twofa user`: what the group offers, and the one line that says why
            typer.echo(exc.ctx.get_help())
            _exit(f"{exc.ctx.command_path} needs a command")
        except ClickException as exc:
            _exit(one_line(exc))
        except Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Context) -> Any:
        try:
            # Audit rows written by any command name the CLI and the operating-system account that ran it.
            with mail.handed_on(), audit.acting_as(audit.Actor(audit.Credential.CLI, name=_operator())):
                return super().invoke(ctx)
        except DomainError as exc:
            typer.echo(f"error: {exc.message} [{exc.code}]", err=True)
            ctx.exit(USAGE_ERROR)
        except sqlalchemy.exc.OperationalError as exc:
            typer.echo(f"error: database unavailable or not migrated ({exc.orig}); run `twofa db upgrade`", err=True)
            ctx.exit(USAGE_ERROR)


def _exit(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    sys.exit(USAGE_ERROR)
