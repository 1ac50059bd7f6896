"""Integration fixtures: a private Redis, a PostgreSQL database, a scriptable SMTP server, worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import _empty_tables
from tests.harness.services import RedisServer, SmtpServer, Worker, pg_database, service_env
from twofa import outbox
from twofa.db import get_engine
from workers.dispatch import CeleryDispatcher


@pytest.fixture(scope="session")
def it_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def it_db() -> Iterator[str]:
    with pg_database() as url:
        yield url


@pytest.fixture
def it_factory(it_db: str) -> sessionmaker[Session]:
    _empty_tables(it_db)
    return sessionmaker(bind=get_engine(it_db), expire_on_commit=False)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.handler.release.set()
    server.stop()


@pytest.fixture
def client_app(it_redis: RedisServer) -> Iterator[Celery]:
    """The sending side (what the API process does): commits rows, then publishes their ids to Redis."""
    it_redis.client.flushall()
    app = Celery("twofa-client")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = it_redis.url
    previous = outbox.install_dispatcher(CeleryDispatcher(app))
    yield app
    outbox.install_dispatcher(previous)
    app.close()


@pytest.fixture
def worker_env(it_db: str, it_redis: RedisServer, smtp: SmtpServer) -> dict[str, str]:
    return service_env(it_db, it_redis.url, smtp.port, TWOFA_OUTBOX_SWEEP_GRACE="1")


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path, client_app: Celery) -> Iterator[Worker]:
    proc = Worker(env=worker_env, log_path=tmp_path / "worker.log").start()
    yield proc
    # The test is over: killed, not stopped warm. A warm stop takes Celery 1.6 s, and one that lands while a task
    # runs (the mail a test's last step wrote) waits some 30 s more (celery#3802: the finished task is not acked
    # but restored). Nothing it leaves matters: the next test empties the broker and the tables.
    proc.kill()
