"""Invariant 1: after a full scenario, no seed, code, backup code, token, key or password is stored or logged."""

from __future__ import annotations

import base64
import logging

import pytest
from sqlalchemy import MetaData, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from policies.gate import enrolment_required
from tests.helpers import PASSWORD, last_code, make_user
from twofa import api_keys, enrolment, logins, manage, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend
from twofa.sessions import Client

WEB = Client(ip="198.51.100.1", user_agent="dump-test")


def dump(factory: sessionmaker[Session]) -> str:
    """Every value of every table, as text, with binary values both raw and hex."""
    parts: list[str] = []
    with factory() as s:
        meta = MetaData()
        meta.reflect(bind=s.get_bind())
        for table in meta.sorted_tables:
            for row in s.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        parts += [raw.hex(), raw.decode("latin-1")]
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


def test_database_and_logs_hold_no_secret(
    factory: sessionmaker[Session], clock: FrozenClock, mailbox: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [PASSWORD]
    alice = make_user(factory, "alice@example.com", clock=clock)
    bob = make_user(factory, "bob@example.com", clock=clock)

    with transaction(factory) as s:
        started = enrolment.start_totp(s, alice, PASSWORD, clock=clock)
    secrets.append(started.secret)
    with transaction(factory) as s:
        codes = enrolment.confirm_totp(s, alice, totp.code_at(started.secret, clock.now()), clock=clock)
    secrets += codes + [c.replace("-", "") for c in codes]
    clock.advance(seconds=30)
    with transaction(factory) as s:
        challenge = logins.login_with_password(s, alice.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(challenge, logins.SecondFactorRequired)
    secrets.append(challenge.challenge)
    with transaction(factory) as s:
        done = logins.complete_login(s, challenge.challenge, codes[0], WEB, gate=enrolment_required, clock=clock)
    secrets.append(done.session.token)
    with transaction(factory) as s:
        key = api_keys.create(s, alice, "scripts", clock)
    secrets.append(key.key)
    secrets.append(key.key.split("_", 2)[2])

    with transaction(factory) as s:
        enrolment.start_email(s, bob, PASSWORD, clock)
    enrol_code = last_code(mailbox, bob.email)
    with transaction(factory) as s:
        secrets += enrolment.confirm_email(s, bob, enrol_code, clock=clock)
    clock.advance(seconds=61)
    with transaction(factory) as s:
        bob_challenge = logins.login_with_password(s, bob.email, PASSWORD, WEB, gate=enrolment_required, clock=clock)
    assert isinstance(bob_challenge, logins.SecondFactorRequired)
    login_code = last_code(mailbox, bob.email)
    with transaction(factory) as s:
        bob_session = logins.complete_login(
            s, bob_challenge.challenge, login_code, WEB, gate=enrolment_required, clock=clock
        )
    secrets += [bob_challenge.challenge, bob_session.session.token]
    with transaction(factory) as s:
        manage.disable(s, alice, PASSWORD, codes[1], clock=clock)

    text = dump(factory)
    seed_bytes = base64.b32decode(started.secret)
    assert seed_bytes.hex() not in text and seed_bytes.decode("latin-1") not in text
    for secret in secrets:
        assert secret not in text, f"a secret of length {len(secret)} is stored in plaintext"
    # 6-digit email codes are short enough to appear inside timestamps and ids by chance: look for them in the
    # text and JSON columns, where a leak would be.
    meta = MetaData()
    meta.reflect(bind=factory.kw["bind"])
    with factory() as s:
        for table in meta.sorted_tables:
            for row in s.execute(select(table)):
                for value in row:
                    if isinstance(value, str | dict):
                        assert enrol_code not in str(value) and login_code not in str(value), table.name
    logged = caplog.text
    for secret in [*secrets, enrol_code, login_code]:
        assert secret not in logged


def test_a_database_error_does_not_carry_the_statements_parameters(factory: sessionmaker[Session]) -> None:
    """Its text goes to a log (a worker's failed task, the API's error handler): the values bound to a failed
    statement, a code's keyed hash among them, stay out of it."""
    marker = "d3adbeef-not-for-logs"
    with factory() as s, pytest.raises(DBAPIError) as caught:
        s.execute(text("SELECT :value FROM no_such_table"), {"value": marker})
    assert "no_such_table" in str(caught.value)  # the statement is there, for whoever debugs it
    assert marker not in str(caught.value) and "hidden due to hide_parameters" in str(caught.value)
