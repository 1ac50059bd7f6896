"""Starting and stopping the real things, on loopback, private to one test run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twofa.migrate import upgrade

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TWOFA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port where nothing listens, held (bound, never listening) while the block runs: connections to
    it are refused, and no server of this run or another (a pytest-xdist worker) can take it meanwhile, as a port
    from ``free_port`` could be."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of our own on a free port: FLUSHALL and MONITOR touch nobody else's data."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = port or free_port()
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--logfile",
                str(workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        wait_for(self._ping, 10, what="redis-server to answer")

    def _ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Received:
    raw: bytes
    at: float  # time.monotonic() when accepted
    recipients: list[str]  # the envelope's (RCPT TO)

    @functools.cached_property
    def message(self) -> Message:
        """Parsed when first read, not in the server's loop: parsing costs the SMTP server more than the rest of
        its work on a message, and the benchmarks share the host's CPU with it."""
        return message_from_bytes(self.raw)


_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.MULTILINE | re.IGNORECASE)


class ScriptedHandler:
    """Answers DATA with scripted replies (``"451 ..."``, ``"550 ..."``, ``"hold"``), then ``250``; MAIL FROM and RCPT
    TO likewise from ``mail_script`` and ``rcpt_script``. Offers PIPELINING (RFC 2920) unless told not to, as Postfix
    does: aiosmtpd answers pipelined commands in order without saying so."""

    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.script: deque[str] = deque()
        self.mail_script: deque[str] = deque()
        self.rcpt_script: deque[str] = deque()
        self.received: list[Received] = []
        self.attempts = 0
        self.message_ids: list[str] = []  # of every DATA, accepted or not
        self.ehlo_names: list[str] = []  # what each EHLO gave
        self.release = threading.Event()
        self.holding = threading.Event()
        self.dropped = threading.Event()  # the client went away while its DATA was held
        self.lock = threading.Lock()

    @staticmethod
    def _client_gone(server: Any) -> bool:
        reader = getattr(server, "_reader", None)
        return bool(server.transport is None or server.transport.is_closing() or (reader and reader.at_eof()))

    def _next_reply(self, script: deque[str]) -> str:
        with self.lock:
            return script.popleft() if script else "250 OK"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.ehlo_names.append(hostname)
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._next_reply(self.mail_script)
        if reply.startswith("250"):
            envelope.mail_from = address
            envelope.mail_options.extend(options)
        return reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._next_reply(self.rcpt_script)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        found = _MESSAGE_ID.search(envelope.content or b"")
        with self.lock:
            self.attempts += 1
            self.message_ids.append(found.group(1).decode() if found else "")
            reply = self.script.popleft() if self.script else "250 OK"
        if reply == "hold":
            self.holding.set()
            try:
                while not self.release.is_set():
                    if self._client_gone(server):
                        self.dropped.set()
                        return "421 client went away"  # reaches nobody: the message is not accepted
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:  # aiosmtpd cancels the handler when the client's EOF arrives
                self.dropped.set()
                raise
            reply = "250 OK"
        if reply.startswith("250"):
            raw = bytes(envelope.content)
            with self.lock:
                self.received.append(Received(raw, time.monotonic(), list(envelope.rcpt_tos)))
        return reply


class SmtpServer:
    """A real SMTP server (aiosmtpd) on loopback that can be scripted, stopped and started on the same port. With
    ``tls`` (a certificate and its key, see ``self_signed``) it offers STARTTLS."""

    def __init__(self, port: int | None = None, tls: tuple[Path, Path] | None = None, pipelining: bool = True) -> None:
        self.port = port or free_port()
        self.handler = ScriptedHandler(pipelining)
        self.controller: Controller | None = None
        self.tls_context: ssl.SSLContext | None = None
        if tls is not None:
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(*tls)
        self.start()

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, tls_context=self.tls_context)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if r.message["To"] == address]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate (also its own CA) for 127.0.0.1 and its key, written to ``directory``: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextlib.contextmanager
def pg_database(prefix: str = "twofa_it") -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this run, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        yield url
    finally:
        from twofa.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def service_env(db_url: str, broker_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    env.update(
        TWOFA_DATABASE_URL=db_url,
        TWOFA_BROKER_URL=broker_url,
        TWOFA_MAIL_BACKEND="smtp",
        TWOFA_SMTP_HOST="127.0.0.1",
        TWOFA_SMTP_PORT=str(smtp_port),
        TWOFA_SECRET_KEY=os.environ.get("TWOFA_SECRET_KEY", "integration-key-0123456789-abcdefghijklmnop"),
        TWOFA_ARGON2_TIME_COST="1",
        TWOFA_ARGON2_MEMORY_COST="256",
        TWOFA_ARGON2_PARALLELISM="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """``celery -A workers.app worker`` as its own process, its log in a file."""

    env: dict[str, str]
    log_path: Path
    app: str = "workers.app"  # or "workers", as ``celery -A workers`` finds it
    twofa: bool = False  # started as ``twofa worker`` instead (its own options only)
    queues: str = "otp,mail,scheduled"
    concurrency: int = 1
    extra_args: list[str] = field(default_factory=list)  # appended to the celery command line
    nice: int = 0  # started under nice(1), as deploy/systemd's report worker runs (Nice=)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 60) -> Worker:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self._command(),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(
            lambda: b" ready." in self.log_path.read_bytes()[offset:] or self.proc.poll() is not None,
            timeout,
            what="the worker to be ready",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log_path.read_text()[-2000:]}")
        return self

    def _command(self) -> list[str]:
        common = ["--queues", self.queues, "--concurrency", str(self.concurrency), "--loglevel", "INFO"]
        niced = ["nice", "-n", str(self.nice)] if self.nice else []
        if self.twofa:
            return [*niced, sys.executable, "-m", "cli.main", "worker", *common]
        return [
            *niced,
            *(sys.executable, "-m", "celery", "-A", self.app, "worker", *common, "--pool", "prefork"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            *("--hostname", f"it-{secrets.token_hex(3)}@%h", *self.extra_args),
        ]

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash or an OOM kill would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A warm shutdown: SIGTERM to the main process only, which lets running tasks finish. (Signalling the
        whole process group kills the pool children mid-task: a message accepted by SMTP but not yet marked sent
        would go out again. Run workers under systemd with KillMode=mixed for the same reason.)"""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class ApiServer:
    """``twofa serve`` (uvicorn, as deployed) as its own process group, its log in a file. ``quiet`` (the
    benchmarks'): no access log, warnings only."""

    env: dict[str, str]
    log_path: Path
    workers: int = 1
    quiet: bool = False
    extra: list[str] = field(default_factory=list)  # more `twofa serve` options
    root: Path = ROOT  # the checkout served (a benchmark may compare two)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ApiServer:
        command = ["serve", "--port", str(self.port), "--workers", str(self.workers)]
        if self.quiet:
            command += ["--no-access-log", "--log-level", "warning"]
        command += self.extra
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", *command],
                cwd=self.root,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._up, timeout, interval=0.1, what="twofa serve to answer")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"twofa serve exited: {self.log_path.read_text()[-2000:]}")
        if not self.quiet:  # every server process has said so
            return self.log_path.read_text().count("Application startup complete") == self.workers
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:  # noqa: S310  (loopback)
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> int | None:
        """SIGINT to the group, as Ctrl-C would; SIGKILL if it has not ended in 30 s. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:  # never leave a server behind
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


@contextlib.contextmanager
def api_server(env: dict[str, str], log_path: Path, workers: int = 1) -> Iterator[int]:
    """An ``ApiServer`` for one test; yields its port. Checks that it exited cleanly, with no traceback logged."""
    server = ApiServer(env, log_path, workers).start()
    try:
        yield server.port
    finally:
        status = server.stop()
    assert status == 0, log_path.read_text()[-2000:]
    assert "Traceback" not in log_path.read_text()
