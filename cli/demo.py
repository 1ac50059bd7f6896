"""``twofa demo``: the whole help article on embedded defaults (SQLite, mail written to files).

Time is simulated (an injected clock that the demo moves forward), so the run takes seconds, yet every TOTP code is
computed from the real secret and every email code is read back from the mail file the outbox wrote.
"""

from __future__ import annotations

import email
import os
import re
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from twofa.settings import PROJECT_ROOT

console = Console(width=None if os.isatty(1) else 120)
PASSWORD = "demo password 1"
ROLES = ["owner", "admin", "super_admin", "finance", "member"]


def _prepare(var: Path) -> None:
    var.mkdir(parents=True, exist_ok=True)
    db = var / "demo.sqlite3"
    for path in (db, db.with_suffix(".sqlite3-wal"), db.with_suffix(".sqlite3-shm")):
        path.unlink(missing_ok=True)
    outbox_dir = var / "outbox"
    outbox_dir.mkdir(exist_ok=True)
    for old in outbox_dir.glob("*.eml"):
        old.unlink()
    os.environ["TWOFA_DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["TWOFA_MAIL_BACKEND"] = "file"
    os.environ["TWOFA_MAIL_DIR"] = str(outbox_dir)
    os.environ["TWOFA_BROKER_URL"] = "memory://localhost/"  # the worker runs in this process, on an in-memory broker


def _mails(outbox_dir: Path) -> list[EmailMessage]:
    found = []
    for path in sorted(outbox_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        found.append(message)
    return found


def _code_from_mail(outbox_dir: Path, to: str, seen: set[str], timeout: float = 10.0) -> str:
    """The code in the first email-code message to ``to`` not seen before, waiting for the worker to write it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in _mails(outbox_dir):
            message_id = str(message["Message-ID"])
            if message["To"] == to and "verification code" in str(message["Subject"]) and message_id not in seen:
                body = message.get_body(preferencelist=("plain",))
                match = re.search(r"\b(\d{6})\b", str(body.get_content()) if body else "")
                if match:
                    seen.add(message_id)
                    return match.group(1)
        time.sleep(0.02)
    raise RuntimeError(f"no email code for {to} arrived in {outbox_dir}")


def demo(
    var: Path = typer.Option(PROJECT_ROOT / "var", metavar="DIR", help="Where the demo database, mail and files go."),
) -> None:
    """Run the help article end to end on SQLite, with mail written to files, and print what happened."""
    _prepare(var)
    # Imported after the environment is set, so the settings pick the demo's database and mail folder.
    from celery.contrib.testing.worker import start_worker

    from twofa.migrate import upgrade
    from twofa.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from workers.app import app as celery_app  # its worker_init handler hands new mail to the queue

    celery_app.conf.broker_transport_options = {"polling_interval": 0.01}  # in-memory queues are polled
    console.rule("[bold]Wevion 2FA demo")
    upgrade()
    console.print(f"database: {settings.database_url}   mail: {settings.mail_dir}/*.eml")
    console.print("a Celery worker runs in this process on an in-memory broker (queues otp, mail, scheduled)")
    with start_worker(
        celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING", queues=["otp", "mail", "scheduled"]
    ):
        _story(var, settings)
    console.rule("[green]demo finished")


def _story(var: Path, settings: Any) -> None:
    from sqlalchemy.orm import Session

    from policies import reminders
    from policies.evaluate import evaluate
    from policies.gate import enrolment_required
    from reports.build import build, write
    from reports.week import IsoWeek
    from twofa import accounts, enrolment, logins, manage, totp
    from twofa.clock import FrozenClock
    from twofa.db import session_factory, transaction
    from twofa.errors import CodeReused
    from twofa.models import AuditEvent, LoginHistory, OutboxMessage, OutboxStatus
    from twofa.sessions import Client

    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0))
    factory = session_factory()
    web = Client(ip="192.0.2.10", user_agent="demo-browser/1.0")
    seen: set[str] = set()

    def last_row(s: Session) -> OutboxMessage:
        return s.execute(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(1)).scalar_one()

    with transaction(factory) as s:
        org = accounts.create_org(s, "wevion-demo", name="Wevion Demo", clock=clock)
        users = {}
        for role in ROLES:
            user = accounts.create_user(s, f"{role.replace('_', '-')}@demo.wevion.ai", PASSWORD, clock=clock)
            accounts.add_member(s, org, user, role, clock=clock)
            users[role] = user
        sso = accounts.create_org(s, "sso-corp", sso_idp="okta", clock=clock)
        sso_user = accounts.create_user(s, "dana@sso-corp.example", PASSWORD, clock=clock)
        accounts.add_member(s, sso, sso_user, "admin", clock=clock)
    console.print(f"organisation [bold]{org.slug}[/] with one member per role: {', '.join(ROLES)}")

    owner, finance = users["owner"], users["finance"]
    console.rule("1. The owner enrols an authenticator app")
    with transaction(factory) as s:
        started = enrolment.start_totp(s, owner, PASSWORD, clock=clock)
    qr_path = var / "totp-qr.png"
    qr_path.write_bytes(started.qr_png)
    console.print(f"otpauth URL: {started.otpauth_url}")
    console.print(f"QR code:     {qr_path} ({len(started.qr_png)} bytes)   secret: {started.secret}")
    code = totp.code_at(started.secret, clock.now())
    with transaction(factory) as s:
        backup = enrolment.confirm_totp(s, owner, code, clock=clock)
    console.print(f"confirmed with code {code}; 10 backup codes shown once: {', '.join(backup)}")

    console.rule("2. The finance member uses email codes instead")
    requested = time.monotonic()
    with transaction(factory) as s:
        enrolment.start_email(s, finance, PASSWORD, clock)
    with factory() as s:
        row = last_row(s)
        console.print(
            f"committed outbox row #{row.id} ({row.template}); after the commit a task carrying only [{row.id}] "
            f"went to queue '{row.queue}'"
        )
    mailed = _code_from_mail(settings.mail_dir, finance.email, seen)
    elapsed = (time.monotonic() - requested) * 1000
    console.print(f"the worker made the code, stored its hash, and mailed it: {elapsed:.0f} ms from the request")
    with transaction(factory) as s:
        enrolment.confirm_email(s, finance, mailed, clock=clock)
    console.print(f"code {mailed} read from the mail in {settings.mail_dir}; email 2FA is on")

    console.rule("3. Logging in: password, then the second factor")
    clock.advance(seconds=90)
    with transaction(factory) as s:
        challenge = logins.login_with_password(s, owner.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(challenge, logins.SecondFactorRequired)
    code = totp.code_at(started.secret, clock.now())
    with transaction(factory) as s:
        done = logins.complete_login(s, challenge.challenge, code, web, gate=enrolment_required, clock=clock)
    console.print(
        f"{owner.email}: password ok, methods {challenge.methods}, TOTP {code} -> session {done.session.session_id}"
    )
    try:
        with transaction(factory) as s:
            again = logins.login_with_password(s, owner.email, PASSWORD, web, gate=enrolment_required, clock=clock)
            assert isinstance(again, logins.SecondFactorRequired)
        with transaction(factory) as s:
            logins.complete_login(s, again.challenge, code, web, gate=enrolment_required, clock=clock)
    except CodeReused as exc:
        console.print(f"the same code again is refused: [yellow]{exc.code}[/] (audited)")

    with transaction(factory) as s:
        challenge = logins.login_with_password(s, finance.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(challenge, logins.SecondFactorRequired)
    mailed = _code_from_mail(settings.mail_dir, finance.email, seen)
    with transaction(factory) as s:
        logins.complete_login(s, challenge.challenge, mailed, web, gate=enrolment_required, clock=clock)
    console.print(f"{finance.email}: password ok, email code {mailed} from the outbox -> signed in")

    console.rule("4. A lost phone: the owner signs in with a backup code")
    clock.advance(minutes=5)
    with transaction(factory) as s:
        challenge = logins.login_with_password(s, owner.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(challenge, logins.SecondFactorRequired)
    with transaction(factory) as s:
        logins.complete_login(s, challenge.challenge, backup[0], web, gate=enrolment_required, clock=clock)
    with factory() as s:
        left = manage.status(s, owner).backup_codes_left
        sso_status = manage.status(s, sso_user)
    console.print(f"backup code {backup[0]} accepted once; {left} left")
    console.print(f"{sso_user.email}: {'Managed by SSO' if sso_status.managed_by_sso else 'not managed'}")

    console.rule("5. The organisation's 2FA policy: reminders, escalation, enforcement")
    with factory() as s:
        for v in evaluate(s, clock.now(), org_id=org.id):
            console.print(f"  {v.email:28} {v.role:12} {v.verdict.kind}")
    with transaction(factory) as s:
        first = reminders.run(s, clock=clock)
    for p in first.sent:
        console.print(f"today: {p.template} ({p.stage}) to {p.to}")
    clock.advance(days=15)
    with transaction(factory) as s:
        later = reminders.run(s, clock=clock)
    for p in later.sent:
        console.print(f"15 days later: {p.template} ({p.stage}) to {p.to}")
    with transaction(factory) as s:
        rerun = reminders.run(s, clock=clock)
    console.print(f"a second run at the same time sends {len(rerun.sent)} more")
    with transaction(factory) as s:
        late = logins.login_with_password(s, users["admin"].email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(late, logins.LoggedIn)
    console.print(f"{users['admin'].email} signs in after the deadline: enrolment required = {late.enrolment_required}")

    console.rule("Login history")
    with factory() as s:
        table = Table("time", "email", "outcome", "method", "2fa_verified")
        for entry in s.execute(select(LoginHistory).order_by(LoginHistory.id)).scalars():
            table.add_row(
                entry.at.strftime("%H:%M:%S"), entry.email, entry.outcome, entry.method or "", str(entry.twofa_verified)
            )
        console.print(table)
        events = list(s.execute(select(AuditEvent.event).order_by(AuditEvent.id)).scalars())
    console.print(f"audit log: {', '.join(events)}")
    deadline = time.monotonic() + 60
    pending = (OutboxStatus.QUEUED, OutboxStatus.SENDING)  # not yet sent: waiting, or claimed by a batch
    while True:  # let the worker finish the last notifications
        with factory() as s:
            sent = s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all()
        if time.monotonic() > deadline or all(m.status not in pending for m in sent):
            break
        time.sleep(0.05)
    console.print(f"emails: {len(sent)} in the outbox, {sum(m.status == 'sent' for m in sent)} sent by the worker")

    console.rule("6. This week's coverage report")
    with factory() as s:
        rendered = build(s, org, IsoWeek.containing(clock.now() - timedelta(days=15)), clock.now())
    paths = write(rendered, var / "reports" / f"{org.slug}-{rendered.summary['week']}")
    summary = rendered.summary
    console.print(
        f"{summary['enrolled']} of {summary['in_scope']} members in scope enrolled ({summary['coverage_pct']}%), "
        f"{summary['logins']} sign-ins, {summary['verified']} verified with a second factor"
    )
    console.print(f"report: {paths[0]}  (+ {len(paths) - 1} CSV files beside it)")

    _tamper_and_verify(factory)


TAMPER = "UPDATE audit_log SET event = 'totp_enrolment_started' WHERE id = :id"


def _tamper_and_verify(factory: Any) -> None:
    """Someone with database access quietly rewrites a refused replay as something harmless; verify names the row."""
    from sqlalchemy import text

    from twofa.audit_chain import verify
    from twofa.models import AuditEvent

    console.rule("7. The audit trail is tamper-evident")
    with factory() as s:
        result = verify(s)
        target = s.execute(
            select(AuditEvent.id).where(AuditEvent.event == "totp_replay_refused").order_by(AuditEvent.id).limit(1)
        ).scalar_one()
    console.print(f"twofa audit verify: {result.rows} rows in {result.chains} chains, intact: {not result.breaks}")
    with factory.kw["bind"].begin() as conn:  # plain SQL, behind the product's back
        postgres = conn.dialect.name == "postgresql"
        if postgres:  # the table's owner can switch the append-only trigger off; the chain still tells
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(text(TAMPER), {"id": target})
        if postgres:
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    console.print(f"{TAMPER.replace(':id', str(target))}  (plain SQL)")
    with factory() as s:
        for broken in verify(s).breaks:
            console.print(f"twofa audit verify: [red]BROKEN[/] {broken.describe()}")
