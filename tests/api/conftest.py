"""A real HTTP server (uvicorn) on loopback, serving the API on the test database, mail to a real SMTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.ratelimit import Limiter
from policies.gate import enrolment_required
from tests.harness.services import SmtpServer, free_port, wait_for
from twofa import outbox
from twofa.clock import FrozenClock
from twofa.mail.backends import SmtpBackend
from twofa.mail.sync import SynchronousDispatcher
from twofa.settings import Settings


@dataclass
class Server:
    url: str
    clock: FrozenClock
    smtp: SmtpServer
    limiter: Limiter

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=30)


@pytest.fixture
def server(factory: sessionmaker[Session], clock: FrozenClock) -> Iterator[Server]:
    smtp = SmtpServer()
    backend = SmtpBackend(Settings(smtp_host="127.0.0.1", smtp_port=smtp.port))
    previous = outbox.install_dispatcher(SynchronousDispatcher(factory, backend, clock))
    limiter = Limiter()  # in this process's memory
    app = create_app(gate=enrolment_required, factory=factory, clock=clock, limiter=limiter)
    port = free_port()
    uv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", proxy_headers=False)
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_for(lambda: uv.started, 10, what="uvicorn to start")
    try:
        yield Server(url=f"http://127.0.0.1:{port}", clock=clock, smtp=smtp, limiter=limiter)
    finally:
        uv.should_exit = True
        thread.join(10)
        outbox.install_dispatcher(previous)
        backend.close()
        smtp.stop()
