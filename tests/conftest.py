"""Test fixtures: the tests run on PostgreSQL, as production does.

Each pytest run creates its own PostgreSQL database (``twofa_test_<pid>_<random>``) and drops it at the end, so runs
on a shared server never meet. Each test runs inside one transaction that is rolled back at its end (its sessions'
commits release savepoints); a test whose work crosses connections (threads, a server, the CLI) is marked
``committed``: it commits for real, on tables emptied before and after it. SQLite, the embedded default, keeps its
end-to-end test: the demo (tests/cli).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

# Cheap argon2 for tests (production uses argon2-cffi's defaults); set before twofa reads its settings. The key
# passes the services' check (32+ characters, 16+ distinct), as the worker and server processes of the tests check it.
os.environ.update(
    TWOFA_SECRET_KEY="test-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    TWOFA_ARGON2_TIME_COST="1",
    TWOFA_ARGON2_MEMORY_COST="256",
    TWOFA_ARGON2_PARALLELISM="1",
    TWOFA_MAIL_BACKEND="memory",
)

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

import policies  # noqa: F401  (registers the policy tables and the login gate, as every edge does)
import reports.models  # noqa: F401
from tests.harness import services as harness
from tests.harness.services import PG_ADMIN_URL
from twofa import outbox
from twofa.clock import FrozenClock
from twofa.db import Base, get_engine
from twofa.mail.backends import MemoryBackend
from twofa.mail.sync import SynchronousDispatcher
from twofa.settings import get_settings


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({type(exc.orig).__name__}); "
            "start it (make services) or set TWOFA_TEST_PG_ADMIN_URL",
            returncode=3,
        )
    finally:
        admin.dispose()
    with harness.pg_database("twofa_test") as url:
        yield url


@pytest.fixture
def db_url(pg_database: str) -> str:
    return pg_database


def _empty_tables(url: str) -> None:
    engine = get_engine(url)
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE " + ", ".join(t.name for t in tables) + " RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture
def factory(request: pytest.FixtureRequest, db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = get_engine(db_url)
    if request.node.get_closest_marker("committed"):
        _empty_tables(db_url)
        yield sessionmaker(bind=engine, expire_on_commit=False)
        _empty_tables(db_url)
        return
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        finally:
            outer.rollback()


COMMITTED_DIRECTORIES = ("tests/api/", "tests/cli/")  # a server in a thread, or the CLI with its own engine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(COMMITTED_DIRECTORIES):
            item.add_marker(pytest.mark.committed)
        if item.nodeid.startswith("tests/integration/browser/"):  # under xdist, on one worker: one site for them
            item.add_marker(pytest.mark.xdist_group("browser"))


@pytest.fixture
def no_dispatch() -> Iterator[None]:
    """No dispatcher: committed outbox rows stay queued until the test delivers them."""
    previous = outbox.install_dispatcher(None)
    yield
    outbox.install_dispatcher(previous)


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as s:
        yield s


@pytest.fixture
def clock() -> FrozenClock:
    # 5 seconds into a 30-second TOTP step, so +-1 step arithmetic is unambiguous.
    return FrozenClock(datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC))


@pytest.fixture
def mailbox(factory: sessionmaker[Session], clock: FrozenClock) -> Iterator[MemoryBackend]:
    """Outbox rows are delivered synchronously right after each commit, into this list."""
    backend = MemoryBackend()
    previous = outbox.install_dispatcher(SynchronousDispatcher(factory, backend, clock))
    yield backend
    outbox.install_dispatcher(previous)


@pytest.fixture(autouse=True)
def _settings_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
