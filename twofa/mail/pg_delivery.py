"""Delivering one outbox row on PostgreSQL in two round trips instead of four.

``delivery.deliver`` through a SQLAlchemy session makes four: BEGIN (psycopg sends it alone and waits for it), the
claim, the writes, COMMIT. Here BEGIN travels with the claim and COMMIT with the writes, each pair as one query of
the simple protocol, which allows several statements. Two fewer round trips are two fewer wake-ups of the database's
process and of the worker's for every email (the figures are in the closing notes of issue #3).

- The decisions are ``delivery.plan``'s and the statements ``delivery``'s: the same transaction, the same row lock
  held across the SMTP exchange, the same writes.
- The statements are prepared once per connection (``PREPARE``); each query EXECUTEs them, so the server does not
  parse and plan them again for every email.
- The connections come from a pool of their own in autocommit mode (``db.get_engine(..., autocommit=True)``), so
  psycopg sends no BEGIN of its own, and no session's rollback makes psycopg deallocate these statements.
- The arguments are bound client-side by psycopg (``ClientCursor.mogrify``, quoted for the connection), as the
  simple protocol carries no parameters. They are the values ``plan`` makes (integers, text, bytes, aware datetimes,
  NULL), none of them from a user. So an email code's keyed hash is in the text of the query that marks it sent,
  where ``pg_stat_activity`` shows it and the server's log would print it with an error in that query; it is the
  value the row stores, never the code.
- The writes are made into SQL before the message leaves, so a fault in them cannot follow a sent message. A
  failure of the final query itself (the connection lost) after the send is logged: the row stays queued, and the
  outbox sweeper has it sent again, as after a worker killed between the SMTP server's acceptance and the commit:
  under the same Message-ID, or for an email code with a new code under a new one (``delivery.code_message_id``).
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, Executable
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement, TextClause
from sqlalchemy.sql.compiler import SQLCompiler

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime, get_engine
from twofa.mail.backends import MailBackend
from twofa.mail.delivery import CLAIM, WRITES, Delivery, Write, plan

log = logging.getLogger(__name__)

# Compiles to PostgreSQL's own placeholders ($1, $2, ...; one per name), as PREPARE takes them. Never connects.
_DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
_PREPARED = "twofa_prepared"  # in a pooled connection's info: the statements are prepared on it
# What a claim meets when its prepared statement is gone (a pooler's DISCARD ALL) or stale (a migration changed a
# column it reads: "cached plan must not change result type"): prepared again, and the claim made again, once.
_STALE = (psycopg.errors.InvalidSqlStatementName, psycopg.errors.FeatureNotSupported)


@dataclass(frozen=True)
class _Prepared:
    """One of ``delivery``'s statements as a prepared statement of each connection that runs it."""

    prepare: str  # PREPARE name AS ...
    execute: str  # EXECUTE name(%s, ...), its arguments bound by psycopg
    arguments: tuple[str, ...]  # the parameters' names, in the order of $1, $2, ...
    constants: dict[str, Any]  # the values of the parameters the statement fixes itself


def _prepared(statement: Executable) -> _Prepared:
    compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=_DIALECT))
    arguments = tuple(compiled.positiontup or ())
    constants = {
        name: _value(compiled.binds[name].effective_value) for name in arguments if not compiled.binds[name].required
    }
    # Named after its text: the same in every thread and process, and a new name when a release changes it.
    name = "twofa_" + hashlib.sha256(str(compiled).encode()).hexdigest()[:16]
    return _Prepared(
        prepare=f"PREPARE {name} AS {compiled}",
        execute=f"EXECUTE {name}({', '.join(['%s'] * len(arguments))})",
        arguments=arguments,
        constants=constants,
    )


_UTC = UTCDateTime()


def _value(value: Any) -> Any:
    """A parameter as SQLAlchemy would bind it: an enum by its value, a datetime through ``UTCDateTime`` (UTC, and
    never naive)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return _UTC.process_bind_param(value, _DIALECT)
    return value


# Made once, at import.
_STATEMENTS: dict[Executable, _Prepared] = {statement: _prepared(statement) for statement in (CLAIM, *WRITES)}


def _prepare_all(cursor: psycopg.ClientCursor[Any], info: dict[str, Any], *, again: bool = False) -> None:
    """Prepare the claim and every write on this connection, the first time it delivers (``again``: after they were
    lost), before any transaction: an error inside one would end it."""
    if info.get(_PREPARED) and not again:
        return
    info.pop(_PREPARED, None)
    if again:
        cursor.execute("DEALLOCATE ALL")  # only this module prepares on these connections (prepare_threshold=None)
    for p in _STATEMENTS.values():
        with suppress(psycopg.errors.DuplicatePreparedStatement):  # the same name is the same text
            cursor.execute(p.prepare)
    info[_PREPARED] = True


def _sql(cursor: psycopg.ClientCursor[Any], write: Write) -> str:
    """A statement with its parameters, as SQL: EXECUTE of its prepared statement, or a parameterless statement as
    it is (``SET LOCAL`` cannot be prepared). A statement not prepared here is a ``KeyError``."""
    statement, parameters = write
    if isinstance(statement, TextClause):
        if parameters:
            raise ValueError("a text statement is sent as it is, without parameters")
        return statement.text
    p = _STATEMENTS[statement]
    values = p.constants | {name: _value(v) for name, v in parameters.items()}
    return cursor.mogrify(p.execute, [values[name] for name in p.arguments])


@cache
def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def delivery_engine(engine: Engine) -> Engine:
    """The delivery's pool beside ``engine``'s, for the same database, in autocommit. Its own: sessions leave
    psycopg's prepared statements on their connections, and psycopg answers a rollback on such a connection with
    DEALLOCATE ALL, which would take this module's statements too."""
    return get_engine(_url(engine), autocommit=True)


@contextmanager
def _cursor(engine: Engine) -> Iterator[tuple[psycopg.ClientCursor[Any], dict[str, Any]]]:
    """A cursor on a connection of the delivery's pool, and that connection's info (whether the statements are
    prepared on it). Back in the pool, the pool's reset rolls back a transaction left open (the claim's, when the
    send failed or nothing was claimed). After a database error the connection is not used again: whatever state
    it was left in, the next delivery starts from a new one."""
    pooled = delivery_engine(engine).raw_connection()
    try:
        conn = pooled.driver_connection
        assert isinstance(conn, psycopg.Connection)
        yield psycopg.ClientCursor(conn, row_factory=namedtuple_row), pooled.info
    except psycopg.DatabaseError:
        pooled.invalidate()
        raise
    finally:
        pooled.close()


def _claim(cursor: psycopg.ClientCursor[Any], info: dict[str, Any], outbox_id: int) -> Any:
    """BEGIN and the claim, in one query: the row (a named tuple of ``CLAIM``'s columns), or None."""
    _prepare_all(cursor, info)
    query = "BEGIN; " + _sql(cursor, (CLAIM, {"oid": outbox_id}))
    try:
        cursor.execute(query)
    except _STALE:
        cursor.connection.rollback()
        _prepare_all(cursor, info, again=True)  # the writes with the claim: none can be missing once it has run
        cursor.execute(query)
    cursor.nextset()
    return cursor.fetchone()


def deliver(engine: Engine, outbox_id: int, backend: MailBackend, clock: Clock = SYSTEM_CLOCK) -> Delivery:
    """``delivery.deliver``, committed, for the database of ``engine``: claim (with BEGIN), send, then the writes
    (with COMMIT). A ``MailError`` leaves the row as it was, and the caller records the failure; database errors
    are psycopg's own."""
    with _cursor(engine) as (cursor, info):
        row = _claim(cursor, info, outbox_id)
        if row is None:
            return Delivery.SKIPPED  # the pool's rollback ends the transaction
        todo = plan(row, outbox_id, clock, postgresql=True)
        writes = "; ".join([*(_sql(cursor, write) for write in todo.writes), "COMMIT"])  # before anything is sent
        if todo.message is not None:
            backend.send(todo.message)
        try:
            cursor.execute(writes)
        except psycopg.Error:
            if todo.message is not None:
                log.error("outbox row %d: its message went out but could not be marked sent", outbox_id)
            raise
        return todo.outcome
