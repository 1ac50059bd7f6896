"""Sign-in outlives its services: ``twofa serve`` under a bounded load of sign-ins while the limiter's Redis is down
for ten seconds, and while its PostgreSQL restarts. Both servers are private to the test (never the shared ones)."""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tests.harness.services import ApiServer, RedisServer, free_port, service_env, wait_for
from tests.helpers import PASSWORD, enrol_totp, make_user
from twofa import totp
from twofa.clock import FrozenClock
from twofa.migrate import upgrade

pytestmark = pytest.mark.integration

USERS = [f"user{i}@acme.io" for i in range(4)]


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb + pg_ctl, as the postgres user) on a free loopback port."""

    def __init__(self) -> None:
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.pg_ctl = str(bindir / "pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="twofa-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_postgres(str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        self.start()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    def _options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> None:
        self._as_postgres(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-o", self._options(), "-w", "start"
        )

    def restart(self) -> None:
        self._as_postgres(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-m",
            "fast",
            "-o",
            self._options(),
            "-w",
            "restart",
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    server = ApiServer(env, log, quiet=True, extra=list(args)).start()
    try:
        yield server.url + "/api/v1"
    finally:
        server.stop()


class Load:
    """Sign-ins from a few client threads until stopped, at most ``limit`` in all: the status codes they got."""

    def __init__(self, url: str, threads: int = 2, limit: int = 3000) -> None:
        self.statuses: collections.Counter[int] = collections.Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.limit = limit
        self.threads = [threading.Thread(target=self._run, args=(url, i), daemon=True) for i in range(threads)]

    def _run(self, url: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            i = n
            while not self.stop.is_set():
                with self.lock:
                    if self.statuses.total() >= self.limit:
                        return
                email = USERS[i % len(USERS)]
                try:
                    status = client.post("/auth/login", json={"email": email, "password": PASSWORD}).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all: as much a failure as a 5xx
                with self.lock:
                    self.statuses[status] += 1
                i += 1
                time.sleep(0.005)  # a bounded load, on a shared host

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def total(self) -> int:
        with self.lock:
            return self.statuses.total()


def test_sign_ins_go_on_while_the_limiters_redis_is_down(
    it_db: str, it_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    for email in USERS:
        make_user(it_factory, email, clock=FrozenClock(datetime.now(UTC)))
    enrolled = FrozenClock(datetime.now(UTC) - timedelta(seconds=60))
    secret, _ = enrol_totp(it_factory, make_user(it_factory, "app@acme.io", clock=enrolled), enrolled)
    wrong_code = "000000" if totp.code_at(secret, datetime.now(UTC)) != "000000" else "111111"
    (tmp_path / "redis-a").mkdir()
    redis = RedisServer(tmp_path / "redis-a")
    port = redis.port
    env = service_env(it_db, redis.url, 1, TWOFA_RATELIMIT_URL=redis.url, TWOFA_RATELIMIT_PER_IP="100000")
    log = tmp_path / "serve.log"
    try:
        with serving(env, log) as url, Load(url) as load:
            wait_for(lambda: load.total() >= 20, 30, what="sign-ins before the outage")
            redis.stop()
            outage_ends, down_at = time.monotonic() + 10, load.total()
            with httpx.Client(base_url=url, timeout=30) as c:  # the lockout, in the database, still holds
                login = {"email": "app@acme.io", "password": PASSWORD}
                challenge = c.post("/auth/login", json=login).json()["challenge"]
                wrong = [c.post("/auth/2fa/login", json={"challenge": challenge, "code": wrong_code}) for _ in range(6)]
                assert [r.status_code for r in wrong] == [401] * 5 + [429]
                assert wrong[-1].json()["error"]["code"] == "second_factor_locked"
            wait_for(
                lambda: time.monotonic() >= outage_ends and load.total() > down_at + 20,
                30,
                what="ten seconds of sign-ins without Redis",
            )
            (tmp_path / "redis-b").mkdir()
            redis = RedisServer(tmp_path / "redis-b", port=port)
            wait_for(lambda: "request limits are back on" in log.read_text(), 30, what="the limiter to recover")
            wait_for(lambda: any(redis.client.scan_iter(match="twofa:rl*")), 30, what="counts in Redis again")
        assert set(load.statuses) == {200}, load.statuses
    finally:
        redis.stop()
    text = log.read_text()
    assert text.count("rate-limit store unreachable") == 1, text[-3000:]  # once per outage, not per request
    assert text.count("request limits are back on") == 1
    assert "Traceback" not in text


def test_sign_ins_go_on_while_postgresql_restarts(tmp_path: Path) -> None:
    pg = PrivatePostgres()
    try:
        upgrade(pg.url)
        engine = sa.create_engine(pg.url)
        factory = sessionmaker(bind=engine, expire_on_commit=False)
        for email in USERS:
            make_user(factory, email, clock=FrozenClock(datetime.now(UTC)))
        engine.dispose()
        env = service_env(pg.url, "redis://127.0.0.1:1/0", 1)
        with serving(env, tmp_path / "serve.log") as url, Load(url) as load:
            wait_for(lambda: load.total() >= 20, 30, what="sign-ins before the restart")
            pg.restart()
            after = load.total()
            wait_for(lambda: load.total() >= after + 50, 60, what="sign-ins after the restart")
        log = (tmp_path / "serve.log").read_text()
        assert set(load.statuses) == {200}, (load.statuses, log[-4000:])
        assert "Traceback" not in log
    finally:
        pg.stop()
