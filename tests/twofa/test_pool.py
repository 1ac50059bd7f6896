"""PostgreSQL connections in the pool: pinged when they sat idle, trusted while in constant use, and replaced
before use once the server has closed them (a restart)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, text

from twofa import db


@pytest.fixture
def engine(pg_database: str) -> Iterator[Engine]:
    engine = db.make_engine(pg_database)
    yield engine
    engine.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(pg_database: str, pid: int) -> None:
    killer = sa.create_engine(pg_database, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as conn:
            # With a timeout, it returns once the backend has exited (its socket closed), as after a restart.
            assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()
    finally:
        killer.dispose()


def test_an_idle_connection_that_died_is_replaced_before_use(
    engine: Engine, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(engine)
    terminate(pg_database, first)  # a database restart, or a firewall dropping an idle connection
    monkeypatch.setattr(db, "PING_IDLE_AFTER", 0.0)  # as if it had been idle long enough
    assert backend_pid(engine) != first  # the ping failed, the pool connected afresh: the caller saw nothing


def test_a_busy_connection_is_not_pinged_and_one_the_server_closed_is_replaced(
    engine: Engine, pg_database: str
) -> None:
    pings: list[object] = []
    original = engine.dialect.do_ping

    def counting_ping(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return original(dbapi_connection)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    first = backend_pid(engine)
    for _ in range(5):
        assert backend_pid(engine) == first  # reused at once: no ping
    assert pings == []
    terminate(pg_database, first)
    assert backend_pid(engine) != first  # found closed at checkout, before any statement: replaced, no error
    assert pings == []  # without a round trip
