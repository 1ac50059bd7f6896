"""Mail backends: ``memory`` (tests), ``file`` (the demo), ``smtp`` (production).

A backend raises ``TransientMailError`` for what may succeed later (SMTP 4xx, a dropped connection: RFC 5321
treats a lost connection like 451) and ``PermanentMailError`` for what never will (5xx).
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import tempfile
import threading
from email.message import Message
from pathlib import Path
from typing import Protocol

from twofa.settings import Settings, get_settings


class MailError(Exception):
    pass


class TransientMailError(MailError):
    pass


class PermanentMailError(MailError):
    pass


class MailBackend(Protocol):
    def send(self, message: Message) -> None: ...

    def close(self) -> None: ...


class MemoryBackend:
    """Keeps sent messages in a list."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.sent.append(message)

    def close(self) -> None:
        pass


class FileBackend:
    """Writes each message as an ``.eml`` file named after its Message-ID (the same message sent again overwrites
    its file, never doubles it). Messages hold email codes: each file is readable by its owner only (0600), and so is
    the directory when this backend creates it (0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send(self, message: Message) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = "".join(c for c in str(message["Message-ID"]) if c.isalnum() or c in "-_.@")
        # mkstemp creates the file 0600, under a name no other writer (or symlink planted beforehand) can share.
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes())
            os.replace(tmp, self.directory / f"{name}.eml")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        pass


class SmtpBackend:
    """One SMTP connection, reused across messages and reopened when the server has dropped it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        # smtplib looks the EHLO name up (a reverse DNS query) for every connection not given one: once is enough.
        self._ehlo_name = settings.smtp_ehlo_name

    def _tls_context(self) -> ssl.SSLContext:
        """Made once per backend: building one loads every trusted certificate."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.settings.smtp_ca_file)
        return self._tls

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        conn = smtplib.SMTP(s.smtp_host, s.smtp_port, local_hostname=self._ehlo_name, timeout=s.smtp_timeout)
        self._ehlo_name = conn.local_hostname
        if s.smtp_starttls:
            conn.starttls(context=self._tls_context())
        if s.smtp_user:
            conn.login(s.smtp_user, s.smtp_password.get_secret_value() if s.smtp_password else "")
        return conn

    def send(self, message: Message) -> None:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                try:
                    self._conn.send_message(message)
                except smtplib.SMTPServerDisconnected:
                    # An idle connection the server closed: one fresh connection, once. Sent again, it is the same
                    # message (same code, same Message-ID), so a receiver can drop a copy the server had accepted.
                    self._drop()
                    self._conn = self._connect()
                    self._conn.send_message(message)
                if not self.settings.smtp_reuse_connection:
                    self._quit()
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                self._raise_for(min(codes), str(exc))
            except smtplib.SMTPResponseException as exc:
                self._drop_if_broken(exc.smtp_code)
                error = exc.smtp_error
                self._raise_for(exc.smtp_code, error.decode(errors="replace") if isinstance(error, bytes) else error)
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise TransientMailError(f"451 connection problem: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _raise_for(code: int, text: str) -> None:
        if 500 <= code < 600:
            raise PermanentMailError(f"{code} {text}")
        raise TransientMailError(f"{code} {text}")

    def _drop_if_broken(self, code: int) -> None:
        if code == 421:
            self._drop()
        elif self._conn is not None:
            try:
                self._conn.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

    def _quit(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._conn.quit()
        self._drop()

    def close(self) -> None:
        with self._lock:
            self._quit()


def backend_from_settings(settings: Settings | None = None) -> MailBackend:
    s = settings or get_settings()
    if s.mail_backend == "smtp":
        return SmtpBackend(s)
    if s.mail_backend == "memory":
        return MemoryBackend()
    return FileBackend(s.mail_dir)
