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
  simple protocol carries no parameters. They are the values ``plan`` makes: integers, text, bytes and aware
  datetimes.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, Executable
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement, TextClause
from sqlalchemy.sql.compiler import SQLCompiler

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import get_engine
from twofa.mail.backends import MailBackend
from twofa.mail.delivery import CLAIM, WRITES, Delivery, plan

# Compiles to PostgreSQL's own placeholders ($1, $2, ...; one per name), as PREPARE takes them. Never connects.
_DIALECT = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
_PREPARED = "twofa_prepared"  # in a pooled connection's info: the statements prepared on it


@dataclass(frozen=True)
class _Prepared:
    """One of ``delivery``'s statements as a prepared statement of each connection that runs it."""

    name: str
    prepare: str  # PREPARE name AS ...
    execute: str  # EXECUTE name(%s, ...), its arguments bound by psycopg
    arguments: tuple[str, ...]  # the parameters' names, in the order of $1, $2, ...
    constants: dict[str, Any]  # the values of the parameters the statement fixes itself


@cache
def _prepared(statement: Executable) -> _Prepared:
    compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=_DIALECT))
    arguments = tuple(compiled.positiontup or ())
    constants = {}
    for name in arguments:
        bind = compiled.binds[name]
        if not bind.required:
            value = bind.effective_value
            constants[name] = value.value if isinstance(value, enum.Enum) else value
    name = f"twofa_delivery_{next(_numbers)}"  # the same on every connection of this process: made once
    return _Prepared(
        name=name,
        prepare=f"PREPARE {name} AS {compiled}",
        execute=f"EXECUTE {name}({', '.join(['%s'] * len(arguments))})",
        arguments=arguments,
        constants=constants,
    )


_numbers = itertools.count(1)


def _prepare_once(cursor: psycopg.ClientCursor[Any], info: dict[str, Any]) -> None:
    """Prepare the claim and every write on this connection, the first time it delivers, before any transaction (an
    error inside one would end it). Each on its own, so that one already there does not keep the others out."""
    if info.get(_PREPARED):
        return
    for statement in (CLAIM, *WRITES):
        with suppress(psycopg.errors.DuplicatePreparedStatement):
            cursor.execute(_prepared(statement).prepare)
    info[_PREPARED] = True


def _sql(cursor: psycopg.ClientCursor[Any], statement: Executable, parameters: dict[str, Any]) -> str:
    """``statement`` run with ``parameters``: EXECUTE of its prepared statement, or a parameterless statement as it
    is (``SET LOCAL`` cannot be prepared)."""
    if isinstance(statement, TextClause):
        return statement.text
    p = _prepared(statement)
    values = p.constants | parameters
    return cursor.mogrify(p.execute, [values[name] for name in p.arguments])


def delivery_engine(engine: Engine) -> Engine:
    """The delivery's pool beside ``engine``'s, for the same database, in autocommit. Its own: sessions leave
    psycopg's prepared statements on their connections, and psycopg answers a rollback on such a connection with
    DEALLOCATE ALL, which would take this module's statements too."""
    return get_engine(engine.url.render_as_string(hide_password=False), autocommit=True)


@contextmanager
def _cursor(engine: Engine) -> Iterator[tuple[psycopg.ClientCursor[Any], dict[str, Any]]]:
    """A cursor on a connection of the delivery's pool, and that connection's info (what is prepared on it). The
    connection goes back outside any transaction (the claim's is rolled back when the send failed or nothing was
    claimed); a broken one, or one that cannot be rolled back, is dropped."""
    pooled = delivery_engine(engine).raw_connection()
    conn: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
    try:
        yield psycopg.ClientCursor(conn, row_factory=namedtuple_row), pooled.info
    finally:
        try:
            conn.rollback()  # a no-op outside a transaction
        except psycopg.Error:
            pooled.invalidate()
        else:
            if conn.broken:
                pooled.invalidate()
        pooled.close()


def _claim(cursor: psycopg.ClientCursor[Any], info: dict[str, Any], outbox_id: int) -> Any:
    """BEGIN and the claim, in one query: the row (a named tuple of ``CLAIM``'s columns), or None."""
    _prepare_once(cursor, info)
    query = "BEGIN; " + _sql(cursor, CLAIM, {"oid": outbox_id})
    try:
        cursor.execute(query)
    except psycopg.errors.InvalidSqlStatementName:
        # Something between here and the server reset the session (a pooler's DISCARD ALL): prepare again, once.
        # The writes were prepared with the claim, so they cannot be missing once the claim has run.
        cursor.connection.rollback()
        info.pop(_PREPARED, None)
        _prepare_once(cursor, info)
        cursor.execute(query)
    cursor.nextset()
    return cursor.fetchone()


def deliver(engine: Engine, outbox_id: int, backend: MailBackend, clock: Clock = SYSTEM_CLOCK) -> Delivery:
    """``delivery.deliver``, committed, for the database of ``engine``: claim (with BEGIN), send, then the writes
    (with COMMIT). A ``MailError`` leaves the row as it was, and the caller records the failure."""
    with _cursor(engine) as (cursor, info):
        row = _claim(cursor, info, outbox_id)
        if row is None:
            return Delivery.SKIPPED  # the rollback on the way out ends the transaction
        todo = plan(row, outbox_id, clock, postgresql=True)
        if todo.message is not None:
            backend.send(todo.message)
        cursor.execute("; ".join([*(_sql(cursor, s, p) for s, p in todo.writes), "COMMIT"]))
        return todo.outcome
