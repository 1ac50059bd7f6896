"""Help that says what a value is, and every usage error as one ``error: ...`` line with status 2."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app
from tests.cli.common import count
from twofa.models import AuditEvent, Membership, Organization, OutboxMessage, User

# What Typer and Click print in place of a value's name: <str>, <int range>, TEXT, INTEGER, FLOAT RANGE...
TYPE_NOISE = re.compile(r"<[a-z][a-z ]*>|<[a-z]+\|[a-z|]+>|\b(TEXT|INTEGER|FLOAT|BOOLEAN|PATH)( RANGE)?\b")


def _paths(command: object, prefix: list[str]) -> Iterator[list[str]]:
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, [*prefix, name])


COMMANDS = list(_paths(typer.main.get_command(app), []))


def test_every_command_is_covered() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"user list", "user add", "org list", "seed", "reminders run", "support reset-2fa"} <= names
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "twofa" for p in COMMANDS])
def test_help_names_values_not_types(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: twofa {' '.join(path)}".rstrip())
    assert not TYPE_NOISE.findall(result.output), result.output
    assert "╭" not in result.output  # no boxes: the help reads the same in a terminal, a pipe and a log
    for option, value in (("--org", "SLUG"), ("--email", "EMAIL")):  # the same option reads the same everywhere
        for line in result.output.splitlines():
            if line.strip().startswith(f"{option} "):
                assert line.strip().startswith(f"{option} {value} "), line


@pytest.mark.parametrize(
    ("path", "lines"),
    [
        (
            ["user", "create"],
            [
                "  --email EMAIL        The user's email address (also the login).  [required]",
                "  --org SLUG           Organisation; created when missing.  [required]",
            ],
        ),
        (["user", "add"], ["  --email EMAIL  An existing user's email address.  [required]"]),
        (
            ["org", "create"],
            [
                "Usage: twofa org create [OPTIONS] SLUG",
                "  SLUG  Short name: lowercase letters, digits, dashes.  [required]",
            ],
        ),
        (["db", "upgrade"], ["Usage: twofa db upgrade [OPTIONS] [REVISION]"]),
        (["reminders", "run"], ["  --dry-run  Print what would be sent; write nothing."]),
        (["seed"], ["  --orgs N         Organisations to create.  [default: 3; 1<=x<=200]"]),
        (["serve"], ["  --log-level LEVEL               critical, error, warning, info or debug."]),
        (["support", "reset-2fa"], ["  --email EMAIL    The account whose 2FA is reset.  [required]"]),
        (["report", "weekly"], ["  --out DIR    Directory for report.html and the CSV files.  [required]"]),
    ],
)
def test_help_lines(path: list[str], lines: list[str]) -> None:
    output = CliRunner().invoke(app, [*path, "--help"]).output
    shown = [" ".join(line.split()) for line in output.splitlines()]
    for line in lines:
        assert " ".join(line.split()) in shown, (line, output)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "create"], "missing option '--email'. Try 'twofa user create --help'"),
        (
            ["user", "create", "--email", "a@example.com", "--org", "acme", "--colour", "red"],
            "no such option: --colour (Possible options: --org). Try 'twofa user create --help'",
        ),
        (
            ["serve", "--log-level", "loud"],
            "invalid value for '--log-level': 'loud' is not one of 'critical', 'error', 'warning', 'info', 'debug'. "
            "Try 'twofa serve --help'",
        ),
        (["seed", "--orgs", "many"], "invalid value for '--orgs': not a whole number. Try 'twofa seed --help'"),
        (["seed", "--enrolled", "most"], "invalid value for '--enrolled': not a number. Try 'twofa seed --help'"),
        (["seed", "--orgs", "0"], "invalid value for '--orgs': the least allowed is 1. Try 'twofa seed --help'"),
        (["seed", "--enrolled", "2"], "invalid value for '--enrolled': the most allowed is 1. Try 'twofa seed --help'"),
        (["org", "create"], "missing argument 'SLUG'. Try 'twofa org create --help'"),
        (["org", "create", "acme", "extra"], "got unexpected extra argument(s) (extra). Try 'twofa org create --help'"),
        (["teleport"], "no such command 'teleport'. Did you mean 'report'? Try 'twofa --help'"),
        (["user", "remove"], "no such command 'remove'. Try 'twofa user --help'"),
        (["user", "add", "--email"], "option '--email' requires an argument"),
    ],
)
def test_usage_errors_are_one_line_with_status_2_and_write_nothing(
    cli: CliRunner, factory: sessionmaker[Session], args: list[str], message: str
) -> None:
    result = cli.invoke(app, args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")
    for model in (Organization, User, Membership, AuditEvent, OutboxMessage):
        assert count(factory, model) == 0


def test_a_group_without_a_command_shows_its_help_and_one_error_line() -> None:
    result = CliRunner().invoke(app, ["user"])
    assert result.exit_code == 2
    assert result.stdout.startswith("Usage: twofa user [OPTIONS] COMMAND [ARGS]...")
    assert "  list    " in result.stdout
    assert result.stderr == "error: twofa user needs a command\n"


def test_a_real_process_prints_the_same_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "user", "add", "--email", "a@example.com", "--org", "acme"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: missing option '--role'. Try 'twofa user add --help'\n"
