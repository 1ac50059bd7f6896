"""STARTTLS and AUTH LOGIN against a real SMTP server (aiosmtpd) with a certificate made for the test."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.harness.services import ScriptedHandler, free_port, self_signed
from tests.twofa.test_mail import message
from twofa.mail.backends import PermanentMailError, SmtpBackend, TransientMailError
from twofa.settings import Settings


def authenticator(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"relay", b"s3cret-relay")
    return AuthResult(success=ok)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Controller, ScriptedHandler, Path]]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = ScriptedHandler()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=free_port(),
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    yield controller, handler, cert
    controller.stop()


def backend(controller: Controller, cert: Path, **overrides: Any) -> SmtpBackend:
    options: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": controller.port,
        "smtp_starttls": True,
        "smtp_user": "relay",
        "smtp_password": "s3cret-relay",
        "smtp_ca_file": cert,
        "smtp_timeout": 5,
    }
    return SmtpBackend(Settings(**(options | overrides)))


def test_starttls_and_login(tls_server: tuple[Controller, ScriptedHandler, Path]) -> None:
    controller, handler, cert = tls_server
    smtp = backend(controller, cert)
    try:
        smtp.send(message(1))
        smtp.send(message(2))
    finally:
        smtp.close()
    assert [r.message["To"] for r in handler.received] == ["u1@example.com", "u2@example.com"]


def test_a_connection_per_message_loads_the_certificates_once(
    tls_server: tuple[Controller, ScriptedHandler, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, handler, cert = tls_server
    made: list[ssl.SSLContext] = []
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(create(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    smtp = backend(controller, cert, smtp_reuse_connection=False)
    try:
        for n in range(3):
            smtp.send(message(n))
    finally:
        smtp.close()
    assert len(handler.received) == 3
    assert len(made) == 1  # not one per connection: each costs about 15 ms of CPU


def test_wrong_password_sends_nothing(tls_server: tuple[Controller, ScriptedHandler, Path]) -> None:
    # aiosmtpd stalls after refusing AUTH LOGIN, so the refusal may surface as a timeout (transient) rather than
    # the 535 (permanent) a production relay answers; either way nothing is delivered.
    controller, handler, cert = tls_server
    smtp = backend(controller, cert, smtp_password="wrong", smtp_timeout=2)
    try:
        with pytest.raises((PermanentMailError, TransientMailError)):
            smtp.send(message(1))
    finally:
        smtp.close()
    assert handler.received == []


def test_an_untrusted_certificate_is_refused(tls_server: tuple[Controller, ScriptedHandler, Path]) -> None:
    controller, handler, _cert = tls_server
    smtp = backend(controller, _cert, smtp_ca_file=None)
    try:
        with pytest.raises(TransientMailError, match=r"SSL|certificate"):
            smtp.send(message(1))
    finally:
        smtp.close()
    assert handler.received == []
