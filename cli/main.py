"""The ``twofa`` command."""

from __future__ import annotations

import typer

from cli import audit, db, demo, keys, orgs, policy, reminders, report, seed, serve, support, users, worker
from cli.errors import ErrorHandlingGroup

# Plain help (no panels): options read `--org SLUG`, never their Python type (see cli.help).
app = typer.Typer(
    cls=ErrorHandlingGroup,
    name="twofa",
    help="Wevion two-factor authentication: policy and audit service.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(db.app, name="db")
app.add_typer(orgs.app, name="org")
app.add_typer(users.app, name="user")
app.add_typer(support.app, name="support")
app.add_typer(policy.app, name="policy")
app.add_typer(reminders.app, name="reminders")
app.add_typer(report.app, name="report")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.command("demo")(demo.demo)
app.command("seed")(seed.seed)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("beat")(worker.beat)
app.command("expire")(worker.expire)


if __name__ == "__main__":
    app(prog_name="twofa")  # `python -m cli.main` is the same command
