"""TOTP and email enrolment."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import PASSWORD, enrol_totp, last_code, make_user, stored_secret, subjects
from twofa import backup_codes, enrolment, manage, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import InvalidCode, MalformedCode, ManagedBySso, NoPendingEnrolment, TwoFactorAlreadyEnabled
from twofa.mail.backends import MemoryBackend
from twofa.models import AuditEvent, TotpDevice, User


def test_enrol_totp_then_confirm(factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        started = enrolment.start_totp(s, user, PASSWORD, clock=clock)
    assert started.otpauth_url.startswith("otpauth://totp/Wevion:alice%40example.com?secret=" + started.secret)
    assert "secret=<hidden>" in repr(started)
    with transaction(factory) as s:
        codes = enrolment.confirm_totp(s, user, totp.code_at(started.secret, clock.now()), clock=clock)
    assert len(codes) == 10 and len(set(codes)) == 10
    with factory() as s:
        status = manage.status(s, s.get(User, user.id))  # type: ignore[arg-type]
        assert (status.enabled, status.method, status.backup_codes_left) == (True, "totp", 10)
        events = s.execute(select(AuditEvent.event).where(AuditEvent.user_id == user.id)).scalars().all()
    assert "2fa_enabled" in events
    assert any("Two-factor authentication is on" in subj for subj in subjects(mailbox, user.email))


def test_start_again_replaces_the_pending_seed(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        first = enrolment.start_totp(s, user, PASSWORD, clock=clock)
    with transaction(factory) as s:
        second = enrolment.start_totp(s, user, PASSWORD, clock=clock)
    assert first.secret != second.secret
    assert stored_secret(factory, user.id) == second.secret
    with pytest.raises(InvalidCode), transaction(factory) as s:
        enrolment.confirm_totp(s, user, totp.code_at(first.secret, clock.now()), clock=clock)
    with transaction(factory) as s:
        assert len(enrolment.confirm_totp(s, user, totp.code_at(second.secret, clock.now()), clock=clock)) == 10


def test_wrong_or_malformed_confirmation_changes_nothing(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        started = enrolment.start_totp(s, user, PASSWORD, clock=clock)
    good = totp.code_at(started.secret, clock.now())
    wrong = f"{(int(good) + 1) % 1_000_000:06d}"
    for bad, error in ((wrong, InvalidCode), ("12345", MalformedCode), ("１２３４５６", MalformedCode)):
        with pytest.raises(error), transaction(factory) as s:
            enrolment.confirm_totp(s, user, bad, clock=clock)
    with factory() as s:
        row = s.get(User, user.id)
        assert row is not None and row.twofa_method is None and row.second_factor_failures == 0
        assert s.execute(select(TotpDevice.confirmed_at)).scalar_one() is None
        assert backup_codes.remaining(s, user.id) == 0
    assert stored_secret(factory, user.id) == started.secret
    with transaction(factory) as s:
        enrolment.confirm_totp(s, user, good, clock=clock)


def test_confirm_without_start_and_enrol_twice_are_refused(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    with pytest.raises(NoPendingEnrolment), transaction(factory) as s:
        enrolment.confirm_totp(s, user, "123456", clock=clock)
    enrol_totp(factory, user, clock)
    with pytest.raises(TwoFactorAlreadyEnabled), transaction(factory) as s:
        enrolment.start_totp(s, user, PASSWORD, clock=clock)


def test_sso_members_are_managed_by_sso(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, org="ssoco", sso="okta", clock=clock)
    with factory() as s:
        assert manage.status(s, user).managed_by_sso
    with pytest.raises(ManagedBySso), transaction(factory) as s:
        enrolment.start_totp(s, user, PASSWORD, clock=clock)
    with pytest.raises(ManagedBySso), transaction(factory) as s:
        enrolment.start_email(s, user, PASSWORD, clock)


def test_enrol_email_otp(factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        enrolment.start_email(s, user, PASSWORD, clock)
    code = last_code(mailbox, user.email)
    with transaction(factory) as s:
        codes = enrolment.confirm_email(s, user, code, clock=clock)
    assert len(codes) == 10
    with factory() as s:
        assert manage.status(s, user).method == "email"
