"""``twofa policy check --format``, ``twofa audit export|verify`` and ``twofa support reset-2fa`` telling admins."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import enrol_totp, make_user
from tests.twofa.test_audit_chain import tampering
from twofa import sessions
from twofa.clock import SYSTEM_CLOCK, FrozenClock
from twofa.db import transaction
from twofa.models import AuditEvent, OutboxMessage, UserSession
from twofa.settings import get_settings


@pytest.fixture
def cli(factory: sessionmaker[Session], db_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TWOFA_DATABASE_URL", db_url)
    get_settings.cache_clear()
    return CliRunner()


def acme(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    make_user(factory, "fin@acme.io", role="finance", clock=FrozenClock(clock.now() - timedelta(days=400)))
    owner = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    enrol_totp(factory, owner, clock)
    # The CLI reads the system clock: the admin's grace period runs from now.
    make_user(factory, "admin@acme.io", role="admin", clock=FrozenClock(SYSTEM_CLOCK.now()))


def test_policy_check_as_table_csv_and_json(cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock) -> None:
    acme(factory, clock)
    as_json = cli.invoke(app, ["policy", "check", "--org", "acme", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [(r["email"], r["verdict"], r["method"]) for r in rows] == [
        ("admin@acme.io", "pending", None),
        ("fin@acme.io", "overdue", None),
        ("owner@acme.io", "compliant", "totp"),
    ]
    as_csv = cli.invoke(app, ["policy", "check", "--org", "acme", "--format", "csv", "--verdict", "overdue"])
    assert [(r["email"], r["verdict"]) for r in csv.DictReader(io.StringIO(as_csv.stdout))] == [
        ("fin@acme.io", "overdue")
    ]
    table = cli.invoke(app, ["policy", "check", "--org", "acme"])
    assert "1 of 3 members in scope enrolled (33.3%)" in table.output
    assert table.output.strip().splitlines()[-1] == "1 compliant, 1 overdue, 1 pending"
    bad = cli.invoke(app, ["policy", "check", "--org", "acme", "--verdict", "late"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: verdict: one of")


def test_audit_export_and_verify_catching_an_edit_and_a_deletion(
    cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    acme(factory, clock)
    assert cli.invoke(app, ["policy", "set", "--org", "acme", "--grace-days", "7"]).exit_code == 0
    exported = cli.invoke(app, ["audit", "export", "--org", "acme", "--since", "2026-11-01"])
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["event"] for e in events] == ["totp_enrolment_started", "2fa_enabled", "policy_changed"]
    assert events[0]["member"] == "owner@acme.io" and events[2]["credential"] == "cli"
    later = cli.invoke(app, ["audit", "export", "--org", "acme", "--since", "2027-01-01", "--format", "csv"])
    assert later.stdout.splitlines() == [
        ",".join(
            [
                "id",
                "at",
                "event",
                "member",
                "actor",
                "credential",
                "credential_id",
                "client_ip",
                "details",
                "chain",
                "chain_seq",
            ]
        )
    ]

    intact = cli.invoke(app, ["audit", "verify"])
    assert intact.exit_code == 0 and "audit trail intact: 3 rows" in intact.output
    with tampering(factory) as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE id = :id"), {"id": events[1]["id"]})
    caught = cli.invoke(app, ["audit", "verify", "--org", "acme"])
    assert caught.exit_code == 0  # the organisation's own chain holds; the member's rows are in the other chain
    caught = cli.invoke(app, ["audit", "verify"])
    assert caught.exit_code == 1
    assert caught.output.strip() == f"BROKEN chain none: row {events[1]['id']} (#2) was changed after it was written"
    with tampering(factory) as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": events[2]["id"]})
    gone = cli.invoke(app, ["audit", "verify", "--org", "acme"])
    assert gone.exit_code == 1 and "the rows from #1 on, the chain's last, were deleted" in gone.output


def test_a_support_reset_ends_every_session_and_tells_the_admins_once(
    cli: CliRunner, factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    acme(factory, clock)
    fin = make_user(factory, "fin2@acme.io", role="finance", clock=clock)
    enrol_totp(factory, fin, clock)
    with transaction(factory) as s:
        sessions.issue(s, fin, twofa_verified=True, method="totp", client=sessions.Client(), clock=clock)
    result = cli.invoke(
        app, ["support", "reset-2fa", "--email", "fin2@acme.io", "--operator", "carol", "--reason", "id checked"]
    )
    assert result.exit_code == 0, result.output
    with factory() as s:
        assert s.execute(select(UserSession.revoked_at).where(UserSession.user_id == fin.id)).scalar_one() is not None
        told = (
            s.execute(
                select(OutboxMessage.to_address)
                .where(OutboxMessage.template == "admin_notice")
                .order_by(OutboxMessage.to_address)
            )
            .scalars()
            .all()
        )
        assert told == ["admin@acme.io", "owner@acme.io"]
        row = s.execute(select(AuditEvent).where(AuditEvent.event == "2fa_reset_by_support")).scalar_one()
        assert (row.credential, row.actor) == ("cli", "support:carol")
