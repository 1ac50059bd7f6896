"""Password, then second factor, then a session; replay, lockout and the login history."""

from __future__ import annotations

import concurrent.futures
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, NamedTuple

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.helpers import PASSWORD, at_once, enrol_totp, make_user
from twofa import crypto, login_history, logins, sessions, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.errors import (
    ChallengeInvalid,
    CodeReused,
    InvalidCode,
    InvalidCredentials,
    MalformedCode,
    TooManyAttempts,
)
from twofa.mail.backends import MemoryBackend
from twofa.models import AuditEvent, LoginChallenge, LoginHistory, TotpDevice, User, UserSession
from twofa.sessions import Client

WEB = Client(ip="203.0.113.7", user_agent="pytest-browser/1.0")


def begin(factory: sessionmaker[Session], email: str, clock: FrozenClock) -> logins.SecondFactorRequired:
    with transaction(factory) as s:
        result = logins.login_with_password(s, email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(result, logins.SecondFactorRequired)
    return result


def finish(factory: sessionmaker[Session], challenge: str, code: str, clock: FrozenClock) -> logins.LoggedIn:
    """The second step as the API takes it: in a unit of work of its own."""
    with transaction(factory) as s:
        return logins.complete_login(s, challenge, code, WEB, gate=enrolment_required, clock=clock)


class AppSignIn(NamedTuple):
    user: User
    secret: str
    challenge: str
    step_before: int | None  # the device's last used step (the confirmation's)


def app_sign_in(factory: sessionmaker[Session], clock: FrozenClock) -> AppSignIn:
    """A user with an authenticator app, 30 s after enrolling (a step of its own), and an open challenge."""
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    clock.advance(seconds=30)
    challenge = begin(factory, user.email, clock).challenge
    with factory() as s:
        step = s.execute(select(TotpDevice.last_used_step)).scalar_one()
    return AppSignIn(user, secret, challenge, step)


def assert_nothing_written(
    factory: sessionmaker[Session], step_before: int | None, *, challenge_open: bool = True
) -> None:
    """A refused sign-in: no session, the device's step where it was, the (only) challenge still open."""
    with factory() as s:
        assert s.execute(select(TotpDevice.last_used_step)).scalar_one() == step_before
        assert s.execute(select(UserSession)).first() is None
        if challenge_open:
            assert s.execute(select(LoginChallenge.completed_at)).scalar_one() is None


def _far_from(code: str) -> str:
    """A code half the range away from ``code``: a wrong one."""
    return f"{(int(code) + 500_000) % 1_000_000:06d}"


def history(factory: sessionmaker[Session]) -> list[tuple[str, str | None, bool]]:
    with factory() as s:
        rows = s.execute(select(LoginHistory).order_by(LoginHistory.id)).scalars().all()
        return [(r.outcome, r.method, r.twofa_verified) for r in rows]


def test_password_only_without_2fa(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    make_user(factory, clock=clock)
    with transaction(factory) as s:
        result = logins.login_with_password(
            s, "Alice@Example.com ", PASSWORD, WEB, gate=enrolment_required, clock=clock
        )
    assert isinstance(result, logins.LoggedIn) and not result.session.twofa_verified
    with factory() as s:
        statements: list[str] = []
        event.listen(s, "do_orm_execute", lambda state: statements.append(str(state.statement)))
        row, owner = sessions.authenticate(s, result.session.token, clock)
        assert (row.user_id, owner.id, owner.email) == (result.session.user_id, row.user_id, "alice@example.com")
        assert len(statements) == 1  # the session row and its user in one statement
    assert history(factory) == [("success", "password", False)]


def test_wrong_password_and_unknown_user_answer_alike(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    make_user(factory, clock=clock)
    errors = []
    for email, password in (("alice@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
        with pytest.raises(InvalidCredentials) as info, transaction(factory) as s:
            logins.login_with_password(s, email, password, WEB, gate=enrolment_required, clock=clock)
        errors.append((info.value.code, info.value.message, info.value.status))
    assert errors[0] == errors[1]
    with factory() as s:
        rows = s.execute(select(LoginHistory).order_by(LoginHistory.id)).scalars().all()
        assert [(r.outcome, r.user_id is None, r.ip, r.user_agent) for r in rows] == [
            ("invalid_credentials", False, WEB.ip, WEB.user_agent),
            ("invalid_credentials", True, WEB.ip, WEB.user_agent),
        ]


def test_totp_login_and_history(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _codes = enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock)
    assert challenge.methods == ["totp", "backup_code"]
    done = finish(factory, challenge.challenge, totp.code_at(secret, clock.now()), clock)
    assert done.method == "totp" and done.session.twofa_verified
    assert history(factory) == [("second_factor_required", "password", False), ("success", "totp", True)]
    with factory() as s:
        entries = login_history.history(s, user.id)
        assert entries[0].outcome == "success" and entries[0].twofa_verified and entries[0].ip == WEB.ip


def test_a_successful_sign_in_writes_its_session_history_and_completed_challenge(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock)
    with factory() as s:
        before = s.execute(select(LoginChallenge)).scalar_one()
        kept = (before.user_id, before.token_hash, before.created_at, before.expires_at, before.ip, before.user_agent)
    clock.advance(seconds=3)
    with transaction(factory) as s:
        done = logins.complete_login(
            s, challenge.challenge, totp.code_at(secret, clock.now()), WEB, gate=enrolment_required, clock=clock
        )
    with factory() as s:
        after = s.execute(select(LoginChallenge)).scalar_one()
        assert after.completed_at == clock.now()
        assert (after.user_id, after.token_hash, after.created_at, after.expires_at, after.ip, after.user_agent) == kept
        row = s.get(UserSession, done.session.session_id)
        assert row is not None
        assert row.token_hash == crypto.token_hash(done.session.token) != after.token_hash
        assert (row.user_id, row.twofa_verified, row.method, row.scope, row.ip, row.user_agent) == (
            user.id,
            True,
            "totp",
            "full",
            WEB.ip,
            WEB.user_agent,
        )
        assert row.created_at == row.last_seen_at == clock.now() and row.expires_at > clock.now()
        last = s.execute(select(LoginHistory).order_by(LoginHistory.id.desc()).limit(1)).scalar_one()
        assert (last.at, last.user_id, last.email, last.ip, last.user_agent, last.outcome, last.method) == (
            clock.now(),
            user.id,
            user.email,
            WEB.ip,
            WEB.user_agent,
            "success",
            "totp",
        )
        assert last.twofa_verified


def _signed_in_rows(factory: sessionmaker[Session], user: User, session_id: int, clock: FrozenClock) -> tuple[Any, ...]:
    """What a finished sign-in leaves, without its ids and token and with times from now: the session, the last
    history row, the challenge's completion, the app's step and the failure count."""
    now = clock.now()
    with factory() as s:
        row = s.get_one(UserSession, session_id)
        last = s.execute(select(LoginHistory).order_by(LoginHistory.id.desc()).limit(1)).scalar_one()
        challenge = s.execute(select(LoginChallenge).order_by(LoginChallenge.id.desc()).limit(1)).scalar_one()
        device = s.execute(select(TotpDevice).where(TotpDevice.user_id == user.id)).scalar_one()
        assert challenge.completed_at is not None and device.last_used_step is not None
        return (
            (row.user_id == user.id, row.twofa_verified, row.method, row.scope, row.ip, row.user_agent),
            (row.created_at - now, row.last_seen_at - now, row.expires_at - now, row.revoked_at),
            (last.at - now, last.user_id == user.id, last.email == user.email, last.outcome, last.method),
            (last.twofa_verified, last.ip, last.user_agent),
            challenge.completed_at - now,
            device.last_used_step - totp.time_step(now),
            s.get_one(User, user.id).second_factor_failures,
        )


def test_a_right_app_code_leaves_the_same_rows_whether_or_not_failures_are_cleared(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A right app code for an account without failures is finished by one statement on PostgreSQL
    (``twofa.app_sign_in``); after a wrong code, the general path judges it and clears the count. Both
    leave the same rows."""
    left = []
    for index, wrong_first in enumerate((False, True)):
        user = make_user(factory, f"user{index}@example.com", clock=clock)
        secret, _ = enrol_totp(factory, user, clock)
        challenge = begin(factory, user.email, clock).challenge
        code = totp.code_at(secret, clock.now())
        if wrong_first:
            with pytest.raises(InvalidCode):
                finish(factory, challenge, _far_from(code), clock)
        done = finish(factory, challenge, code, clock)
        left.append(_signed_in_rows(factory, user, done.session.session_id, clock))
    assert left[0] == left[1]
    assert left[0][-2:] == (0, 0)  # the current step used; no failures left


def test_an_app_code_under_a_gate_that_asks_for_enrolment_opens_an_enrolment_session(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """The gate is asked once the code is accepted (here by the one-statement path): its answer sets the session's
    scope and the history's outcome."""
    _, secret, challenge, _ = app_sign_in(factory, clock)
    with transaction(factory) as s:
        done = logins.complete_login(
            s, challenge, totp.code_at(secret, clock.now()), WEB, gate=lambda *_: True, clock=clock
        )
    assert done.enrolment_required and done.session.scope == "enrol"
    assert history(factory)[-1] == ("enrolment_required", "totp", True)
    with factory() as s:
        assert s.get_one(UserSession, done.session.session_id).scope == "enrol"


def test_a_right_app_code_is_finished_by_one_statement_after_the_lock(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """What bench_api's goal rests on (``twofa.app_sign_in``): on PostgreSQL, the lock statement and one more."""
    _, secret, challenge, _ = app_sign_in(factory, clock)
    statements: list[str] = []
    with transaction(factory) as s:
        event.listen(s.connection(), "before_cursor_execute", lambda *a: statements.append(a[2]))
        logins.complete_login(
            s, challenge, totp.code_at(secret, clock.now()), WEB, gate=enrolment_required, clock=clock
        )
    ours = [sql for sql in statements if "SAVEPOINT" not in sql]  # the test's own isolation aside
    assert len(ours) == 2, ours
    assert ours[1].startswith("WITH step_moved AS")


def test_a_replayed_app_code_writes_nothing_but_its_refusal(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """A used code on an account without failures (the one-statement path declines it): no session, the challenge
    open, only the refusal recorded."""
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    code = totp.code_at(secret, clock.now())
    finish(factory, begin(factory, user.email, clock).challenge, code, clock)
    challenge = begin(factory, user.email, clock).challenge
    with pytest.raises(CodeReused):
        finish(factory, challenge, code, clock)
    assert history(factory)[-2:] == [("second_factor_required", "password", False), ("code_reused", "totp", False)]
    assert [h[0] for h in history(factory)].count("success") == 1
    with factory() as s:
        assert s.execute(select(func.count()).select_from(UserSession)).scalar_one() == 1
        assert s.execute(select(LoginChallenge.completed_at).order_by(LoginChallenge.id.desc())).first() == (None,)


def test_unflushed_changes_to_the_user_survive_the_sign_in(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock).challenge
    with transaction(factory) as s:
        loaded = s.get(User, user.id)
        assert loaded is not None
        loaded.email = "alice.renamed@example.com"  # not flushed yet when the sign-in reads the user row
        logins.complete_login(
            s, challenge, totp.code_at(secret, clock.now()), WEB, gate=enrolment_required, clock=clock
        )
        assert loaded.email == "alice.renamed@example.com"
    with factory() as s:
        row = s.get(User, user.id)
        assert row is not None and row.email == "alice.renamed@example.com"


def test_codes_one_step_either_side_are_accepted(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    clock.advance(seconds=120)
    now_step = totp.time_step(clock.now())
    for offset in (-1, 0, 1):
        challenge = begin(factory, user.email, clock)
        finish(factory, challenge.challenge, totp.code_at_step(secret, now_step + offset), clock)
    challenge = begin(factory, user.email, clock)
    with pytest.raises(InvalidCode):
        finish(factory, challenge.challenge, totp.code_at_step(secret, now_step + 3), clock)


def test_a_code_is_accepted_once(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    code = totp.code_at(secret, clock.now())
    finish(factory, begin(factory, user.email, clock).challenge, code, clock)
    with pytest.raises(CodeReused):
        finish(factory, begin(factory, user.email, clock).challenge, code, clock)
    # An earlier step's code is refused too once a later one was used.
    clock.advance(seconds=30)
    finish(factory, begin(factory, user.email, clock).challenge, totp.code_at(secret, clock.now()), clock)
    with pytest.raises(CodeReused):
        earlier = totp.code_at_step(secret, totp.time_step(clock.now()) - 1)
        finish(factory, begin(factory, user.email, clock).challenge, earlier, clock)
    with factory() as s:
        refused = s.execute(select(AuditEvent).where(AuditEvent.event == "totp_replay_refused")).scalars().all()
    assert len(refused) == 2
    assert [h for h in history(factory) if h[0] == "code_reused"] == [("code_reused", "totp", False)] * 2


def test_a_replayed_code_writes_nothing_and_keeps_the_failure_count(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A replay is refused before anything of the sign-in is written: no session, the challenge still open, and the
    wrong codes before it still counted (a used code must not reset the lockout)."""
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    code = totp.code_at(secret, clock.now())
    finish(factory, begin(factory, user.email, clock).challenge, code, clock)
    challenge = begin(factory, user.email, clock).challenge
    near = {totp.code_at_step(secret, totp.time_step(clock.now()) + o) for o in (-1, 0, 1)}
    wrong = next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)
    for _ in range(2):
        with pytest.raises(InvalidCode):
            finish(factory, challenge, wrong, clock)
    with pytest.raises(CodeReused):
        finish(factory, challenge, code, clock)
    with factory() as s:
        assert len(s.execute(select(UserSession)).scalars().all()) == 1  # the first sign-in's
        assert s.get_one(User, user.id).second_factor_failures == 2
    clock.advance(seconds=30)
    done = finish(factory, challenge, totp.code_at(secret, clock.now()), clock)  # the challenge was left open
    assert done.method == "totp"
    assert [h[0] for h in history(factory)][-4:] == ["bad_code", "bad_code", "code_reused", "success"]


def _submitted_while_another_holds_the_user(
    factory: sessionmaker[Session], clock: FrozenClock, sign_in: AppSignIn, change: Any
) -> Any:
    """The app's current code, submitted while another transaction holds the user's lock and makes ``change``; that
    transaction commits once the submission waits for the lock. Returns the submission's future, ended."""
    engine = factory.kw["bind"]
    other = factory()
    other.execute(select(User).where(User.id == sign_in.user.id).with_for_update(key_share=True))
    change(other, sign_in.user.id)
    pool = ThreadPoolExecutor(1)
    try:
        submitted = pool.submit(finish, factory, sign_in.challenge, totp.code_at(sign_in.secret, clock.now()), clock)
        _wait_for_lock_wait(engine, submitted)
        other.commit()
        concurrent.futures.wait([submitted], timeout=10)
        return submitted
    finally:
        other.close()
        pool.shutdown()


@pytest.mark.committed
def test_a_right_code_waits_for_wrong_codes_being_counted(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """The lockout bounds guesses sent at once: a right code read while wrong ones are being counted (their
    transaction holds the user's lock) waits for them, and is refused once they lock the account. Checked against
    the state read before the lock, every guess in flight would be compared with the right code."""
    sign_in = app_sign_in(factory, clock)

    def last_wrong_code_counted(s: Session, user_id: int) -> None:  # it locks the second factor
        locked_until = clock.now() + timedelta(seconds=30)
        s.execute(
            update(User)
            .where(User.id == user_id)
            .values(second_factor_failures=5, second_factor_locked_until=locked_until)
        )

    right = _submitted_while_another_holds_the_user(factory, clock, sign_in, last_wrong_code_counted)
    with pytest.raises(TooManyAttempts):
        right.result(0)
    assert_nothing_written(factory, sign_in.step_before)
    assert history(factory)[-1] == ("locked", "totp", False)


def _new_seed(s: Session, user_id: int) -> None:
    s.execute(
        update(TotpDevice)
        .where(TotpDevice.user_id == user_id)
        .values(secret_ciphertext=crypto.encrypt(totp.new_secret()), last_used_step=None)
    )


def _unconfirmed(s: Session, user_id: int) -> None:
    s.execute(update(TotpDevice).where(TotpDevice.user_id == user_id).values(confirmed_at=None))


@pytest.mark.committed
@pytest.mark.parametrize("change", [_new_seed, _unconfirmed], ids=["new seed in place", "unconfirmed"])
def test_a_code_of_an_app_changed_while_it_waits_is_refused(
    factory: sessionmaker[Session], clock: FrozenClock, change: Any
) -> None:
    """The app's row is read with the locks but not locked: a code judged against the row as it was before another
    transaction, holding the user's lock, changed it must not sign in once that transaction commits."""
    old_code = _submitted_while_another_holds_the_user(factory, clock, app_sign_in(factory, clock), change)
    with pytest.raises(InvalidCode):
        old_code.result(0)
    with factory() as s:
        assert s.execute(select(UserSession)).first() is None
        assert s.execute(select(LoginChallenge.completed_at)).scalar_one() is None


@pytest.mark.committed
def test_right_and_wrong_codes_at_once_are_judged_one_after_another(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """Right codes and wrong ones for one account, all at once: every attempt ends in an answer, none in a database
    error; one right code signs in, the others are replays, and each
    wrong one is counted (fewer than the lockout threshold)."""
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    clock.advance(seconds=30)
    right = totp.code_at(secret, clock.now())
    wrong = _far_from(right)
    codes = [right, wrong] * 4
    challenges = [begin(factory, user.email, clock).challenge for _ in codes]
    calls = [functools.partial(finish, factory, c, code, clock) for c, code in zip(challenges, codes, strict=True)]
    results = at_once(calls)
    answers = [type(r).__name__ for r in results]
    assert sorted(answers) == sorted(["LoggedIn"] + ["CodeReused"] * 3 + ["InvalidCode"] * 4), results
    with factory() as s:
        assert s.execute(select(func.count()).select_from(UserSession)).scalar_one() == 1
    outcomes = {"LoggedIn": "success", "CodeReused": "code_reused", "InvalidCode": "bad_code"}
    recorded = sorted(h[0] for h in history(factory) if h[0] != "second_factor_required")
    assert recorded == sorted(outcomes[a] for a in answers)


def _wait_for_lock_wait(engine: Any, also: Any) -> None:
    """Until a statement of another connection waits for a lock (or ``also``, a future, ends)."""
    sql = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + 10
    # In autocommit: a transaction would see the activity as it was at its first read, again and again.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while conn.execute(sql).scalar_one() == 0:
            assert time.monotonic() < deadline and not also.done(), also
            time.sleep(0.01)


@pytest.mark.committed
def test_twenty_concurrent_submissions_of_one_code(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    challenges = [begin(factory, user.email, clock).challenge for _ in range(20)]
    code = totp.code_at(secret, clock.now())
    results = at_once([functools.partial(finish, factory, c, code, clock) for c in challenges])
    successes = [r for r in results if isinstance(r, logins.LoggedIn)]
    assert len(successes) == 1
    assert all(isinstance(r, CodeReused) for r in results if r is not successes[0]), results


def test_wrong_codes_lock_the_account_with_a_growing_delay(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend
) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)

    def wrong() -> str:
        good = totp.code_at(secret, clock.now())
        near = {totp.code_at_step(secret, totp.time_step(clock.now()) + o) for o in (-1, 0, 1)}
        candidate = int(good)
        while f"{candidate:06d}" in near:
            candidate = (candidate + 1) % 1_000_000
        return f"{candidate:06d}"

    # Failures count per account, across challenges (sessions).
    for _ in range(5):
        with pytest.raises(InvalidCode):
            finish(factory, begin(factory, user.email, clock).challenge, wrong(), clock)
    challenge = begin(factory, user.email, clock).challenge
    with pytest.raises(TooManyAttempts) as locked:
        finish(factory, challenge, totp.code_at(secret, clock.now()), clock)
    assert locked.value.retry_after == 30
    clock.advance(seconds=31)
    with pytest.raises(InvalidCode):
        finish(factory, challenge, wrong(), clock)
    with pytest.raises(TooManyAttempts) as locked:
        finish(factory, challenge, totp.code_at(secret, clock.now()), clock)
    assert locked.value.retry_after == 60  # doubled
    clock.advance(seconds=61)
    finish(factory, challenge, totp.code_at(secret, clock.now()), clock)
    with factory() as s:
        row = s.get(User, user.id)
        assert row is not None and row.second_factor_failures == 0
        locks = s.execute(select(AuditEvent).where(AuditEvent.event == "second_factor_locked")).scalars().all()
    assert [e.details["locked_seconds"] for e in locks] == [30, 60]
    assert any("Sign-in paused" in str(m["Subject"]) for m in mailbox.sent)
    assert ("locked", "totp", False) in history(factory)


def test_a_session_holding_an_older_copy_of_the_user_judges_on_the_locked_row(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock).challenge
    with factory() as s:
        stale = s.get(User, user.id)
        assert stale is not None and stale.second_factor_locked_until is None
        s.execute(  # the row changes behind the session's copy, as if another request had locked the account
            update(User)
            .where(User.id == user.id)
            .values(second_factor_failures=5, second_factor_locked_until=clock.now() + timedelta(seconds=30))
            .execution_options(synchronize_session=False)
        )
        assert stale.second_factor_locked_until is None
        with pytest.raises(TooManyAttempts):
            logins.complete_login(
                s, challenge, totp.code_at(secret, clock.now()), WEB, gate=enrolment_required, clock=clock
            )
        assert stale.second_factor_failures == 5 and not s.dirty  # the same object, refreshed, not modified
        s.rollback()
    clock.advance(seconds=31)
    with transaction(factory) as s:  # a fresh session: the row read becomes the session's User, and is written back
        done = logins.complete_login(
            s, challenge, totp.code_at(secret, clock.now()), WEB, gate=enrolment_required, clock=clock
        )
    assert done.session.twofa_verified
    with factory() as s:
        row = s.get(User, user.id)
        assert row is not None and (row.second_factor_failures, row.second_factor_locked_until) == (0, None)


def test_malformed_code_is_a_clear_error_and_not_a_guess(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock).challenge
    for bad in ("１２３４５６", "12345", "abcdef", "1234567"):
        with pytest.raises(MalformedCode):
            finish(factory, challenge, bad, clock)
    with factory() as s:
        row = s.get(User, user.id)
        assert row is not None and row.second_factor_failures == 0


def test_challenges_expire_and_are_single_use(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    secret, _ = enrol_totp(factory, user, clock)
    challenge = begin(factory, user.email, clock).challenge
    finish(factory, challenge, totp.code_at(secret, clock.now()), clock)
    clock.advance(seconds=30)
    with pytest.raises(ChallengeInvalid):
        finish(factory, challenge, totp.code_at(secret, clock.now()), clock)
    stale = begin(factory, user.email, clock).challenge
    clock.advance(minutes=11)
    with pytest.raises(ChallengeInvalid):
        finish(factory, stale, totp.code_at(secret, clock.now()), clock)
    with pytest.raises(ChallengeInvalid):
        finish(factory, "not-a-challenge", "123456", clock)


def test_sessions_list_and_revoke(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    user = make_user(factory, clock=clock)
    with transaction(factory) as s:
        first = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
        second = logins.login_with_password(s, user.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(first, logins.LoggedIn) and isinstance(second, logins.LoggedIn)
    with transaction(factory) as s:
        assert len(sessions.list_active(s, user.id, clock)) == 2
        sessions.revoke(s, user.id, first.session.session_id, clock)
    with factory() as s:
        assert [r.id for r in sessions.list_active(s, user.id, clock)] == [second.session.session_id]
        with pytest.raises(Exception, match="session"):
            sessions.authenticate(s, first.session.token, clock)
