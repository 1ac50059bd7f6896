"""SMTP pipelining (``twofa.mail.pipelining``): against a real aiosmtpd server, a message costs two writes where the
server offers PIPELINING and four where it does not, and every refusal ends as smtplib's own exchange would: the same
transient or permanent error, and a connection that still carries the next message."""

from __future__ import annotations

import contextlib
import smtplib
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


@pytest.fixture(params=[True, False], ids=["pipelining", "one-command-at-a-time"])
def server(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    smtp = SmtpServer(pipelining=request.param)
    yield smtp
    smtp.stop()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write an SMTP client makes to its socket."""
    written: list[bytes] = []
    send = smtplib.SMTP.send

    def counted(self: smtplib.SMTP, s: Any) -> None:
        written.append(s.encode() if isinstance(s, str) else bytes(s))
        send(self, s)

    monkeypatch.setattr(smtplib.SMTP, "send", counted)
    return written


def test_two_writes_a_message_where_the_server_pipelines(server: SmtpServer, writes: list[bytes]) -> None:
    with backend_for(server.port) as backend:
        backend.send(message(0))  # connects and greets
        before = len(writes)
        for i in (1, 2, 3):
            backend.send(message(i))
        per_message = (len(writes) - before) / 3
    assert per_message == (2 if server.handler.pipelining else 4)
    assert [r.recipients for r in server.received] == [[f"u{i}@example.com"] for i in range(4)]
    if server.handler.pipelining:
        assert writes[before].startswith(b"mail FROM:<") and writes[before].endswith(b"\r\ndata\r\n")


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


class LaxServer:
    """A server that offers PIPELINING and answers DATA with 354 although it refused the only recipient, which RFC 2920
    allows: the client must then end the transaction with a lone dot, sending no message."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.after_data: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 lax\r\n")
            lines.readline()  # EHLO
            conn.sendall(b"250-lax\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
            for _ in range(3):  # MAIL, RCPT, DATA
                lines.readline()
            conn.sendall(b"250 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n")
            while (line := lines.readline()) not in (b".\r\n", b""):
                self.after_data.append(line)
            conn.sendall(b"554 5.5.1 no valid recipients\r\n")
            while line := lines.readline():  # RSET, QUIT
                conn.sendall(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")


def test_data_accepted_after_every_recipient_was_refused_ends_with_no_message() -> None:
    lax = LaxServer()
    with backend_for(lax.port) as backend, pytest.raises(PermanentMailError, match="550"):
        backend.send(message(1))
    lax.thread.join(5)
    lax.listener.close()
    assert lax.after_data == []
