"""Through ``twofa serve`` on PostgreSQL: the client address is the client's (X-Forwarded-For only from a trusted
proxy), a stranger's failures do not lock the owner out, and bad input is a 4xx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import ROOT
from tests.helpers import PASSWORD, enrol_totp, make_user
from tests.integration.test_outages import serving
from twofa import totp
from twofa.clock import FrozenClock
from twofa.models import LoginHistory, User

pytestmark = pytest.mark.integration
EMAIL = "owner@acme.io"


def history_ips(factory: sessionmaker[Session]) -> list[str | None]:
    with factory() as s:
        return list(s.execute(select(LoginHistory.ip).order_by(LoginHistory.id)).scalars())


@pytest.fixture
def untrusting(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``twofa serve`` as deployed without a proxy setting: no proxy is trusted."""
    with serving(worker_env, tmp_path / "serve.log") as url:
        yield url


@pytest.fixture
def behind_proxy(worker_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``twofa serve`` behind a proxy on loopback, named with ``--forwarded-allow-ips``."""
    with serving(worker_env, tmp_path / "serve.log", "--forwarded-allow-ips", "127.0.0.1") as url:
        yield url


def test_serve_refuses_a_proxy_setting_that_names_no_address(worker_env: dict[str, str]) -> None:
    for args, env in (
        (["--forwarded-allow-ips", "10.0.0.1,proxy.internal"], worker_env),
        ([], worker_env | {"TWOFA_FORWARDED_ALLOW_IPS": "*"}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", "serve", *args], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: --forwarded-allow-ips: ") and done.stderr.count("\n") == 1, done.stderr


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    it_factory: sessionmaker[Session], untrusting: str
) -> None:
    make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    with httpx.Client(base_url=untrusting, timeout=30) as c:
        for spoofed in ("203.0.113.7", "<script>alert(1)</script>", "1" * 60):
            r = c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-Forwarded-For": spoofed})
            assert r.status_code == 200, r.text
    assert history_ips(it_factory) == ["127.0.0.1"] * 3


def test_through_a_trusted_proxy_the_forwarded_client_counts(
    it_factory: sessionmaker[Session], behind_proxy: str
) -> None:
    make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    with httpx.Client(base_url=behind_proxy, timeout=30) as c:
        for forwarded in ("198.51.100.4", "10.9.8.7, 198.51.100.5", "<script>", "1" * 60, "2001:db8::1"):
            r = c.post(
                "/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-Forwarded-For": forwarded}
            )
            assert r.status_code == 200, r.text
    # The nearest address the proxy forwarded; one that does not parse is replaced by the peer's.
    assert history_ips(it_factory) == ["198.51.100.4", "198.51.100.5", "127.0.0.1", "127.0.0.1", "2001:db8::1"]


def test_a_stranger_cannot_lock_the_owner_out(it_factory: sessionmaker[Session], behind_proxy: str) -> None:
    clock = FrozenClock(datetime.now(UTC))
    user = make_user(it_factory, EMAIL, clock=clock)
    enrol_totp(it_factory, user, clock)
    stranger = {"X-Forwarded-For": "203.0.113.66"}
    with httpx.Client(base_url=behind_proxy, timeout=30) as c:
        tries = [
            c.post("/auth/login", json={"email": EMAIL, "password": f"guess {i}"}, headers=stranger).status_code
            for i in range(15)
        ]
        assert tries == [401] * 10 + [429] * 5  # the stranger's failures slow the stranger
        owner = c.post(
            "/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-Forwarded-For": "198.51.100.9"}
        )
        assert owner.status_code == 200, owner.text
        assert owner.json()["status"] == "2fa_required"
        assert owner.headers["X-Device-Token"]  # the owner's client keeps its own budget from now on


def test_ipv6_clients_are_limited_per_64(it_factory: sessionmaker[Session], behind_proxy: str) -> None:
    make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    with httpx.Client(base_url=behind_proxy, timeout=30) as c:

        def attempt(ip: str) -> int:
            wrong = {"email": EMAIL, "password": "not it"}
            return c.post("/auth/login", json=wrong, headers={"X-Forwarded-For": ip}).status_code

        assert [attempt(f"2001:db8:1:2::{i:x}") for i in range(1, 12)] == [401] * 10 + [429]  # one /64
        assert attempt("2001:db8:1:3::1") == 401  # the next /64 is another client


def test_the_account_wide_limit_spares_a_client_with_the_device_token(
    it_factory: sessionmaker[Session], worker_env: dict[str, str], tmp_path: Path
) -> None:
    make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    env = worker_env | {"TWOFA_FORWARDED_ALLOW_IPS": "127.0.0.1", "TWOFA_RATELIMIT_ACCOUNT_FAILURES": "5"}
    with serving(env, tmp_path / "serve.log") as url, httpx.Client(base_url=url, timeout=30) as c:

        def login(ip: str, password: str, token: str | None = None) -> httpx.Response:
            headers = {"X-Forwarded-For": ip} | ({"X-Device-Token": token} if token else {})
            c.cookies.clear()
            return c.post("/auth/login", json={"email": EMAIL, "password": password}, headers=headers)

        first = login("198.51.100.1", PASSWORD)
        token = first.headers["X-Device-Token"]
        assert "twofa_device=" in first.headers["set-cookie"] and "HttpOnly" in first.headers["set-cookie"]
        assert [login(f"203.0.113.{i}", "guess").status_code for i in range(6)] == [401] * 5 + [429]
        assert login("198.51.100.2", PASSWORD).status_code == 429  # a new client: the account's budget is spent
        assert login("198.51.100.3", PASSWORD, token[:-2] + "xx").status_code == 429  # a forged token is none
        assert login("198.51.100.2", PASSWORD, token).status_code == 200  # the owner's device: its own budget
        # A correct password starts the consecutive failures from zero.
        assert login("198.51.100.4", PASSWORD).status_code == 200


def test_bad_input_is_a_4xx_on_postgresql(it_factory: sessionmaker[Session], untrusting: str) -> None:
    make_user(it_factory, EMAIL, clock=FrozenClock(datetime.now(UTC)))
    with httpx.Client(base_url=untrusting, timeout=30) as c:
        token = c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["session"]["token"]
        c.headers["Authorization"] = f"Bearer {token}"
        for body in ({"email": "a\x00@acme.io", "password": "x"}, {"email": EMAIL, "password": "pass\x00word"}):
            r = c.post("/auth/login", json=body)
            assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), r.text
        r = c.post("/api-keys", json={"name": "ci\x00"})
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request")
        for big in (2**31, 2**63, 2**64, 10**30):
            for path in (f"/api-keys/{big}", f"/auth/sessions/{big}"):
                r = c.delete(path)
                assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (path, r.text)
        assert c.get("/orgs/ac%00me/2fa-policy").status_code == 404
        assert c.get("/auth/login-history?limit=5%00").status_code == 422
        huge = b'{"email": "' + b"a" * (65 * 1024) + b'", "password": "x"}'
        r = c.post("/auth/login", content=huge, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large")

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while read
            yield b'{"email": "'
            for _ in range(100):
                yield b"a" * 1024
            yield b'", "password": "x"}'

        r = c.post("/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
    with it_factory() as s:
        assert s.execute(select(LoginHistory.id)).all().__len__() == 1  # nothing written by the bad requests


def signed_in_with_totp(factory: sessionmaker[Session], url: str) -> tuple[str, str, list[str]]:
    """A user enrolled a minute ago (so the server's current code is a later step), signed in through ``url``:
    (session token, TOTP secret, backup codes)."""
    enrolled = FrozenClock(datetime.now(UTC) - timedelta(seconds=60))
    user = make_user(factory, EMAIL, clock=enrolled)
    secret, codes = enrol_totp(factory, user, enrolled)
    with httpx.Client(base_url=url, timeout=30) as c:
        challenge = c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["challenge"]
        done = c.post("/auth/2fa/login", json={"challenge": challenge, "code": codes[0]})
    assert done.status_code == 200, done.text
    return done.json()["session"]["token"], secret, codes


def failures(factory: sessionmaker[Session]) -> int:
    with factory() as s:
        return s.execute(select(User.second_factor_failures).where(User.email == EMAIL)).scalar_one()


def test_wrong_passwords_on_disable_count_toward_the_lockout(
    it_factory: sessionmaker[Session], untrusting: str
) -> None:
    token, secret, _ = signed_in_with_totp(it_factory, untrusting)
    code = totp.code_at(secret, datetime.now(UTC))
    wrong_code = "000000" if code != "000000" else "111111"
    with httpx.Client(base_url=untrusting, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c:
        bad_password = c.post("/auth/2fa/disable", json={"password": "not the password", "code": code})
        bad_code = c.post("/auth/2fa/disable", json={"password": PASSWORD, "code": wrong_code})
        assert bad_password.status_code == bad_code.status_code == 401
        assert bad_password.json() == bad_code.json()  # which of the two was wrong is not told
        answers = [c.post("/auth/2fa/disable", json={"password": f"guess {i}", "code": code}) for i in range(4)]
        assert [r.status_code for r in answers] == [401, 401, 401, 429]
        assert answers[-1].json()["error"]["code"] == "second_factor_locked"
        locked = c.post("/auth/2fa/disable", json={"password": PASSWORD, "code": code})
        assert (locked.status_code, locked.json()["error"]["code"]) == (429, "second_factor_locked")
    assert failures(it_factory) == 5


def test_a_reused_backup_code_is_a_replay_not_a_failure(it_factory: sessionmaker[Session], untrusting: str) -> None:
    _, _, codes = signed_in_with_totp(it_factory, untrusting)  # codes[0] is used
    with httpx.Client(base_url=untrusting, timeout=30) as c:
        for _ in range(6):
            challenge = c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["challenge"]
            replay = c.post("/auth/2fa/login", json={"challenge": challenge, "code": codes[0]})
            assert (replay.status_code, replay.json()["error"]["code"]) == (401, "backup_code_used")
        challenge = c.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).json()["challenge"]
        assert c.post("/auth/2fa/login", json={"challenge": challenge, "code": codes[1]}).status_code == 200
    assert failures(it_factory) == 0
