"""The ``twofa`` command."""

from __future__ import annotations

import typer

from cli import audit, db, demo, orgs, policy, reminders, report, seed, serve, support, users, worker
from cli.errors import ErrorHandlingGroup

app = typer.Typer(
    cls=ErrorHandlingGroup, help="Wevion two-factor authentication: policy and audit service.", no_args_is_help=True
)
app.add_typer(db.app, name="db")
app.add_typer(orgs.app, name="org")
app.add_typer(users.app, name="user")
app.add_typer(support.app, name="support")
app.add_typer(policy.app, name="policy")
app.add_typer(reminders.app, name="reminders")
app.add_typer(report.app, name="report")
app.add_typer(audit.app, name="audit")
app.command("demo")(demo.demo)
app.command("seed")(seed.seed)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("beat")(worker.beat)
app.command("expire")(worker.expire)


if __name__ == "__main__":
    app()
