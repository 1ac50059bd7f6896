"""Small builders shared by the tests."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Callable, Sequence
from email.message import EmailMessage, Message
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from twofa import accounts, crypto, email_otp, enrolment, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend
from twofa.models import TotpDevice, User

PASSWORD = "correct horse battery"
T = TypeVar("T")


def make_user(
    factory: sessionmaker[Session],
    email_address: str = "alice@example.com",
    *,
    org: str = "acme",
    role: str = "member",
    sso: str | None = None,
    clock: FrozenClock,
) -> User:
    with transaction(factory) as s:
        o = accounts.get_org(s, org) or accounts.create_org(s, org, sso_idp=sso, clock=clock)
        user = accounts.create_user(s, email_address, PASSWORD, clock=clock)
        accounts.add_member(s, o, user, role, clock=clock)
    return user


def enrol_totp(factory: sessionmaker[Session], user: User, clock: FrozenClock) -> tuple[str, list[str]]:
    """Enrol ``user`` with TOTP; returns (secret, backup codes). Moves the clock one step past the confirmation."""
    with transaction(factory) as s:
        started = enrolment.start_totp(s, user, PASSWORD, clock=clock)
    with transaction(factory) as s:
        codes = enrolment.confirm_totp(s, user, totp.code_at(started.secret, clock.now()), clock=clock)
    clock.advance(seconds=30)
    return started.secret, codes


def stored_secret(factory: sessionmaker[Session], user_id: int) -> str:
    with factory() as s:
        device = s.query(TotpDevice).filter_by(user_id=user_id).one()
        return crypto.decrypt(device.secret_ciphertext)


def parsed(message: Message) -> EmailMessage:
    """The message as a mail client reads it (the modern email API), from its bytes on the wire."""
    result = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(result, EmailMessage)
    return result


def text_of(message: Message) -> str:
    body = parsed(message).get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def code_of(message: Message) -> str:
    """The 6-digit code in an email-code message's text."""
    found = re.search(r"\b(\d{6})\b", text_of(message))
    assert found, "no code in the message"
    return found.group(1)


def last_code(mailbox: MemoryBackend, to: str) -> str:
    """The code in the newest email-code message to ``to``."""
    for message in reversed(mailbox.sent):
        if message["To"] == to and "verification code" in str(message["Subject"]):
            return code_of(message)
    raise AssertionError(f"no code was mailed to {to}")


def subjects(mailbox: MemoryBackend, to: str) -> list[str]:
    return [str(m["Subject"]) for m in mailbox.sent if m["To"] == to]


def at_once(
    calls: Sequence[Callable[[], T]], *, barrier: threading.Barrier | None = None, timeout: float = 60
) -> list[T | BaseException]:
    """Run each call in a thread of its own, all released together; returns each call's result, or the exception it
    raised, in order. With ``barrier`` (of ``len(calls)`` parties) the calls meet at it themselves, at a point of
    their choosing (inside a transaction, say), instead of before they start."""
    start = barrier or threading.Barrier(len(calls))
    results: list[T | BaseException] = [RuntimeError("did not finish")] * len(calls)

    def run(i: int) -> None:
        try:
            if barrier is None:
                start.wait(timeout)
            results[i] = calls[i]()
        except BaseException as exc:  # returned to the test, which asserts on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results


def queue_code(factory: sessionmaker[Session], clock: FrozenClock, email: str = "a@example.com") -> int:
    """A user with an email code requested: the id of its queued outbox row (with no dispatcher installed)."""
    user = make_user(factory, email, clock=clock)
    with transaction(factory) as s:
        return email_otp.issue(s, user, email_otp.ENROL, clock=clock).outbox_id
