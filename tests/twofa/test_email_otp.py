"""Email codes: delivery-time generation, 5-minute validity, tries, supersession, cooldown, hourly cap."""

from __future__ import annotations

import functools
import re
from datetime import timedelta
from email.message import Message

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.helpers import PASSWORD, at_once, code_of, last_code, make_user
from tests.twofa.test_login import WEB, finish
from twofa import email_otp, enrolment, logins, outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import (
    ChallengeInvalid,
    CodeExpired,
    CodeReused,
    HourlyCapReached,
    InvalidCode,
    ResendCooldown,
)
from twofa.mail import delivery
from twofa.mail.backends import MemoryBackend, TransientMailError
from twofa.mail.delivery import attempt, code_message_id, record_failure
from twofa.mail.sync import deliver_queued
from twofa.models import EmailOtp, OutboxMessage
from twofa.models.accounts import User
from twofa.settings import get_settings


def email_user(factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend) -> User:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        enrolment.start_email(s, user, PASSWORD, clock)
    with transaction(factory) as s:
        enrolment.confirm_email(s, user, last_code(mailbox, user.email), clock=clock)
    clock.advance(seconds=61)
    return user


def start_login(factory: sessionmaker[Session], user: User, clock: FrozenClock) -> logins.SecondFactorRequired:
    with transaction(factory) as s:
        result = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.SecondFactorRequired)
    return result


def test_login_with_an_email_code(factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend) -> None:
    user = email_user(factory, clock, mailbox)
    challenge = start_login(factory, user, clock)
    assert challenge.methods == ["email", "backup_code"] and challenge.email_code_sent
    done = finish(factory, challenge.challenge, last_code(mailbox, user.email), clock)
    assert done.method == "email" and done.session.twofa_verified


@pytest.mark.parametrize(("elapsed", "accepted"), [(299, True), (301, False)])
def test_valid_five_minutes(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend, elapsed: int, accepted: bool
) -> None:
    user = email_user(factory, clock, mailbox)
    challenge = start_login(factory, user, clock)
    code = last_code(mailbox, user.email)
    clock.advance(seconds=elapsed)
    if accepted:
        finish(factory, challenge.challenge, code, clock)
    else:
        with pytest.raises(CodeExpired):
            finish(factory, challenge.challenge, code, clock)


def test_code_is_made_at_delivery_and_only_its_hash_is_kept(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    backend = MemoryBackend()
    previous = outbox.install_dispatcher(None)  # nothing delivers until we say so
    try:
        with transaction(factory) as s:
            enrolment.start_email(s, user, PASSWORD, clock)
        with factory() as s:
            otp = s.execute(select(EmailOtp)).scalar_one()
            row = s.execute(select(OutboxMessage)).scalar_one()
        assert otp.code_hash is None and row.queue == "otp" and "code" not in row.context
        assert deliver_queued(factory, backend, clock) == 1
        code = last_code(backend, user.email)
        with factory() as s:
            otp = s.execute(select(EmailOtp)).scalar_one()
            row = s.execute(select(OutboxMessage)).scalar_one()
        assert otp.code_hash is not None and code.encode() not in otp.code_hash
        assert row.status == "sent" and code not in str(row.context)
    finally:
        outbox.install_dispatcher(previous)


def test_an_expired_code_is_never_sent(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    backend = MemoryBackend()
    previous = outbox.install_dispatcher(None)
    try:
        with transaction(factory) as s:
            enrolment.start_email(s, user, PASSWORD, clock)
        clock.advance(seconds=300)
        assert deliver_queued(factory, backend, clock) == 0
        assert backend.sent == []
        with factory() as s:
            assert s.execute(select(OutboxMessage.status)).scalar_one() == "expired"
    finally:
        outbox.install_dispatcher(previous)


def test_sixth_try_is_refused_even_when_right(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWOFA_LOCKOUT_THRESHOLD", "50")  # isolate the per-code limit from the account lockout
    user = email_user(factory, clock, mailbox)
    challenge = start_login(factory, user, clock)
    code = last_code(mailbox, user.email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(InvalidCode):
            finish(factory, challenge.challenge, wrong, clock)
    with pytest.raises(CodeExpired, match="too many wrong tries"):
        finish(factory, challenge.challenge, code, clock)


def test_single_use_and_bound_to_its_login(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = email_user(factory, clock, mailbox)
    first = start_login(factory, user, clock)
    code = last_code(mailbox, user.email)
    clock.advance(seconds=61)
    second = start_login(factory, user, clock)  # voids the first code
    with pytest.raises(InvalidCode):
        finish(factory, second.challenge, code, clock)  # another login's code
    new_code = last_code(mailbox, user.email)
    with pytest.raises(InvalidCode):
        finish(factory, first.challenge, new_code, clock)  # not this login's code
    finish(factory, second.challenge, new_code, clock)
    third = start_login(factory, user, clock)
    with pytest.raises(InvalidCode):
        finish(factory, third.challenge, new_code, clock)


def test_reuse_within_a_login_is_refused(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = email_user(factory, clock, mailbox)
    with transaction(factory) as s:
        email_otp.issue(s, user, email_otp.CONFIRM, clock=clock)
    code = last_code(mailbox, user.email)
    with transaction(factory) as s:
        email_otp.verify(s, user, code, email_otp.CONFIRM, clock=clock)
    with pytest.raises(CodeReused), transaction(factory) as s:
        email_otp.verify(s, user, code, email_otp.CONFIRM, clock=clock)


def test_resend_cooldown_and_hourly_cap(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = email_user(factory, clock, mailbox)
    challenge = start_login(factory, user, clock)
    clock.advance(seconds=10)
    with pytest.raises(ResendCooldown) as info, transaction(factory) as s:
        logins.resend_login_code(s, challenge.challenge, clock)
    assert info.value.retry_after == 50
    # A new sign-in inside the cooldown gets a code of its own: the cooldown limits resends for one sign-in.
    assert start_login(factory, user, clock).email_code_sent
    sent = 3  # the enrolment code and two login codes, within the hour
    with pytest.raises(HourlyCapReached):
        for _ in range(20):
            clock.advance(seconds=61)
            challenge = start_login(factory, user, clock)
            if not challenge.email_code_sent:
                with transaction(factory) as s:
                    logins.resend_login_code(s, challenge.challenge, clock)
            sent += 1
    assert sent == 10


def test_a_sign_in_right_after_turning_email_codes_on_mails_its_code(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    """The help article's step 6: turn email codes on, log out and back in at once. The enrolment's code, seconds
    old, must not hold back the sign-in's."""
    user = email_user(factory, clock, mailbox)
    clock.advance(seconds=5)
    challenge = start_login(factory, user, clock)
    assert challenge.email_code_sent
    done = finish(factory, challenge.challenge, last_code(mailbox, user.email), clock)
    assert done.method == "email" and done.session.twofa_verified


def test_a_code_never_outlives_its_sign_in(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = email_user(factory, clock, mailbox)
    challenge = start_login(factory, user, clock)
    clock.advance(seconds=get_settings().login_challenge_ttl - 60)  # a resend a minute before the sign-in ends
    with transaction(factory) as s:
        logins.resend_login_code(s, challenge.challenge, clock)
    with factory() as s:
        code = s.execute(select(EmailOtp).order_by(EmailOtp.id.desc()).limit(1)).scalar_one()
    assert code.expires_at == challenge.expires_at == clock.now() + timedelta(seconds=60)
    clock.advance(seconds=61)
    with pytest.raises(ChallengeInvalid):
        finish(factory, challenge.challenge, last_code(mailbox, user.email), clock)


def test_a_failed_send_does_not_hold_the_user_to_the_cooldown(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = email_user(factory, clock, mailbox)
    previous = outbox.install_dispatcher(None)
    try:
        challenge = start_login(factory, user, clock)
        with factory() as s:
            row_id = s.execute(select(OutboxMessage.id).order_by(OutboxMessage.id.desc())).scalars().first()
        with transaction(factory) as s:
            assert row_id is not None
            record_failure(s, row_id, "550 mailbox unavailable", permanent=True, clock=clock)
    finally:
        outbox.install_dispatcher(previous)
    clock.advance(seconds=5)
    with transaction(factory) as s:
        logins.resend_login_code(s, challenge.challenge, clock)
    finish(factory, challenge.challenge, last_code(mailbox, user.email), clock)


def test_a_new_code_voids_the_open_ones_and_is_dispatched_after_commit(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Every column of the new code and its outbox row, the older code voided and its queued email cancelled, and
    the new row handed to the dispatcher once the transaction commits (one statement on PostgreSQL, several on
    SQLite: the same rows)."""
    user = make_user(factory, clock=clock)
    dispatched: list[list[outbox.OutboxRef]] = []
    previous = outbox.install_dispatcher(lambda refs: dispatched.append(list(refs)))
    try:
        with transaction(factory) as s:
            first = email_otp.issue(s, user, email_otp.ENROL, clock=clock)
        clock.advance(seconds=61)
        with transaction(factory) as s:
            second = email_otp.issue(s, user, email_otp.LOGIN, clock=clock)
            assert len(dispatched) == 1  # the first one's, not this one's: nothing before the commit
    finally:
        outbox.install_dispatcher(previous)
    assert dispatched == [[outbox.OutboxRef(first.outbox_id, "otp")], [outbox.OutboxRef(second.outbox_id, "otp")]]
    with factory() as s:
        old, new = s.get_one(EmailOtp, first.id), s.get_one(EmailOtp, second.id)
        old_mail, mail = s.get_one(OutboxMessage, first.outbox_id), s.get_one(OutboxMessage, second.outbox_id)
    assert old.invalidated_at == clock.now() and old.used_at is None
    assert (old_mail.status, old_mail.last_error) == ("cancelled", "a newer code replaced it")
    assert (new.user_id, new.purpose, new.challenge_id, new.created_at, new.failed_attempts) == (
        user.id,
        "login",
        None,
        clock.now(),
        0,
    )
    assert new.expires_at == clock.now() + timedelta(minutes=5)
    assert (new.code_hash, new.delivered_at, new.delivery_failed_at, new.used_at, new.invalidated_at) == (None,) * 5
    assert (mail.template, mail.queue, mail.to_address, mail.user_id, mail.email_otp_id) == (
        "email_code",
        "otp",
        user.email,
        user.id,
        new.id,
    )
    assert (mail.status, mail.created_at, mail.not_after, mail.attempts) == ("queued", clock.now(), new.expires_at, 0)
    unset = (mail.org_id, mail.dedupe_key, mail.next_attempt_at, mail.lease_until, mail.sent_at, mail.last_error)
    assert unset == (None,) * 6
    assert mail.context == {"email": user.email, "issuer": get_settings().issuer, "purpose": "login"}
    assert mail.message_id != old_mail.message_id and mail.message_id.startswith("<")


@pytest.mark.committed
def test_requests_for_a_code_at_once_queue_one(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """The user's row lock orders them: each later request sees the code the first committed, and waits out the
    cooldown (a read in the locking statement itself would see the rows as they were before the wait)."""
    user = make_user(factory, clock=clock)

    def request() -> email_otp.IssuedCode:
        with transaction(factory) as s:
            return email_otp.issue(s, user, email_otp.ENROL, clock=clock)

    previous = outbox.install_dispatcher(None)
    try:
        results = at_once([request] * 8)
    finally:
        outbox.install_dispatcher(previous)
    issued = [r for r in results if isinstance(r, email_otp.IssuedCode)]
    assert len(issued) == 1, results
    assert all(isinstance(r, ResendCooldown) for r in results if r is not issued[0]), results
    with factory() as s:
        assert len(s.execute(select(EmailOtp)).scalars().all()) == 1


@pytest.mark.committed
def test_an_email_user_signing_in_twice_at_once(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    """Each sign-in inserts its challenge (whose foreign key share-locks the user row on PostgreSQL) before it locks
    the user to issue a code: with FOR UPDATE there, two at once deadlocked. Each gets a challenge and a code of its
    own; each newer code voids the older ones, so one stays open."""
    user = email_user(factory, clock, mailbox)
    results = at_once([functools.partial(start_login, factory, user, clock)] * 8)
    assert all(isinstance(r, logins.SecondFactorRequired) and r.email_code_sent for r in results), results
    with factory() as s:
        codes = s.execute(select(EmailOtp).where(EmailOtp.purpose == email_otp.LOGIN)).scalars().all()
    assert len(codes) == 8 and sum(c.invalidated_at is None for c in codes) == 1


class AcceptedReplyLost(MemoryBackend):
    """A relay that takes the first message but whose reply never arrives: the sender sees a transient failure."""

    def send(self, message: Message) -> None:
        super().send(message)
        if len(self.sent) == 1:
            raise TransientMailError("451 connection problem: SMTPServerDisconnected")


def test_a_retried_code_is_a_new_message_and_a_retried_notice_the_same(
    factory: sessionmaker[Session], clock: FrozenClock, no_dispatch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that drops copies by Message-ID must not keep the first message of a retried code: its code no
    longer verifies. A notice, the same text each time, keeps the row's Message-ID, and the copy may be dropped."""
    made = iter(["123456", "654321"])  # two random codes would be equal once in a million runs
    monkeypatch.setattr(delivery, "new_email_code", lambda: next(made))
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        enrolment.start_email(s, user, PASSWORD, clock)
    backend = AcceptedReplyLost()
    [code_row] = queued_rows(factory)
    with factory.begin() as s:
        assert attempt(s, code_row.id, backend, retry_in=timedelta(seconds=1), clock=clock) == ("retry", True)
    clock.advance(seconds=2)
    with factory.begin() as s:
        assert attempt(s, code_row.id, backend, retry_in=timedelta(seconds=1), clock=clock) == ("sent", False)
    first, second = backend.sent
    base, _, domain = code_row.message_id.strip("<>").rpartition("@")
    ids = [str(m["Message-ID"]) for m in (first, second)]
    assert ids[0] != ids[1] and all(re.fullmatch(rf"<{base}\.[0-9a-f]{{8}}@{re.escape(domain)}>", i) for i in ids)
    old, new = (code_of(m) for m in (first, second))
    assert (old, new) == ("123456", "654321")
    with transaction(factory) as s, pytest.raises(InvalidCode):
        enrolment.confirm_email(s, user, old, clock=clock)
    with transaction(factory) as s:
        enrolment.confirm_email(s, user, new, clock=clock)

    [notice_row] = queued_rows(factory)  # "2FA turned on"
    backend = AcceptedReplyLost()
    with factory.begin() as s:
        assert attempt(s, notice_row.id, backend, retry_in=timedelta(seconds=1), clock=clock) == ("retry", True)
    clock.advance(seconds=2)
    with factory.begin() as s:
        assert attempt(s, notice_row.id, backend, retry_in=timedelta(seconds=1), clock=clock) == ("sent", False)
    assert [m["Message-ID"] for m in backend.sent] == [notice_row.message_id] * 2


def queued_rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as s:
        return list(s.execute(select(OutboxMessage).where(OutboxMessage.status == "queued")).scalars())


def test_a_code_message_id_marks_the_rows_before_the_at() -> None:
    marked = code_message_id("<abc.def@wevion.ai>")
    assert re.fullmatch(r"<abc\.def\.[0-9a-f]{8}@wevion\.ai>", marked)
    assert marked != code_message_id("<abc.def@wevion.ai>")
    with pytest.raises(ValueError, match="not a Message-ID"):
        code_message_id("<no-domain>")
