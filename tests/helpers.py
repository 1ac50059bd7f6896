"""Small builders shared by the tests."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage, Message

from sqlalchemy.orm import Session, sessionmaker

from twofa import accounts, crypto, enrolment, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail.backends import MemoryBackend
from twofa.models import TotpDevice, User

PASSWORD = "correct horse battery"


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
        started = enrolment.start_totp(s, user, clock)
    with transaction(factory) as s:
        codes = enrolment.confirm_totp(s, user, totp.code_at(started.secret, clock.now()), clock)
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


def last_code(mailbox: MemoryBackend, to: str) -> str:
    """The code in the newest email-code message to ``to``."""
    for message in reversed(mailbox.sent):
        if message["To"] == to and "verification code" in str(message["Subject"]):
            found = re.search(r"\b(\d{6})\b", text_of(message))
            assert found, "no code in the message"
            return found.group(1)
    raise AssertionError(f"no code was mailed to {to}")


def subjects(mailbox: MemoryBackend, to: str) -> list[str]:
    return [str(m["Subject"]) for m in mailbox.sent if m["To"] == to]
