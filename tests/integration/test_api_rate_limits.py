"""Request limits counted in a real Redis, shared by two API servers (as by the processes of one deployment).

The per-IP limit is applied on the event loop (``Limiter.ahit``); the failure budgets of the sign-in endpoints are
checked in the endpoint's worker thread (``Limiter.spent``) and charged on the loop (``Limiter.acharge``): all must
count in the same place."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.ratelimit import Limiter
from policies.gate import enrolment_required
from tests.harness.services import RedisServer, free_port, wait_for
from tests.helpers import make_user
from twofa.clock import FrozenClock


@pytest.fixture
def two_servers(
    it_factory: sessionmaker[Session], it_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[list[str], str]]:
    monkeypatch.setenv("TWOFA_RATELIMIT_PER_IP", "8")
    monkeypatch.setenv("TWOFA_RATELIMIT_AUTH_PER_ACCOUNT", "3")
    monkeypatch.setenv("TWOFA_RATELIMIT_AUTH_PER_IP", "1000")
    prefix = f"test-rl-{secrets.token_hex(4)}:"  # this run's keys only
    urls, servers, threads = [], [], []
    for _ in range(2):
        app = create_app(gate=enrolment_required, factory=it_factory, limiter=Limiter(it_redis.url, prefix=prefix))
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda s=server: s.started, 10, what="uvicorn to start")
        urls.append(f"http://127.0.0.1:{port}/api/v1")
        servers.append(server)
        threads.append(thread)
    try:
        yield urls, prefix
    finally:
        for server, thread in zip(servers, threads, strict=True):
            server.should_exit = True
            thread.join(10)
        for key in it_redis.client.scan_iter(match=f"{prefix}*"):
            it_redis.client.delete(key)


def test_per_ip_limit_is_shared_by_the_servers(two_servers: tuple[list[str], str], it_redis: RedisServer) -> None:
    urls, prefix = two_servers
    codes = []
    for i in range(10):
        with httpx.Client(base_url=urls[i % 2]) as c:
            codes.append(c.get("/auth/2fa/status").status_code)
    assert codes == [401] * 8 + [429] * 2  # 8 a minute from this IP, whichever server answered
    with httpx.Client(base_url=urls[0]) as c:
        refused = c.get("/auth/2fa/status")
    assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    assert list(it_redis.client.scan_iter(match=f"{prefix}*/ip:*")), "the count lives in Redis"


def test_per_account_limit_is_shared_by_the_servers(
    two_servers: tuple[list[str], str], it_factory: sessionmaker[Session], it_redis: RedisServer
) -> None:
    urls, prefix = two_servers
    make_user(it_factory, "owner@acme.io", clock=FrozenClock(datetime.now(UTC)))  # the servers run on the system clock
    codes = []
    for i in range(4):
        with httpx.Client(base_url=urls[i % 2]) as c:
            codes.append(c.post("/auth/login", json={"email": "owner@acme.io", "password": "wrong"}).status_code)
    assert codes == [401, 401, 401, 429]
    keys = [k.decode() for k in it_redis.client.scan_iter(match=f"{prefix}*fail:acct*")]
    assert keys and not any("owner" in k or "acme" in k for k in keys), "keyed on a hash, not the address"
