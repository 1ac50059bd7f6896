"""Engines, sessions and the unit of work.

Engines are created per process (keyed by pid), so a forked Celery worker child never reuses its parent's
connections. SQLite runs every transaction as ``BEGIN IMMEDIATE``: SQLite has no row locks, and taking the write lock
up front turns what PostgreSQL does with ``SELECT ... FOR UPDATE`` into plain serialisation instead of
``database is locked`` errors halfway through a transaction.
"""

from __future__ import annotations

import os
import select as io_select
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    MetaData,
    Row,
    bindparam,
    column,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from twofa.errors import DomainError
from twofa.settings import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that refuses naive datetimes and always reads back aware UTC.

    SQLite stores no zone; this makes both databases hand the domain the same kind of value.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], datetime | None] | None:
        if dialect.name != "postgresql":
            return super().result_processor(dialect, coltype)

        # PostgreSQL connections run with TimeZone=UTC (make_engine), so psycopg already hands back aware UTC
        # datetimes: pass them through. Set-wise jobs read hundreds of thousands of these.
        def process(value: datetime | None) -> datetime | None:
            return value if value is None or value.tzinfo is UTC else self.process_result_value(value, dialect)

        return process


_engines: dict[tuple[int, str], Engine] = {}


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" event own BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def conflict_insert(session: Session, model: Any) -> Any:
    """``INSERT`` for ``model`` in the session's dialect, which offers ``on_conflict_do_nothing|update``."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


# A pooled PostgreSQL connection idle longer than this is pinged before use (a firewall or a failover may have dropped
# it silently); one in constant use is not: a ping per checkout cost a third of a sign-in's database time.
PING_IDLE_AFTER = 5.0  # seconds


def _closed_by_server(dbapi_connection: Any) -> bool:
    """Whether the server has closed this idle connection. An idle connection has nothing to read: a readable socket
    holds the server's goodbye (a restart sends "terminating connection", then closes). No round trip: one poll."""
    if getattr(dbapi_connection, "closed", False) or getattr(dbapi_connection, "broken", False):
        return True
    try:
        poller = io_select.poll()
        poller.register(dbapi_connection.fileno(), io_select.POLLIN | io_select.POLLERR | io_select.POLLHUP)
    except Exception:  # no socket left
        return True
    return bool(poller.poll(0))


def _check_on_checkout(engine: Engine) -> None:
    """A pooled connection that the server closed (a restart) is replaced before any statement runs on it, and one
    that sat idle is pinged (SQLAlchemy's ``pool_pre_ping``, for those only). Both raise ``DisconnectionError``, on
    which the pool reconnects the record, and the request goes on."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["twofa_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.pop("twofa_checked_in", None)
        if checked_in is None:
            return
        if _closed_by_server(dbapi_connection):
            raise DisconnectionError("the server closed a pooled connection")
        if time.monotonic() - checked_in < PING_IDLE_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError("a pooled connection did not answer its ping") from exc


# What a new connection meets while PostgreSQL restarts: refused, told it is starting or stopping, or closed at once.
_RESTARTING = ("connection refused", "the database system is", "server closed the connection unexpectedly")


def _wait_for_server(engine: Engine, wait: float) -> None:
    """A new connection is tried again for up to ``wait`` seconds while the server restarts, so that requests wait for
    it instead of failing. Other errors (a wrong password, an unknown database) fail at once."""

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        deadline = time.monotonic() + wait
        while True:
            try:
                return dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if time.monotonic() >= deadline or not any(s in str(exc).lower() for s in _RESTARTING):
                    raise
            time.sleep(0.2)


def _recordset(table: Any, names: list[str]) -> Any:
    """PostgreSQL's ``json_to_recordset(:rows) AS r(names typed as the table's columns)``: rows as one parameter."""
    return (
        func.json_to_recordset(bindparam("rows", type_=JSON()))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived(name="r", with_types=True)
    )


def _recordset_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"rows": [{k: _jsonable(v) for k, v in row.items()} for row in rows]}


def insert_rows(
    session: Session,
    model: Any,
    rows: Sequence[dict[str, Any]],
    *,
    returning: Sequence[Any],
    on_conflict: Callable[[Any], Any] | None = None,
) -> Sequence[Row[Any]]:
    """INSERT ``rows`` (dicts keyed by column name, all with the same keys) into ``model``'s table, with RETURNING.

    On PostgreSQL this is one statement for any number of rows: the rows travel as one JSON parameter that
    ``json_to_recordset`` unpacks, so a job's statement count does not grow with its data and no page of rows meets
    the protocol's limit of 65,535 parameters (values must be JSON-representable; aware datetimes travel as ISO
    strings). SQLite takes them as an ``executemany``. ``on_conflict`` receives the dialect's INSERT and returns it
    with its ``ON CONFLICT`` clause."""
    if not rows:
        return []
    table = model.__table__
    names = list(rows[0])
    if session.get_bind().dialect.name == "postgresql":
        record = _recordset(table, names)
        stmt: Any = postgresql.insert(table).from_select(names, select(*(record.c[name] for name in names)))
        params: Any = _recordset_rows(rows)
    else:
        stmt, params = sqlite.insert(table), list(rows)
    if on_conflict is not None:
        stmt = on_conflict(stmt)
    return session.execute(stmt.returning(*returning), params).all()


def update_rows(session: Session, model: Any, rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """UPDATE ``model``'s rows named by ``key`` in ``rows`` (dicts with the same keys), each to its own values. On
    PostgreSQL one statement for any number of rows (``UPDATE ... FROM json_to_recordset``, as ``insert_rows``),
    so a job's statement count does not grow with its data; SQLite takes them as an ``executemany``."""
    if not rows:
        return
    table = model.__table__
    names = list(rows[0])
    if session.get_bind().dialect.name == "postgresql":
        record = _recordset(table, names)
        statement = (
            update(table)
            .where(table.c[key] == record.c[key])
            .values({name: record.c[name] for name in names if name != key})
        )
        session.execute(statement, _recordset_rows(rows))
        return
    by_key = update(table).where(table.c[key] == bindparam("_key"))
    values: dict[str, Any] = {name: bindparam(name) for name in names if name != key}
    session.execute(by_key.values(values), [{**row, "_key": row[key]} for row in rows])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # as UTCDateTime refuses them on the other path
            raise ValueError("naive datetime given to a UTC column")
        return value.isoformat()
    return value


# Statement parameters stay out of SQLAlchemy's errors and its SQL log: they include password and code hashes,
# encrypted seeds and session-token digests, and an error's text ends up in a worker's or the API's log. It covers
# SQLAlchemy's text only, not the server's own DETAIL lines (a duplicate key's value).
HIDE_PARAMETERS = True


def make_engine(url: str) -> Engine:
    """An engine for ``url``."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=HIDE_PARAMETERS
        )
        _configure_sqlite(engine)
        return engine
    # TimeZone=UTC: timestamps come back in UTC whatever the server's default (see UTCDateTime.result_processor).
    engine = create_engine(
        url,
        connect_args={"options": "-c timezone=UTC"},
        hide_parameters=HIDE_PARAMETERS,
        pool_size=10,
        max_overflow=20,
    )
    _check_on_checkout(engine)
    if wait := get_settings().database_connect_wait:
        _wait_for_server(engine, wait)
    return engine


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the configured database) in this process."""
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Forget this process's engines (call after fork, or when a test changes databases)."""
    for key, engine in list(_engines.items()):
        if key[0] == os.getpid():
            engine.dispose()
        del _engines[key]
    _factories.clear()


_factories: dict[tuple[int, str], sessionmaker[Session]] = {}


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """This process's session factory for ``url`` (default: the configured database), made once."""
    url = url or get_settings().database_url
    key = (os.getpid(), url)
    factory = _factories.get(key)
    if factory is None:
        factory = _factories[key] = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    return factory


@contextmanager
def transaction(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One unit of work: commit on success and on a ``DomainError`` marked ``recorded`` (see ``twofa.errors``),
    roll back otherwise."""
    session = (factory or session_factory())()
    try:
        yield session
        session.commit()
    except DomainError as exc:
        if exc.keep_writes:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
