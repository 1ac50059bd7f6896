"""The SMTP backend against a real aiosmtpd server: every refusal is a transient or permanent error by its reply
code, and the connection still carries the next message; a dropped connection is opened again."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.services import SmtpServer
from twofa.clock import SYSTEM_CLOCK
from twofa.mail.backends import PermanentMailError, SmtpBackend, TransientMailError
from twofa.mail.render import build_message
from twofa.settings import Settings

CONTEXT = {"email": "ada@example.com", "issuer": "Wevion", "at": "2026-11-30 10:00 UTC"}


def message(i: int) -> Any:
    return build_message(
        template="twofa_disabled", context=CONTEXT, to=f"u{i}@example.com", message_id=f"<m{i}@w>", clock=SYSTEM_CLOCK
    )


@contextlib.contextmanager
def backend_for(port: int) -> Iterator[SmtpBackend]:
    backend = SmtpBackend(Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    smtp = SmtpServer()
    yield smtp
    smtp.stop()


@pytest.mark.parametrize(
    ("script", "reply", "error"),
    [
        ("mail_script", "451 4.3.2 try later", TransientMailError),
        ("mail_script", "553 5.1.8 sender refused", PermanentMailError),
        ("rcpt_script", "450 4.2.1 mailbox busy", TransientMailError),
        ("rcpt_script", "550 5.1.1 no such user", PermanentMailError),
        ("script", "452 4.3.1 out of space", TransientMailError),
        ("script", "554 5.6.0 message refused", PermanentMailError),
    ],
)
def test_a_refusal_is_the_same_error_and_the_connection_carries_on(
    server: SmtpServer, script: str, reply: str, error: type[Exception]
) -> None:
    getattr(server.handler, script).append(reply)
    with backend_for(server.port) as backend:
        with pytest.raises(error, match=reply[:3]):
            backend.send(message(1))
        backend.send(message(2))
    assert [r.recipients for r in server.received] == [["u2@example.com"]]


def test_a_server_closing_at_mail_from_is_transient_and_the_next_message_reconnects(server: SmtpServer) -> None:
    server.handler.mail_script.append("421 4.3.2 shutting down")
    with backend_for(server.port) as backend:
        with pytest.raises(TransientMailError, match="421"):
            backend.send(message(1))
        backend.send(message(2))
    assert [r.recipients for r in server.received] == [["u2@example.com"]]


def test_the_ehlo_name_is_looked_up_once_per_backend_or_taken_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """smtplib looks the name up (a reverse DNS query where /etc/hosts does not answer) for every connection it is
    not given one: with a connection per message, or a reconnection on the clock of an email code, that can cost
    seconds where DNS is slow."""
    lookups: list[str] = []
    getfqdn = socket.getfqdn

    def counted(name: str = "") -> str:
        if threading.current_thread() is threading.main_thread():  # the client's, not the server's (aiosmtpd's)
            lookups.append(name)
        return getfqdn(name)

    monkeypatch.setattr(socket, "getfqdn", counted)
    smtp = SmtpServer()
    settings = Settings(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_timeout=5, smtp_reuse_connection=False)
    try:
        backend = SmtpBackend(settings)
        for i in range(3):
            backend.send(message(i))  # three connections
        assert len(lookups) == 1 and len(smtp.handler.ehlo_names) == 3 and len(set(smtp.handler.ehlo_names)) == 1
        named = SmtpBackend(settings.model_copy(update={"smtp_ehlo_name": "mx1.wevion.example"}))
        named.send(message(3))
    finally:
        smtp.stop()
    assert len(lookups) == 1 and smtp.handler.ehlo_names[-1] == "mx1.wevion.example"
