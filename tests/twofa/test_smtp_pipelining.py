"""SMTP pipelining (``twofa.mail.pipelining``): against a real aiosmtpd server, a message costs two writes where the
server offers PIPELINING and four where it does not, and every refusal ends as smtplib's own exchange would: the same
transient or permanent error, and a connection that still carries the next message."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pytest

from tests.harness.services import SmtpServer
from twofa.clock import SYSTEM_CLOCK
from twofa.mail.backends import PermanentMailError, SmtpBackend, TransientMailError
from twofa.mail.pipelining import PipeliningSMTP
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


Conversation = Callable[[socket.socket, BinaryIO], None]


class RawServer:
    """A server written out byte by byte, for what aiosmtpd never does (close at once, answer DATA with 354 for a
    transaction without recipients): it greets, offers PIPELINING, then hands the connection to ``conversation``.
    ``connections`` counts every connection made to it."""

    def __init__(self, conversation: Conversation) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, args=(conversation,), daemon=True)
        self.thread.start()

    def _serve(self, conversation: Conversation) -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                with conn, conn.makefile("rb") as lines:
                    conn.sendall(b"220 raw\r\n")
                    lines.readline()  # EHLO
                    conn.sendall(b"250-raw\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
                    conversation(conn, lines)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


@contextlib.contextmanager
def raw_client(conversation: Conversation) -> Iterator[tuple[PipeliningSMTP, RawServer]]:
    server = RawServer(conversation)
    client = PipeliningSMTP("127.0.0.1", server.port, timeout=5)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


def read(lines: BinaryIO, n: int) -> list[bytes]:
    return [lines.readline() for _ in range(n)]


@pytest.mark.parametrize(
    ("replies", "code"),
    [
        (b"421 4.3.2 shutting down\r\n", 421),  # closes at MAIL FROM: nothing more is read
        (b"553 5.1.8 sender refused\r\n421 4.3.2 bye\r\n", 553),  # the refused sender stays the error
    ],
    ids=["closes-at-mail-from", "closes-after-refusing-the-sender"],
)
def test_a_server_that_closes_ends_with_the_sender_refusal(replies: bytes, code: int) -> None:
    def closes(conn: socket.socket, lines: BinaryIO) -> None:
        read(lines, 3)
        conn.sendall(replies)

    with raw_client(closes) as (client, _), pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    assert refused.value.smtp_code == code
    assert client.sock is None  # closed, as smtplib closes on 421


def test_data_refused_after_a_recipient_was_accepted_is_a_data_error() -> None:
    after: list[bytes] = []

    def refuses_data(conn: socket.socket, lines: BinaryIO) -> None:
        read(lines, 3)
        conn.sendall(b"250 ok\r\n250 ok\r\n554 5.3.4 no data today\r\n")
        after.extend(read(lines, 1))  # what the client writes next: QUIT at close, no message

    with raw_client(refuses_data) as (client, _), pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    assert refused.value.smtp_code == 554
    client.close()
    assert after in ([b""], [b"quit\r\n"])


def test_data_accepted_after_every_recipient_was_refused_ends_with_no_message() -> None:
    after_data: list[bytes] = []

    def lax(conn: socket.socket, lines: BinaryIO) -> None:
        read(lines, 3)
        conn.sendall(b"250 ok\r\n550 5.1.1 no such user\r\n354 go ahead\r\n")
        while (line := lines.readline()) not in (b".\r\n", b""):
            after_data.append(line)
        conn.sendall(b"554 5.5.1 no valid recipients\r\n")
        while line := lines.readline():  # RSET, QUIT
            conn.sendall(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")

    with raw_client(lax) as (client, _), pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n")
    assert after_data == []


def test_a_connection_lost_before_the_reply_sends_the_same_message_again_at_once() -> None:
    """The server may have accepted the message before the connection dropped: the same message goes again on a new
    connection (for an email code, the same code and Message-ID), not a later retry of the row, which would make a
    new code, in a new message (``delivery.code_message_id``)."""
    bodies: list[list[bytes]] = []

    def drops_the_first_reply(conn: socket.socket, lines: BinaryIO) -> None:
        read(lines, 3)
        conn.sendall(b"250 ok\r\n250 ok\r\n354 go ahead\r\n")
        body: list[bytes] = []
        while (line := lines.readline()) not in (b".\r\n", b""):
            body.append(line)
        bodies.append(body)
        if len(bodies) > 1:
            conn.sendall(b"250 2.0.0 queued\r\n")
            while line := lines.readline():  # QUIT
                conn.sendall(b"221 bye\r\n")

    server = RawServer(drops_the_first_reply)
    try:
        with backend_for(server.port) as backend:
            backend.send(message(1))
    finally:
        server.close()
    assert server.connections == 2 and len(bodies) == 2 and bodies[0] == bodies[1]


def test_some_recipients_refused_are_returned_and_the_others_served() -> None:
    smtp = SmtpServer()
    smtp.handler.rcpt_script.extend(["250 OK", "550 5.1.1 no such user"])
    try:
        with PipeliningSMTP("127.0.0.1", smtp.port, timeout=5) as client:
            refused = client.sendmail("a@example.com", ["b@example.com", "c@example.com"], b"Subject: x\r\n\r\nhi\r\n")
            client.sendmail("a@example.com", ["f@example.com"], b"Subject: y\r\n\r\nhi\r\n")
    finally:
        smtp.stop()
    assert refused == {"c@example.com": (550, b"5.1.1 no such user")}
    assert [r.recipients for r in smtp.received] == [["b@example.com"], ["f@example.com"]]


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
