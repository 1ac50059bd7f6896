"""What the emails say, word for word: each message a user relies on, rendered from its template."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies import reminders
from policies.evaluate import evaluate
from policies.rules import set_policy
from policies.verdicts import Overdue
from tests.helpers import make_user, parsed, text_of
from tests.twofa.test_mail import BASE, SAMPLE
from twofa import accounts
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend
from twofa.mail.render import render
from twofa.models import OutboxMessage
from twofa.notify import BackupCodePurpose, Template, notify


def words(template: str, **context: Any) -> tuple[str, str, str]:
    """(subject, text, the HTML's visible text with whitespace collapsed)."""
    subject, text, html = render(template, BASE | context)
    visible = re.sub(r"<[^>]+>", " ", html).replace("&gt;", ">").replace("&lt;", "<")
    return subject, " ".join(text.split()), " ".join(visible.split())


@pytest.mark.parametrize(
    ("purpose", "subject", "sentence"),
    [
        (None, "A backup code was used on your Wevion account", "A backup code for user@example.com was used at"),
        ("sign_in", "A backup code was used to sign in", "was used to sign in at 2026-11-30 10:00 UTC."),
        (
            "disable_2fa",
            "A backup code was used to turn off two-factor authentication",
            "was used to turn off two-factor authentication at 2026-11-30 10:00 UTC.",
        ),
        ("change_factor", "A backup code was used to set up a new second factor", "to set up a new second factor at"),
        (
            "reauthenticate",
            "A backup code was used to confirm a change to how the account is protected",
            "to confirm a change to how the account is protected at",
        ),
    ],
)
def test_a_used_backup_code_says_what_it_was_used_for(purpose: str | None, subject: str, sentence: str) -> None:
    context: dict[str, Any] = {"remaining": 1} | ({"purpose": purpose} if purpose else {})
    got_subject, text, html = words("backup_code_used", **context)
    assert got_subject == subject
    assert sentence in text and sentence in html
    if purpose == "disable_2fa":
        assert "Turning two-factor authentication off voided all your backup codes." in text
        assert "turn two-factor authentication back on in your security settings" in text
    elif purpose == "change_factor":
        assert "That code no longer works. If this was not you" in text
    else:
        assert "That code no longer works; 1 backup code left." in text and "That code no longer works;" in html
        assert "generate a new set of backup codes in your security settings" in text


def test_notify_takes_a_known_purpose_only(session: Session, clock: FrozenClock) -> None:
    user = accounts.create_user(session, "ann@acme.io", "long enough password", clock=clock)
    notify(
        session, user, Template.BACKUP_CODE_USED, {"remaining": 3, "purpose": BackupCodePurpose.SIGN_IN}, clock=clock
    )
    session.flush()
    row = session.execute(select(OutboxMessage)).scalar_one()
    assert row.context["purpose"] == "sign_in" and type(row.context["purpose"]) is str
    with pytest.raises(ValueError, match="'signin' is not a valid BackupCodePurpose"):
        notify(session, user, Template.BACKUP_CODE_USED, {"remaining": 3, "purpose": "signin"}, clock=clock)


def test_no_mail_asks_for_a_password_reset_the_product_cannot_do(project_root: Path) -> None:
    contexts = [(name, context) for name, context in SAMPLE.items()]
    contexts += [("backup_code_used", {"remaining": 1, "purpose": p.value}) for p in BackupCodePurpose]
    for name, context in contexts:
        for part in render(name, BASE | context):
            flat = " ".join(part.split()).lower()
            assert not re.search(r"(reset|change|update) (it|your password)|password reset|new password", flat), name
    for path in (project_root / "templates" / "email").rglob("*.*"):
        assert "reset your password" not in path.read_text().lower(), path


def test_an_email_code_says_minute_or_minutes() -> None:
    assert (
        "It is valid for 1 minute and works once."
        in words("email_code", code="123456", expires_in_minutes=1, purpose="login")[1]
    )
    _, text, html = words("email_code", code="123456", expires_in_minutes=5, purpose="login")
    assert "It is valid for 5 minutes and works once. It completes the sign-in you just started." in text
    assert "It is valid for 5 minutes and works once." in html


def overdue(days: int, email: str = "ann@acme.io") -> dict[str, Any]:
    return {"email": email, "role": "owner", "deadline": "2026-12-01", "days_overdue": days}


def test_overdue_days_are_whole_days_past_the_deadline() -> None:
    members = [overdue(0, "a@acme.io"), overdue(1, "b@acme.io"), overdue(9, "c@acme.io")]
    _, text, html = words("policy_escalation", org_name="Acme", overdue=members)
    assert "a@acme.io (owner), deadline 2026-12-01, less than a day overdue" in text
    assert "b@acme.io (owner), deadline 2026-12-01, 1 day overdue" in text
    assert "c@acme.io (owner), deadline 2026-12-01, 9 days overdue" in text
    assert "a@acme.io owner 2026-12-01 less than a day b@acme.io owner 2026-12-01 1 day" in html
    assert "You are on this list too" not in text  # user@example.com is not overdue


def test_a_verdict_counts_whole_days(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    clock.set(datetime(2026, 11, 1, 9, tzinfo=UTC))
    owner = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    deadline = datetime(2026, 11, 15, 9, tzinfo=UTC)  # the default policy's 14 days of grace
    for late, days in ((timedelta(minutes=1), 0), (timedelta(hours=23, minutes=59), 0), (timedelta(days=1), 1)):
        with factory() as s:
            [v] = evaluate(s, deadline + late, user_id=owner.id)
        assert v.verdict == Overdue(deadline, days), late


def test_an_overdue_admins_escalation_says_it_lists_them_too(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    clock.set(datetime(2026, 11, 1, 9, tzinfo=UTC))
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    make_user(factory, "admin@acme.io", role="admin", clock=clock)
    clock.set(datetime(2026, 11, 15, 10, tzinfo=UTC))  # an hour past both deadlines
    with transaction(factory) as s:
        reminders.run(s, clock=clock)
    escalations = {str(m["To"]): parsed(m) for m in mailbox.sent if "still without" in str(m["Subject"])}
    text = " ".join(text_of(escalations["admin@acme.io"]).split())
    assert "- admin@acme.io (you) (admin), deadline 2026-11-15, less than a day overdue" in text
    assert (
        "You are on this list too: turn on two-factor authentication yourself, under Settings > Security >"
        " Two-factor authentication." in text
    )
    assert "Their next sign-in asks them to enrol before anything else." in text
    html = escalations["admin@acme.io"].get_body(preferencelist=("html",))
    assert (
        html is not None
        and "You are on this list too:</strong> turn on two-factor authentication" in html.get_content()
    )


def test_reminders_after_the_deadline_say_what_the_policy_does(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    clock.set(datetime(2026, 11, 1, 9, tzinfo=UTC))
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"after_deadline": "remind_only"}, actor="test", clock=clock)
    clock.set(datetime(2026, 11, 15, 10, tzinfo=UTC))
    with transaction(factory) as s:
        reminders.run(s, clock=clock)
    texts = {str(m["Subject"]): " ".join(text_of(m).split()) for m in mailbox.sent}
    reminder = texts["Action required: turn on two-factor authentication for acme"]
    assert "The deadline was 2026-11-15 09:00 UTC: please turn it on now." in reminder
    escalation = texts["1 member of acme still without two-factor authentication"]
    assert "They can still sign in without it: the policy only reminds them." in escalation
    assert "next sign-in" not in reminder + escalation


def test_an_unrelated_admin_is_not_told_they_are_listed() -> None:
    _, text, _ = words("policy_escalation", org_name="Acme", overdue=[overdue(2)], email="boss@acme.io")
    assert "(you)" not in text and "You are on this list too" not in text
    _, text, _ = words("policy_escalation", org_name="Acme", overdue=[overdue(2)], email="ann@acme.io")
    assert "ann@acme.io (you) (owner)" in text and "You are on this list too" in text


def test_a_weekly_report_with_nobody_in_scope_says_so() -> None:
    sample = SAMPLE["weekly_report"] | {"in_scope": 0, "coverage_pct": "n/a", "logins": 0, "verified_pct": "n/a"}
    subject, text, _ = words("weekly_report", **sample)
    assert subject == "2FA coverage for Acme, week 2026-W48: nobody in scope"
    assert "Enrolled: nobody is in scope of the policy. Sign-ins: none this week." in text
    assert "n/a%" not in subject + text
