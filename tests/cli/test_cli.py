"""The ``twofa`` command: what it prints, what it writes, and one clear line with status 2 on bad input."""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app
from tests.cli.common import count
from tests.helpers import enrol_totp
from twofa import accounts
from twofa.clock import FrozenClock
from twofa.models import AuditEvent, Membership, Organization, OutboxMessage, User
from twofa.settings import get_settings


def test_org_and_user_create(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    result = cli.invoke(app, ["org", "create", "ssoco", "--sso", "okta"])
    assert result.exit_code == 0, result.output
    assert "managed by SSO (okta)" in result.output
    result = cli.invoke(
        app,
        [
            "user",
            "create",
            "--email",
            "Ann@Example.com",
            "--password",
            "long enough",
            "--org",
            "acme",
            "--role",
            "finance",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "created ann@example.com as finance of acme"
    with factory() as s:
        org = accounts.get_org(s, "acme")
        user = accounts.get_user(s, "ann@example.com")
        assert org is not None and user is not None and org.sso_idp is None
        membership = s.execute(select(Membership).where(Membership.user_id == user.id)).scalar_one()
        assert (membership.org_id, membership.role) == (org.id, "finance")
        assert user.password_hash.startswith("$argon2id$")


def test_password_from_standard_input(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    result = cli.invoke(
        app,
        ["user", "create", "--email", "b@example.com", "--org", "acme", "--role", "admin"],
        input="piped password\n",
    )
    assert result.exit_code == 0, result.output
    with factory() as s:
        user = accounts.get_user(s, "b@example.com")
        assert user is not None
    from twofa.passwords import verify_password

    assert verify_password(user.password_hash, "piped password")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["org", "create", "Bad Slug"], "not a valid organisation slug"),
        (
            [
                "user",
                "create",
                "--email",
                "x@example.com",
                "--password",
                "long enough",
                "--org",
                "acme",
                "--role",
                "emperor",
            ],
            "unknown role 'emperor'",
        ),
        (
            ["user", "create", "--email", "not-an-email", "--password", "long enough", "--org", "acme"],
            "not a valid email address",
        ),
        (["user", "create", "--email", "x@example.com", "--password", "short", "--org", "acme"], "the password needs"),
        (
            ["support", "reset-2fa", "--email", "nobody@example.com", "--operator", "op", "--reason", "r"],
            "no user 'nobody@example.com'",
        ),
    ],
)
def test_bad_input_is_one_line_and_status_2_and_writes_nothing(
    cli: CliRunner, factory: sessionmaker[Session], args: list[str], message: str
) -> None:
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output
    assert count(factory, Organization) == 0 and count(factory, User) == 0


def test_duplicate_user_is_refused(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    args = ["user", "create", "--email", "d@example.com", "--password", "long enough", "--org", "acme"]
    assert cli.invoke(app, args).exit_code == 0
    result = cli.invoke(app, args)
    assert result.exit_code == 2 and "exists already" in result.stderr
    assert count(factory, User) == 1


def test_support_reset(cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock) -> None:
    from tests.helpers import make_user

    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    result = cli.invoke(
        app, ["support", "reset-2fa", "--email", user.email, "--operator", "carol", "--reason", "lost phone"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"2FA reset for {user.email}; audited",
        "mail: 1 email waits in the outbox (no broker is configured, TWOFA_BROKER_URL); "
        "the beat's outbox sweeper will send it",
    ]
    with factory() as s:
        row = s.execute(select(AuditEvent).where(AuditEvent.event == "2fa_reset_by_support")).scalar_one()
        assert row.actor == "support:carol"
        refreshed = s.get(User, user.id)
        assert refreshed is not None and refreshed.twofa_method is None


def test_db_upgrade_creates_the_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOFA_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["org", "create", "acme"])
    assert result.exit_code == 0, result.output


def test_expire_command(cli: CliRunner) -> None:
    result = cli.invoke(app, ["expire"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("expired 0 codes and 0 unsent mails; purged 0 old rows")


def test_demo_runs_from_scratch(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_DATABASE")}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--var", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "demo finished" in done.stdout
    assert "Managed by SSO" in done.stdout and "code_reused" in done.stdout
    assert "went to queue 'otp'" in done.stdout, done.stdout
    assert "emails: 11 in the outbox, 11 sent by the worker" in done.stdout, done.stdout
    assert "15 days later: policy_escalation (escalation) to owner@demo.wevion.ai" in done.stdout
    assert "enrolment required = True" in done.stdout
    assert "intact: True" in done.stdout
    assert re.search(r"BROKEN chain none: row (\d+) \(#\d+\) was changed", done.stdout), done.stdout
    [report] = list((tmp_path / "reports").glob("wevion-demo-*/report.html"))
    assert f"report: {report}" in done.stdout.replace("\n", "")
    assert len(list(report.parent.glob("*.csv"))) == 6
    assert (tmp_path / "totp-qr.png").read_bytes().startswith(b"\x89PNG")
    assert len(list((tmp_path / "outbox").glob("*.eml"))) >= 4


def test_policy_show_set_check(cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock) -> None:
    from tests.helpers import make_user

    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    make_user(factory, "m@acme.io", role="member", clock=clock)
    result = cli.invoke(app, ["policy", "show", "--org", "acme"])
    assert result.exit_code == 0, result.output
    assert "grace_days           14" in result.output and "(the default policy" in result.output
    result = cli.invoke(
        app,
        [
            "policy",
            "set",
            "--org",
            "acme",
            "--grace-days",
            "7",
            "--roles",
            "owner,finance",
            "--totp-only-roles",
            "owner",
            "--reminder-days",
            "3,1",
            "--actor",
            "alice",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = cli.invoke(app, ["policy", "show", "--org", "acme"]).output
    assert "grace_days           7" in shown and "totp_only_roles      owner" in shown
    result = cli.invoke(app, ["policy", "check", "--org", "acme"])
    assert result.exit_code == 0, result.output
    assert "pending" in result.output and "role not required" in result.output
    assert result.output.strip().splitlines()[-1] == "1 exempt, 1 pending"
    bad = cli.invoke(app, ["policy", "set", "--org", "acme", "--after-deadline", "explode"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: after the deadline")
    missing = cli.invoke(app, ["policy", "show", "--org", "nope"])
    assert missing.exit_code == 2 and "no organisation 'nope'" in missing.stderr


def test_reminders_dry_run_writes_nothing(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.helpers import make_user

    make_user(factory, "owner@acme.io", role="owner", clock=FrozenClock(datetime.now(UTC) - timedelta(hours=1)))
    result = cli.invoke(app, ["reminders", "run", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "would write policy_reminder    start      to owner@acme.io",
        "1 email(s) would be written; 0 due but written by an earlier run",
    ]
    with factory() as s:
        assert s.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 0
    result = cli.invoke(app, ["reminders", "run"])
    assert result.output.splitlines() == [
        "wrote policy_reminder    start      to owner@acme.io",
        "1 email(s) written to the outbox; 0 due but written by an earlier run",
        "mail: 1 email waits in the outbox (no broker is configured, TWOFA_BROKER_URL); "
        "the beat's outbox sweeper will send it",
    ]
    result = cli.invoke(app, ["reminders", "run"])
    assert result.output == "0 email(s) written to the outbox; 1 due but written by an earlier run\n"


def test_report_weekly(cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from reports.week import IsoWeek
    from tests.helpers import make_user

    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    out = tmp_path / "r"
    result = cli.invoke(app, ["report", "weekly", "--org", "acme", "--week", "2026-W40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("acme 2026-W40: 0/1 enrolled, 0 sign-ins, 0 verified")
    assert (out / "report.html").exists() and len(list(out.glob("*.csv"))) == 6
    bad = cli.invoke(app, ["report", "weekly", "--org", "acme", "--week", "2026-47", "--out", str(out)])
    assert bad.exit_code == 2 and "not an ISO week" in bad.stderr
    this_week = str(IsoWeek.containing(datetime.now(UTC)))
    now = cli.invoke(app, ["report", "weekly", "--org", "acme", "--week", this_week, "--out", str(tmp_path / "n")])
    assert now.exit_code == 0 and now.output.startswith(f"acme {this_week} to date: 0/1 enrolled"), now.output
    future = cli.invoke(app, ["report", "weekly", "--org", "acme", "--week", "2099-W01", "--out", str(tmp_path / "f")])
    assert future.exit_code == 2 and future.stdout == ""
    assert future.stderr.startswith("error: week 2099-W01 has not begun: it starts on Monday 29 December 2098")
    assert future.stderr.endswith("[week_not_begun]\n") and future.stderr.count("\n") == 1
    assert not (tmp_path / "f").exists()


def test_served_app_hands_mail_to_celery_and_keeps_its_start_up_from_the_collector() -> None:
    from cli.serve import make_app
    from twofa import outbox
    from workers.dispatch import CeleryDispatcher

    previous = outbox.install_dispatcher(None)
    gc.unfreeze()
    try:
        app_ = make_app()
        assert isinstance(outbox.install_dispatcher(previous), CeleryDispatcher)
        # What the server process holds once built is out of reach of full collections (twofa.heap).
        assert gc.get_freeze_count() > 2 * len(gc.get_objects())
        assert "/api/v1/auth/login" in app_.openapi()["paths"]
    finally:
        gc.unfreeze()  # this is the test process: give its objects back to the collector
        outbox.install_dispatcher(previous)


@pytest.mark.parametrize(
    "key",
    ["dev-only-insecure-key-change-me-0123456789", "short", "", "abcdefghijklmno" * 3],  # 15 distinct
)
def test_services_refuse_the_development_key(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("TWOFA_SECRET_KEY", key)
    get_settings.cache_clear()
    for command in (["serve"], ["worker"], ["beat"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: set TWOFA_SECRET_KEY to a random secret")


def test_services_send_mail_only_where_told(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, the mail backend would be the demo's ``file``: email codes written to disk on a production host."""
    monkeypatch.delenv("TWOFA_MAIL_BACKEND")
    get_settings.cache_clear()
    for command in (["serve"], ["worker"], ["beat"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: set TWOFA_MAIL_BACKEND: smtp to send through TWOFA_SMTP_HOST, or file")
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ("otp,reports", "email codes wait for no report"),
        ("otp,smtp", "unknown queue(s) smtp"),
        (",", "unknown queue(s) (none given)"),
    ],
)
def test_a_worker_never_takes_email_codes_beside_reports(queues: str, message: str) -> None:
    result = CliRunner().invoke(app, ["worker", "--queues", queues])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_policy_check_says_whole_days_overdue(cli: CliRunner, factory: sessionmaker[Session]) -> None:
    from datetime import UTC, datetime, timedelta

    from tests.helpers import make_user

    now = datetime.now(UTC)
    make_user(factory, "later@acme.io", role="admin", clock=FrozenClock(now - timedelta(days=16, hours=1)))
    make_user(factory, "late@acme.io", role="owner", clock=FrozenClock(now - timedelta(days=14, hours=1)))
    result = cli.invoke(app, ["policy", "check", "--org", "acme"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.output.splitlines() if "@" in line}
    assert "less than a day overdue (not enrolled)" in lines["late@acme.io"]
    assert "2 days overdue (not enrolled)" in lines["later@acme.io"]
