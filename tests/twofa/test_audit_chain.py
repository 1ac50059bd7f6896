"""The audit log is a hash chain per organisation: an edit or a deletion made with plain SQL is named by verify,
and writers at once never fork a chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.helpers import at_once
from twofa import accounts, audit
from twofa.audit_chain import verify
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import AuditEvent


@contextmanager
def tampering(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """Plain SQL behind the product's back, as the table's owner (on PostgreSQL, past the append-only trigger)."""
    with factory.begin() as session:
        conn = session.connection()
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        yield conn
        if postgres:
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))


def _orgs(factory: sessionmaker[Session], clock: FrozenClock) -> tuple[int, int]:
    with transaction(factory) as s:
        return accounts.create_org(s, "acme", clock=clock).id, accounts.create_org(s, "beta", clock=clock).id


def _write(factory: sessionmaker[Session], clock: FrozenClock, org_id: int | None, n: int = 3) -> list[int]:
    ids = []
    for i in range(n):
        with transaction(factory) as s:
            row = audit.record(s, "policy_changed", org_id=org_id, details={"n": i, "note": "é"}, clock=clock)
            s.flush()
            ids.append(row.id)
        clock.advance(seconds=1)
    return ids


def test_an_edit_and_a_deletion_made_with_plain_sql_are_named(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    acme, beta = _orgs(factory, clock)
    acme_rows = _write(factory, clock, acme)
    beta_rows = _write(factory, clock, beta)
    loose = _write(factory, clock, None, 2)
    with factory() as s:
        result = verify(s)
    assert (result.breaks, result.rows) == ([], 8)
    with factory() as s:
        chains = dict(s.execute(select(AuditEvent.id, AuditEvent.chain)).all())
    assert chains[acme_rows[0]] == f"org:{acme}" and chains[loose[0]] == "none"

    with tampering(factory) as conn:
        conn.execute(text("UPDATE audit_log SET event = 'api_key_created' WHERE id = :id"), {"id": acme_rows[1]})
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": beta_rows[1]})
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": loose[1]})
    with factory() as s:
        breaks = {b.chain: b for b in verify(s).breaks}
        only_acme = verify(s, org_id=acme, every_chain=False).breaks
    assert (breaks[f"org:{acme}"].problem, breaks[f"org:{acme}"].row_id) == ("changed", acme_rows[1])
    assert f"row {acme_rows[1]} (#2) was changed" in breaks[f"org:{acme}"].describe()
    assert (breaks[f"org:{beta}"].problem, breaks[f"org:{beta}"].row_id) == ("deleted", beta_rows[2])
    assert f"before row {beta_rows[2]}" in breaks[f"org:{beta}"].describe()
    assert (breaks["none"].problem, breaks["none"].row_id, breaks["none"].seq) == ("deleted", None, 2)
    assert [b.chain for b in only_acme] == [f"org:{acme}"]


def test_a_changed_row_with_its_hash_recomputed_is_still_caught(
    factory: sessionmaker[Session], clock: FrozenClock
) -> None:
    acme, _ = _orgs(factory, clock)
    rows = _write(factory, clock, acme)
    with tampering(factory) as conn:
        conn.execute(text("UPDATE audit_log SET row_hash = :h WHERE id = :id"), {"h": "f" * 64, "id": rows[0]})
    with factory() as s:
        (found,) = verify(s).breaks
    assert (found.problem, found.row_id) == ("changed", rows[0])


def test_each_row_says_who_acted_and_how(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    with audit.acting_as(audit.Actor(audit.Credential.SESSION, 41, "203.0.113.9")), transaction(factory) as s:
        audit.authenticated(audit.Credential.API_KEY, 7)
        audit.record(s, "api_key_revoked", clock=clock)
    with audit.acting_as(audit.Actor(audit.Credential.CLI, name="ops")), transaction(factory) as s:
        audit.record(s, "2fa_disabled", clock=clock)
    with transaction(factory) as s:
        audit.record(s, "mail_failed", clock=clock)
    with factory() as s:
        rows = s.execute(
            select(AuditEvent.credential, AuditEvent.credential_id, AuditEvent.client_ip, AuditEvent.actor).order_by(
                AuditEvent.id
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("api_key", 7, "203.0.113.9", None),
        ("cli", None, None, "cli:ops"),
        ("system", None, None, None),
    ]


@pytest.mark.committed
def test_writers_at_once_never_fork_a_chain(factory: sessionmaker[Session], clock: FrozenClock) -> None:
    """On PostgreSQL (SQLite takes one writer at a time: ``BEGIN IMMEDIATE``)."""
    acme, _ = _orgs(factory, clock)
    writers = 8
    inside = threading.Barrier(writers)

    def write(i: int) -> int:
        with transaction(factory) as s:
            audit.record(s, "policy_changed", org_id=acme, details={"writer": i}, clock=clock)
            audit.record(s, "mail_failed", details={"writer": i}, clock=clock)
            s.flush()
            inside.wait(30)  # every writer has its rows written and is about to commit
        return i

    results = at_once([lambda i=i: write(i) for i in range(writers)], barrier=inside)
    assert results == list(range(writers))
    with factory() as s:
        seqs = s.execute(
            select(AuditEvent.chain_seq).where(AuditEvent.org_id == acme).order_by(AuditEvent.chain_seq)
        ).scalars()
        assert list(seqs) == list(range(1, writers + 1))
        assert verify(s).breaks == []
