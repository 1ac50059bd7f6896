"""Policies over time: which emails went to whom on which day, moving the clock through 30 days."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies import reminders
from policies.evaluate import evaluate
from policies.gate import enrolment_required
from policies.rules import get_policy, set_policy
from policies.verdicts import Compliant, Exempt, Overdue, Pending
from tests.helpers import PASSWORD, at_once, enrol_totp, make_user
from twofa import accounts, logins, manage, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import InvalidInput
from twofa.models import AuditEvent, OutboxMessage, User
from twofa.sessions import Client

DAY0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday, 09:00


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(DAY0)


def at(day: int, hour: int = 10, minute: int = 0) -> datetime:
    return DAY0.replace(hour=hour, minute=minute) + timedelta(days=day)


def run(factory: sessionmaker[Session], clock: FrozenClock) -> list[reminders.Planned]:
    with transaction(factory) as s:
        return reminders.run(s, clock=clock).sent


def sent(factory: sessionmaker[Session]) -> list[tuple[int, str, str, str]]:
    """(day, template, to, stage-or-first-overdue) of every policy email, in order."""
    with factory() as s:
        rows = s.execute(
            select(OutboxMessage).where(OutboxMessage.dedupe_key.is_not(None)).order_by(OutboxMessage.id)
        ).scalars()
        return [
            ((r.created_at - DAY0).days, r.template, r.to_address, r.context.get("stage", "escalation")) for r in rows
        ]


def test_thirty_days_of_reminders_and_escalations(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    owner = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    make_user(factory, "admin@acme.io", role="admin", clock=clock)
    make_user(factory, "fin@acme.io", role="finance", clock=clock)
    early = make_user(factory, "early@acme.io", role="super_admin", clock=clock)
    promoted = make_user(factory, "prom@acme.io", role="member", clock=clock)
    make_user(factory, "plain@acme.io", role="member", clock=clock)
    log: list[tuple[int, str, str, str]] = []
    for day in range(31):
        if day == 4:
            clock.set(at(4, 8))
            enrol_totp(factory, early, clock)
        if day == 5:
            clock.set(at(5, 12))
            with transaction(factory) as s:
                org = accounts.require_org(s, "acme")
                accounts.change_role(s, org, s.get(User, promoted.id), "finance", clock=clock)  # type: ignore[arg-type]
        clock.set(at(day))
        for p in run(factory, clock):
            log.append((day, p.template, p.to, p.stage))

    def days(to: str, template: str = "policy_reminder") -> list[tuple[int, str]]:
        return [(d, stage) for d, t, who, stage in log if who == to and t == template]

    original = [(0, "start"), (7, "d7"), (11, "d3"), (13, "d1"), (14, "overdue")]
    assert days("owner@acme.io") == original
    assert days("admin@acme.io") == original
    assert days("fin@acme.io") == original
    assert days("early@acme.io") == [(0, "start")]  # enrolled on day 4: compliant, nothing more
    # Promoted on day 5 at 12:00: deadline day 19 at 12:00; each stage goes out at the first daily run after it.
    assert days("prom@acme.io") == [(6, "start"), (13, "d7"), (17, "d3"), (19, "d1"), (20, "overdue")]
    assert days("plain@acme.io") == []
    # Escalation: once when the first deadline passed, then weekly, to owners and admins only.
    assert days("owner@acme.io", "policy_escalation") == [(14, "escalation"), (21, "escalation"), (28, "escalation")]
    assert days("admin@acme.io", "policy_escalation") == days("owner@acme.io", "policy_escalation")
    assert [d for d, t, _, _ in log if t == "policy_escalation"] == [14, 14, 21, 21, 28, 28]
    with factory() as s:
        summaries = (
            s.execute(
                select(OutboxMessage).where(OutboxMessage.template == "policy_escalation").order_by(OutboxMessage.id)
            )
            .scalars()
            .all()
        )
        assert [m["email"] for m in summaries[0].context["overdue"]] == [
            "admin@acme.io",
            "fin@acme.io",
            "owner@acme.io",
        ]
        assert [m["email"] for m in summaries[-1].context["overdue"]] == [
            "admin@acme.io",
            "fin@acme.io",
            "owner@acme.io",
            "prom@acme.io",
        ]
        # Whole days past the deadline (day 14, 09:00): less than a day at the first run, 14 two weeks later
        assert summaries[0].context["overdue"][0]["days_overdue"] == 0
        assert summaries[-1].context["overdue"][0]["days_overdue"] == 14
        audited = s.execute(select(AuditEvent.event).where(AuditEvent.event.like("policy_%"))).scalars().all()
    assert audited.count("policy_reminder_sent") == 21 and audited.count("policy_escalation_sent") == 6
    assert sent(factory) == log
    assert owner is not None


def test_every_run_is_idempotent(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    clock.set(at(14))
    first = run(factory, clock)
    assert [(p.template, p.stage) for p in first] == [
        ("policy_reminder", "overdue"),
        ("policy_escalation", "escalation"),
    ]
    assert run(factory, clock) == []
    clock.advance(hours=5)
    assert run(factory, clock) == []
    assert len(sent(factory)) == 2


@pytest.mark.committed
def test_concurrent_runs_send_each_email_once(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    for i in range(10):
        make_user(factory, f"m{i}@acme.io", role="admin", clock=clock)
    clock.set(at(15))
    results = at_once([functools.partial(run, factory, clock)] * 4)
    assert [r for r in results if isinstance(r, BaseException)] == []
    emails = sent(factory)
    assert len(emails) == 10 + 10  # one overdue reminder each, one escalation to each admin
    assert len({(t, to, stage) for _, t, to, stage in emails}) == len(emails)


def test_sso_organisations_are_exempt(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, "o@sso.io", org="ssoco", sso="okta", role="owner", clock=clock)
    clock.set(at(20))
    assert run(factory, clock) == []
    with factory() as s:
        [verdict] = list(evaluate(s, clock.now(), user_id=user.id))
    assert verdict.verdict == Exempt("managed_by_sso")


def test_policy_switched_off_then_on_starts_a_fresh_grace_period(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"required": False}, actor="test", clock=clock)
    for day in range(10):
        clock.set(at(day))
        assert run(factory, clock) == []
    clock.set(at(10, 9))
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"required": True}, actor="test", clock=clock)
    clock.set(at(10))
    assert [p.stage for p in run(factory, clock)] == ["start"]
    with factory() as s:
        [v] = list(evaluate(s, clock.now()))
    assert v.verdict == Pending(at(24, 9), 14)
    with factory() as s:
        changes = s.execute(select(AuditEvent).where(AuditEvent.event == "policy_changed")).scalars().all()
    assert [c.details["after"]["required"] for c in changes] == [False, True]


def test_deadline_is_stored_and_not_moved_by_a_later_grace_change(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    run(factory, clock)  # stores the deadline: day 14
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"grace_days": 60}, actor="test", clock=clock)
    clock.set(at(20))
    with factory() as s:
        [v] = list(evaluate(s, clock.now()))
    assert isinstance(v.verdict, Overdue) and v.verdict.deadline == DAY0 + timedelta(days=14)


def test_disabling_2fa_gives_a_short_deadline_not_a_fresh_grace(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    user = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    clock.set(at(20, 9, 30))
    with transaction(factory) as s:
        manage.disable(s, user, PASSWORD, totp.code_at(secret, clock.now()), clock=clock)
    clock.set(at(20))
    with factory() as s:
        [v] = list(evaluate(s, clock.now()))
    assert v.verdict == Pending(at(21, 9, 30), 1)
    assert [p.stage for p in run(factory, clock)] == ["d1"]
    clock.set(at(21))
    assert [(p.template, p.stage) for p in run(factory, clock)] == [
        ("policy_reminder", "overdue"),
        ("policy_escalation", "escalation"),
    ]
    # Disabling early in the grace period shortens it too.
    other = make_user(factory, "fin@acme.io", role="finance", clock=clock)
    secret2, _ = enrol_totp(factory, other, clock)
    clock.advance(days=2)
    with transaction(factory) as s:
        manage.disable(s, other, PASSWORD, totp.code_at(secret2, clock.now()), clock=clock)
    with factory() as s:
        verdict = next(v for v in evaluate(s, clock.now()) if v.email == "fin@acme.io").verdict
    assert isinstance(verdict, Pending) and verdict.deadline == clock.now() + timedelta(days=1)


def test_totp_only_roles_do_not_count_email_codes(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    from tests.helpers import last_code
    from twofa import enrolment, outbox
    from twofa.mail.backends import MemoryBackend
    from twofa.mail.sync import SynchronousDispatcher

    backend = MemoryBackend()
    previous = outbox.install_dispatcher(SynchronousDispatcher(factory, backend, clock))
    try:
        user = make_user(factory, "fin@acme.io", role="finance", clock=clock)
        with transaction(factory) as s:
            enrolment.start_email(s, user, PASSWORD, clock)
        with transaction(factory) as s:
            enrolment.confirm_email(s, user, last_code(backend, user.email), clock=clock)
    finally:
        outbox.install_dispatcher(previous)
    with factory() as s:
        assert next(evaluate(s, clock.now())).verdict == Compliant("email")
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"totp_only_roles": ["finance"]}, actor="t", clock=clock)
    with factory() as s:
        verdict = next(evaluate(s, clock.now())).verdict
    assert isinstance(verdict, Pending) and verdict.reason == "totp_required"
    reminder = run(factory, clock)[0]
    assert reminder.context["email_allowed"] is False


def test_after_the_deadline_login_may_only_enrol(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, "owner@acme.io", role="owner", clock=clock)
    web = Client(ip="192.0.2.1", user_agent="t")
    clock.set(at(13))
    with transaction(factory) as s:
        result = logins.login_with_password(s, user.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.LoggedIn) and not result.enrolment_required
    clock.set(at(15))
    with transaction(factory) as s:
        result = logins.login_with_password(s, user.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.LoggedIn) and result.enrolment_required and result.session.scope == "enrol"
    secret, _ = enrol_totp(factory, user, clock)
    with transaction(factory) as s:
        challenge = logins.login_with_password(s, user.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(challenge, logins.SecondFactorRequired)
    with transaction(factory) as s:
        done = logins.complete_login(
            s, challenge.challenge, totp.code_at(secret, clock.now()), web, gate=enrolment_required, clock=clock
        )
    assert not done.enrolment_required
    # A lenient policy only reminds.
    with transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), {"after_deadline": "remind_only"}, actor="t", clock=clock)
    lenient = make_user(factory, "fin@acme.io", role="finance", clock=clock)
    clock.advance(days=30)
    with transaction(factory) as s:
        result = logins.login_with_password(s, lenient.email, PASSWORD, web, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.LoggedIn) and not result.enrolment_required


@pytest.mark.parametrize(
    "changes",
    [
        {"roles": ["emperor"]},
        {"grace_days": -1},
        {"reminder_days": [3, 3]},
        {"after_deadline": "explode"},
        {"totp_only_roles": ["member"]},
        {"colour": "red"},
    ],
)
def test_bad_policy_changes_are_refused_and_change_nothing(
    factory: sessionmaker[Session], clock: FrozenClock, changes: dict[str, object]
) -> None:
    make_user(factory, "owner@acme.io", role="owner", clock=clock)
    with pytest.raises(InvalidInput), transaction(factory) as s:
        set_policy(s, accounts.require_org(s, "acme"), changes, actor="t", clock=clock)
    with factory() as s:
        policy = get_policy(s, accounts.require_org(s, "acme"))
        assert not policy.stored
        assert s.execute(select(AuditEvent).where(AuditEvent.event == "policy_changed")).first() is None
