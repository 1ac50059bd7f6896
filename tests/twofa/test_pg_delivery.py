"""Delivery on PostgreSQL in two round trips (``twofa.mail.pg_delivery``): the same outcomes as ``delivery.deliver``,
fewer round trips, and the pooled connection always handed back clean."""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from email.message import Message
from typing import IO, Any

import psycopg
import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import code_of, queue_code
from twofa import email_otp, outbox
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.mail import pg_delivery
from twofa.mail.attempts import attempt
from twofa.mail.backends import MemoryBackend, TransientMailError
from twofa.mail.delivery import Delivery, email_code_hash
from twofa.models import EmailOtp, OutboxMessage, User

pytestmark = [pytest.mark.parametrize("db_url", ["postgresql"], indirect=True), pytest.mark.usefixtures("no_dispatch")]


def engine_of(factory: sessionmaker[Session]) -> Engine:
    bind = factory.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def own_engine(factory: sessionmaker[Session]) -> Engine:
    """The delivery's pool for the test database."""
    return pg_delivery.delivery_engine(engine_of(factory))


@contextmanager
def traced(engine: Engine) -> Iterator[list[str]]:
    """libpq's protocol trace of every connection checked out meanwhile: the frontend (F) and backend (B) messages."""
    lines: list[str] = []
    with ExitStack() as stack:
        files: list[tuple[psycopg.Connection[Any], IO[bytes]]] = []

        def on_checkout(dbapi_connection: psycopg.Connection[Any], _record: object, _proxy: object) -> None:
            out = stack.enter_context(tempfile.TemporaryFile())
            dbapi_connection.pgconn.trace(out.fileno())
            dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            files.append((dbapi_connection, out))

        event.listen(engine, "checkout", on_checkout)
        try:
            yield lines
        finally:
            event.remove(engine, "checkout", on_checkout)
            for conn, out in files:
                conn.pgconn.untrace()
                out.seek(0)
                for line in out.read().decode().splitlines():
                    if line.startswith(("F\t", "B\t")) or not lines:
                        lines.append(line)
                    else:  # a query's text goes on over lines of its own
                        lines[-1] += " " + line


def round_trips(trace: list[str]) -> list[str]:
    """The queries sent, one per round trip: each ends with the server's ReadyForQuery."""
    assert sum("\tReadyForQuery\t" in line for line in trace) == sum(
        re.match(r"F\t\d+\t(Query|Sync)\b", line) is not None for line in trace
    )
    sent = []
    for line in trace:
        if found := re.match(r"F\t\d+\t(Query|Parse)\t", line):
            quoted = re.findall(r'"([^"]*)"', line)  # Parse: the statement's name, then its text
            sent.append(quoted[0] if found.group(1) == "Query" else quoted[1])
    return sent


def pool_is_clean(factory: sessionmaker[Session]) -> None:
    """Nothing checked out of either pool, and the next connection out of the delivery's pool is outside any
    transaction, in autocommit; the sessions' connections are not (they rely on psycopg's BEGIN)."""
    for engine, autocommit in ((own_engine(factory), True), (engine_of(factory), False)):
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        pooled = engine.raw_connection()
        try:
            conn = pooled.driver_connection
            assert isinstance(conn, psycopg.Connection)
            assert conn.autocommit is autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            pooled.close()


def test_an_email_code_goes_out_in_two_round_trips_and_verifies(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    first, row_id = queue_code(factory, clock, "first@example.com"), queue_code(factory, clock)
    mailbox = MemoryBackend()
    engine = engine_of(factory)
    with traced(own_engine(factory)) as trace:
        assert pg_delivery.deliver(engine, first, MemoryBackend(), clock) is Delivery.SENT
    # A connection's first delivery prepares the statements; here or in an earlier test on the same connection.
    assert any(q.startswith("PREPARE") and "FOR UPDATE OF outbox SKIP LOCKED" in q for q in round_trips(trace)) or (
        round_trips(trace)[0].startswith("BEGIN; EXECUTE")
    )
    with traced(own_engine(factory)) as trace:
        assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT
    queries = round_trips(trace)
    assert len(queries) == 2, queries
    assert re.fullmatch(rf"BEGIN; EXECUTE twofa_[0-9a-f]{{16}}\({row_id}, 'queued'\)", queries[0])
    assert re.fullmatch(r"EXECUTE twofa_[0-9a-f]{16}\(.*\); COMMIT", queries[1])
    pool_is_clean(factory)

    (message,) = mailbox.sent
    code = code_of(message)
    assert not any(code in line for line in trace)  # only its keyed hash went to the database
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and (row.status, row.attempts, row.sent_at) == ("sent", 1, clock.now())
        otp = s.get(EmailOtp, row.email_otp_id)
        assert otp is not None
        assert otp.code_hash == email_code_hash(otp.id, code) and otp.delivered_at == clock.now()
        user = s.get(User, otp.user_id)
    assert user is not None
    with factory() as s:
        email_otp.verify(s, user, code, email_otp.ENROL, clock=clock)  # raises unless it is the code
        s.commit()


def test_the_session_path_takes_four(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """What the two round trips replace: psycopg's BEGIN, the claim, the writes and COMMIT, each on its own."""
    from twofa.mail.delivery import deliver

    row_id = queue_code(factory, clock)
    with traced(engine_of(factory)) as trace, factory() as s:
        assert deliver(s, row_id, MemoryBackend(), clock) is Delivery.SENT
        s.commit()
    assert [q.split()[0] for q in round_trips(trace)] == ["BEGIN", "SELECT", "WITH", "COMMIT"]


def test_a_row_is_sent_once(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    row_id = queue_code(factory, clock)
    mailbox = MemoryBackend()
    engine = engine_of(factory)
    outcomes = [pg_delivery.deliver(engine, row_id, mailbox, clock) for _ in range(3)]
    assert outcomes == [Delivery.SENT, Delivery.SKIPPED, Delivery.SKIPPED]
    assert len(mailbox.sent) == 1
    pool_is_clean(factory)


def test_a_row_another_worker_holds_is_skipped_at_once(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    row_id = queue_code(factory, clock)
    mailbox = MemoryBackend()
    engine = engine_of(factory)
    with factory() as holder:
        holder.execute(select(OutboxMessage).where(OutboxMessage.id == row_id).with_for_update())
        assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SKIPPED
    assert mailbox.sent == []
    assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT  # the lock was let go
    pool_is_clean(factory)


class Refusing(MemoryBackend):
    def send(self, message: Message) -> None:
        raise TransientMailError("451 try later")


def test_a_failed_send_leaves_the_row_queued_and_unlocked(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    row_id = queue_code(factory, clock)
    engine = engine_of(factory)
    with pytest.raises(TransientMailError):
        pg_delivery.deliver(engine, row_id, Refusing(), clock)
    pool_is_clean(factory)
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and (row.status, row.attempts) == ("queued", 0)
        assert s.execute(select(EmailOtp.code_hash)).scalar_one() is None  # the code that did not leave is not stored
    # Through ``attempt``, as the worker calls it: recorded for a retry, then delivered.
    with factory() as s:
        assert attempt(s, row_id, Refusing(), retry_in=timedelta(seconds=2), clock=clock) == ("retry", True)
    mailbox = MemoryBackend()
    with factory() as s:
        assert attempt(s, row_id, mailbox, retry_in=timedelta(seconds=2), clock=clock) == ("sent", False)
    assert len(mailbox.sent) == 1
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and (row.status, row.attempts) == ("sent", 2)
    pool_is_clean(factory)


def test_an_expired_code_is_not_sent(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    row_id = queue_code(factory, clock)
    clock.advance(minutes=6)
    mailbox = MemoryBackend()
    engine = engine_of(factory)
    with traced(own_engine(factory)) as trace:
        assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.EXPIRED
    assert len(round_trips(trace)) == 2
    assert mailbox.sent == []
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and row.status == "expired"
        assert s.execute(select(EmailOtp.delivery_failed_at)).scalar_one() == clock.now()
    pool_is_clean(factory)


def test_a_replaced_code_is_cancelled(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    row_id = queue_code(factory, clock)
    with factory() as s:
        s.execute(text("UPDATE email_otps SET invalidated_at = now()"))
        s.commit()
    mailbox = MemoryBackend()
    assert pg_delivery.deliver(engine_of(factory), row_id, mailbox, clock) is Delivery.CANCELLED
    assert mailbox.sent == []
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and (row.status, row.last_error) == ("cancelled", "a newer code replaced it")


def test_a_connection_lost_mid_send_is_dropped_from_the_pool(
    factory: sessionmaker[Session], clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The database ends the delivering connection while the message is with the SMTP server (a restart, a
    failover): nothing is marked, the broken connection does not go back to the pool, and the next attempt sends."""
    row_id = queue_code(factory, clock)
    engine = engine_of(factory)
    pids: list[int] = []

    def note_pid(conn: psycopg.Connection[Any], _record: object, _proxy: object) -> None:
        pids.append(conn.info.backend_pid)

    event.listen(own_engine(factory), "checkout", note_pid)

    class Terminating(MemoryBackend):
        def send(self, message: Message) -> None:
            with factory() as s:
                s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[-1]})
            super().send(message)

    try:
        with pytest.raises(psycopg.OperationalError), caplog.at_level(logging.ERROR):
            pg_delivery.deliver(engine, row_id, Terminating(), clock)
    finally:
        event.remove(own_engine(factory), "checkout", note_pid)
    assert f"outbox row {row_id}: its message went out but could not be marked sent" in caplog.messages
    pool_is_clean(factory)
    mailbox = MemoryBackend()
    assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT
    assert len(mailbox.sent) == 1


def test_statements_lost_to_a_session_reset_are_prepared_again(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A pooler between the worker and the database may reset the session (DISCARD ALL): the next claim finds its
    prepared statement gone, prepares them again and delivers."""
    first, row_id = queue_code(factory, clock, "first@example.com"), queue_code(factory, clock)
    engine = engine_of(factory)
    assert pg_delivery.deliver(engine, first, MemoryBackend(), clock) is Delivery.SENT
    pool = own_engine(factory).pool
    held = [pool.connect() for _ in range(pool.checkedin())]  # type: ignore[attr-defined]
    for pooled in held:  # every connection in the pool, whichever the next delivery gets
        pooled.driver_connection.execute("DISCARD ALL")  # type: ignore[union-attr]
    for pooled in held:
        pooled.close()
    mailbox = MemoryBackend()
    with traced(own_engine(factory)) as trace:
        assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT
    assert len(mailbox.sent) == 1
    queries = round_trips(trace)
    assert queries[0].startswith("BEGIN; EXECUTE") and queries[1] == "ROLLBACK"
    assert queries[2] == "DEALLOCATE ALL" and sum(q.startswith("PREPARE") for q in queries) == 5
    assert queries[-2].startswith("BEGIN; EXECUTE") and queries[-1].endswith("; COMMIT")
    pool_is_clean(factory)


def test_the_row_stays_locked_while_its_message_is_with_the_smtp_server(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """From the claim to the commit of the writes: a duplicate task meanwhile skips the row, another transaction
    cannot take it, and the lock goes with the commit."""
    row_id = queue_code(factory, clock)
    engine = engine_of(factory)
    seen: list[object] = []

    class Meanwhile(MemoryBackend):
        def send(self, message: Message) -> None:
            seen.append(pg_delivery.deliver(engine, row_id, MemoryBackend(), clock))  # a duplicated task
            with factory() as s, pytest.raises(OperationalError) as locked:
                s.execute(select(OutboxMessage).where(OutboxMessage.id == row_id).with_for_update(nowait=True))
            seen.append(type(locked.value.orig))
            super().send(message)

    mailbox = Meanwhile()
    assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT
    assert seen == [Delivery.SKIPPED, psycopg.errors.LockNotAvailable] and len(mailbox.sent) == 1
    with factory() as s:  # committed: free, and sent
        row = s.execute(select(OutboxMessage).where(OutboxMessage.id == row_id).with_for_update(nowait=True))
        assert row.scalar_one().status == "sent"
    pool_is_clean(factory)


def test_a_task_interrupted_mid_send_leaves_the_row_queued_and_free(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    """A time limit or a shutdown raises inside the send: nothing is marked, and the row can be claimed at once."""
    row_id = queue_code(factory, clock)

    class Interrupted(MemoryBackend):
        def send(self, message: Message) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pg_delivery.deliver(engine_of(factory), row_id, Interrupted(), clock)
    pool_is_clean(factory)
    with factory() as s:
        row = s.execute(select(OutboxMessage).where(OutboxMessage.id == row_id).with_for_update(nowait=True))
        assert (row.scalar_one().status, s.execute(select(EmailOtp.code_hash)).scalar_one()) == ("queued", None)


def test_bulk_mail_is_marked_sent_without_waiting_for_the_disk(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    with transaction(factory) as s:
        row = outbox.enqueue(
            s,
            template="policy_reminder",
            to="x@example.com",
            context={"org_name": "Acme", "role": "admin", "deadline": "1 Dec", "days_left": 3, "email_allowed": True},
            clock=clock,
        )
        s.flush()
        row_id = row.id
    mailbox = MemoryBackend()
    engine = engine_of(factory)
    pg_delivery.deliver(engine, queue_code(factory, clock, "warm@example.com"), MemoryBackend(), clock)
    with traced(own_engine(factory)) as trace:
        assert pg_delivery.deliver(engine, row_id, mailbox, clock) is Delivery.SENT
    queries = round_trips(trace)
    assert len(queries) == 2 and queries[1].startswith("SET LOCAL synchronous_commit TO OFF; EXECUTE twofa_")
    assert "NULL" in queries[1]  # last_error cleared: a constant of the statement, bound as NULL
    assert len(mailbox.sent) == 1
    with factory() as s:
        row = s.get(OutboxMessage, row_id)
        assert row is not None and (row.status, row.sent_at, row.last_error) == ("sent", clock.now(), None)
