"""Disabling, support resets, API keys, and the audit trail they leave."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.helpers import PASSWORD, at_once, enrol_totp, last_code, make_user, subjects
from tests.twofa.test_login import WEB, begin, finish
from twofa import api_keys, audit, enrolment, logins, manage, throttle, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import (
    InvalidApiKey,
    InvalidCode,
    InvalidCredentials,
    InvalidInput,
    TwoFactorNotEnabled,
)
from twofa.mail.backends import MemoryBackend
from twofa.models import AuditEvent, User


def events(factory: sessionmaker[Session]) -> list[str]:
    with factory() as s:
        return list(s.execute(select(AuditEvent.event).order_by(AuditEvent.id)).scalars())


def test_disable_needs_password_and_a_current_code(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    secret, codes = enrol_totp(factory, user, clock)
    with pytest.raises(InvalidCredentials) as wrong_password, transaction(factory) as s:
        manage.disable(s, user, "wrong password!", totp.code_at(secret, clock.now()), clock=clock)
    with pytest.raises(InvalidCredentials) as wrong_code, transaction(factory) as s:
        manage.disable(
            s, user, PASSWORD, "000000" if totp.code_at(secret, clock.now()) != "000000" else "111111", clock=clock
        )
    # Answered alike, and both counted toward the lockout.
    assert (wrong_password.value.code, wrong_password.value.message) == (
        wrong_code.value.code,
        wrong_code.value.message,
    )
    with factory() as s:
        assert s.get(User, user.id).second_factor_failures == 2  # type: ignore[union-attr]
    with factory() as s:
        assert manage.status(s, user).enabled
    with transaction(factory) as s:
        manage.disable(s, user, PASSWORD, codes[0], clock=clock)  # a backup code works too
    with factory() as s:
        status = manage.status(s, user)
        assert (status.enabled, status.backup_codes_left) == (False, 0)
    assert "2fa_disabled" in events(factory)
    assert "Two-factor authentication was turned off" in subjects(mailbox, user.email)
    with transaction(factory) as s:
        result = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.LoggedIn) and not result.session.twofa_verified


def test_reenable_on_a_new_device(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    old_secret, _ = enrol_totp(factory, user, clock)
    with transaction(factory) as s:
        manage.disable(s, user, PASSWORD, totp.code_at(old_secret, clock.now()), clock=clock)
    new_secret, _ = enrol_totp(factory, user, clock)
    assert new_secret != old_secret
    challenge = begin(factory, user.email, clock).challenge
    old_code = totp.code_at(old_secret, clock.now())
    if old_code != totp.code_at(new_secret, clock.now()):
        with pytest.raises(InvalidCode):
            finish(factory, challenge, old_code, clock)
    finish(factory, challenge, totp.code_at(new_secret, clock.now()), clock)


def test_email_user_disables_with_an_emailed_code(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        enrolment.start_email(s, user, PASSWORD, clock)
    with transaction(factory) as s:
        enrolment.confirm_email(s, user, last_code(mailbox, user.email), clock=clock)
    clock.advance(seconds=61)
    with transaction(factory) as s:
        manage.request_confirmation_code(s, user, clock)
    with transaction(factory) as s:
        manage.disable(s, user, PASSWORD, last_code(mailbox, user.email), clock=clock)
    with factory() as s:
        assert not manage.status(s, user).enabled


def test_support_reset_is_audited_with_operator_and_reason(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    with pytest.raises(InvalidInput), transaction(factory) as s:
        manage.support_reset(s, user, operator="carol", reason="  ", clock=clock)
    with transaction(factory) as s:
        manage.support_reset(
            s, user, operator="carol", reason="lost phone, identity checked on call #4411", clock=clock
        )
    with factory() as s:
        row = s.execute(select(AuditEvent).where(AuditEvent.event == "2fa_reset_by_support")).scalar_one()
        assert row.actor == "support:carol" and "lost phone" in row.details["reason"]
        assert not manage.status(s, user).enabled
    assert "Your two-factor authentication was reset by support" in subjects(mailbox, user.email)
    with pytest.raises(TwoFactorNotEnabled), transaction(factory) as s:
        manage.support_reset(s, user, operator="carol", reason="again", clock=clock)


def test_api_keys_work_whatever_the_2fa_state(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    with transaction(factory) as s:
        created = api_keys.create(s, user, "ci deploy", clock)
        key_id = created.row.id
    assert created.key.startswith("wvn_") and created.key not in repr(created)
    with transaction(factory) as s:
        assert api_keys.authenticate(s, created.key, clock).id == user.id
    for bad in (created.key + "x", created.key[:-1], "wvn_nothing_here", "Bearer " + created.key, ""):
        with pytest.raises(InvalidApiKey), transaction(factory) as s:
            api_keys.authenticate(s, bad, clock)
    with transaction(factory) as s:
        api_keys.revoke(s, user.id, key_id, clock)
    with pytest.raises(InvalidApiKey), transaction(factory) as s:
        api_keys.authenticate(s, created.key, clock)
    assert {"api_key_created", "api_key_revoked"} <= set(events(factory))
    assert "A new API key was created" in subjects(mailbox, user.email)
    with pytest.raises(InvalidInput), transaction(factory) as s:
        api_keys.create(s, user, "   ", clock)


def test_audit_log_is_append_only(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    with factory() as s:
        row = s.execute(select(AuditEvent)).scalars().first()
        assert row is not None
        row.event = "tampered"
        with pytest.raises(RuntimeError, match="append-only"):
            s.flush()
        s.rollback()
        if s.get_bind().dialect.name == "postgresql":
            with pytest.raises(Exception, match="append-only"):
                s.execute(text("DELETE FROM audit_log"))
            s.rollback()
    assert "tampered" not in events(factory)


def test_users_are_reloaded_not_trusted_from_the_caller(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    stale = User(id=user.id, email=user.email, password_hash=user.password_hash)  # twofa_method None
    with pytest.raises(Exception, match="already on"), transaction(factory) as s:
        enrolment.start_totp(s, stale, PASSWORD, clock=clock)


@pytest.mark.committed
def test_user_locks_taken_after_writing_rows_that_refer_to_the_user(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A row referring to a user (an audit event here) share-locks the user on PostgreSQL. Two transactions that each
    wrote one and then lock the user must take turns: with FOR UPDATE, each waited for the other's share lock and
    one died in a deadlock."""
    user = make_user(factory, clock=clock)
    barrier = threading.Barrier(2)

    def write_then_lock() -> None:
        with transaction(factory) as s:
            audit.record(s, audit.Event.CODE_REPLAY_REFUSED, user_id=user.id, clock=clock)
            s.flush()
            barrier.wait(timeout=10)
            throttle.lock_user(s, user.id)

    assert at_once([write_then_lock] * 2, barrier=barrier) == [None, None]
    with factory() as s:
        assert len(s.execute(select(AuditEvent).where(AuditEvent.user_id == user.id)).scalars().all()) == 2
