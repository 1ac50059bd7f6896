"""The audit log as hash chains, one per organisation and one for rows without an organisation.

Each row holds the hash of its chain's previous row and its own hash over its content, so a row changed or deleted
behind the product's back breaks the chain at that row. Rows are chained as their transaction commits: the chains'
head rows are locked then (in one order, last of everything the transaction locks), so two writers cannot fork a
chain and the lock is held only for the commit. SQLite serialises writers anyway (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, event, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from twofa.db import conflict_insert, update_rows
from twofa.models import AuditChain, AuditEvent

NO_ORG = "none"
GENESIS = "0" * 64
_PENDING = "twofa_audit_unchained"
_CONTENT = (
    AuditEvent.id,
    AuditEvent.at,
    AuditEvent.event,
    AuditEvent.user_id,
    AuditEvent.org_id,
    AuditEvent.actor,
    AuditEvent.details,
    AuditEvent.credential,
    AuditEvent.credential_id,
    AuditEvent.client_ip,
)
PAGE = 1000


def chain_of(org_id: int | None) -> str:
    return NO_ORG if org_id is None else f"org:{org_id}"


def row_hash(row: Any, chain: str, seq: int, prev_hash: str) -> str:
    """SHA-256 over the row's content as read from the database, its place in its chain and the previous hash."""
    content = {
        "id": row.id,
        "at": row.at.isoformat(),
        "event": row.event,
        "user_id": row.user_id,
        "org_id": row.org_id,
        "actor": row.actor,
        "details": row.details,
        "credential": row.credential,
        "credential_id": row.credential_id,
        "client_ip": row.client_ip,
        "chain": chain,
        "seq": seq,
        "prev": prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def track(session: Session, ids: Iterable[int]) -> None:
    """Chain these rows, written by a Core INSERT (the ORM's are found at flush), when ``session`` commits."""
    session.info.setdefault(_PENDING, []).extend(ids)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context: Any) -> None:
    ids = [obj.id for obj in session.new if isinstance(obj, AuditEvent)]
    if ids:
        session.info.setdefault(_PENDING, []).extend(ids)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)


@event.listens_for(Session, "before_commit")
def _seal(session: Session) -> None:
    session.flush()
    ids: list[int] = session.info.pop(_PENDING, [])
    if ids:
        seal(session, ids)


def seal(session: Session, ids: list[int]) -> None:
    """Append the rows ``ids`` (written in this transaction) to their chains, in id order within each chain."""
    rows = session.execute(select(*_CONTENT).where(AuditEvent.id.in_(ids)).order_by(AuditEvent.id)).all()
    by_chain: dict[str, list[Any]] = {}
    for row in rows:
        by_chain.setdefault(chain_of(row.org_id), []).append(row)
    if not by_chain:
        return
    chains = sorted(by_chain)  # one lock order for every writer
    session.execute(
        conflict_insert(session, AuditChain)
        .values([{"chain": c, "seq": 0, "head_hash": GENESIS} for c in chains])
        .on_conflict_do_nothing(index_elements=["chain"])
    )
    heads = {
        chain: (seq, head)
        for chain, seq, head in session.execute(
            select(AuditChain.chain, AuditChain.seq, AuditChain.head_hash)
            .where(AuditChain.chain.in_(chains))
            .order_by(AuditChain.chain)
            .with_for_update()
        )
    }
    updates: list[dict[str, Any]] = []
    new_heads: list[dict[str, Any]] = []
    for chain in chains:
        seq, prev = heads[chain]
        for row in by_chain[chain]:
            seq += 1
            digest = row_hash(row, chain, seq, prev)
            updates.append({"id": row.id, "chain": chain, "chain_seq": seq, "prev_hash": prev, "row_hash": digest})
            prev = digest
        new_heads.append({"chain": chain, "seq": seq, "head_hash": prev})
    update_rows(session, AuditEvent, updates)  # one statement on PostgreSQL, however many rows
    update_rows(session, AuditChain, new_heads, key="chain")
    for values in updates:  # objects still in the session show what was written
        obj = session.identity_map.get(session.identity_key(AuditEvent, values["id"]))
        if obj is not None:
            for key in ("chain", "chain_seq", "prev_hash", "row_hash"):
                set_committed_value(obj, key, values[key])


@dataclass(frozen=True)
class Break:
    """The first place a chain does not hold."""

    chain: str
    seq: int  # the place in the chain where it breaks
    row_id: int | None  # the row found there (None: the chain's last rows are gone)
    problem: str  # "changed", "deleted" or "unchained"

    def describe(self) -> str:
        if self.problem == "changed":
            return f"chain {self.chain}: row {self.row_id} (#{self.seq}) was changed after it was written"
        if self.problem == "unchained":
            return f"chain {self.chain}: row {self.row_id} was added outside the product (no place in the chain)"
        if self.row_id is None:
            return f"chain {self.chain}: the rows from #{self.seq} on, the chain's last, were deleted"
        return f"chain {self.chain}: the row(s) before row {self.row_id} (from #{self.seq} on) were deleted"


@dataclass(frozen=True)
class Verified:
    chains: int
    rows: int
    breaks: list[Break]


def _rows(session: Session, chain: str) -> Iterator[Any]:
    """The chain's rows in chain order, a page at a time (memory does not grow with the log)."""
    after = 0
    while True:
        page = session.execute(
            select(*_CONTENT, AuditEvent.chain_seq, AuditEvent.prev_hash, AuditEvent.row_hash)
            .where(AuditEvent.chain == chain, AuditEvent.chain_seq > after)
            .order_by(AuditEvent.chain_seq)
            .limit(PAGE)
        ).all()
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].chain_seq


def verify_chain(session: Session, chain: str, head: tuple[int, str] | None) -> tuple[int, Break | None]:
    """(rows checked, the first break or None)."""
    expected_seq, prev, prev_id, count = 1, GENESIS, None, 0
    for row in _rows(session, chain):
        count += 1
        if row.chain_seq != expected_seq:
            return count, Break(chain, expected_seq, row.id, "deleted")
        if row.prev_hash != prev:  # the previous row was changed, its own hash recomputed to hide it
            return count, Break(chain, expected_seq - 1, prev_id, "changed")
        if row_hash(row, chain, row.chain_seq, prev) != row.row_hash:
            return count, Break(chain, row.chain_seq, row.id, "changed")
        prev, prev_id, expected_seq = row.row_hash, row.id, expected_seq + 1
    if head is not None and (head[0] >= expected_seq or head[1] != prev):
        return count, Break(chain, expected_seq, None, "deleted")
    return count, None


def verify(session: Session, *, org_id: int | None = None, every_chain: bool = True) -> Verified:
    """Check every chain (or the organisation's, with ``org_id`` and not ``every_chain``)."""
    heads = {c: (s, h) for c, s, h in session.execute(select(AuditChain.chain, AuditChain.seq, AuditChain.head_hash))}
    chains = set(heads) | set(session.execute(select(AuditEvent.chain).distinct()).scalars()) - {None}
    if not every_chain:
        chains = {chain_of(org_id)}
    breaks, rows = [], 0
    for chain in sorted(c for c in chains if c is not None):
        checked, found = verify_chain(session, chain, heads.get(chain))
        rows += checked
        if found is not None:
            breaks.append(found)
    unchained_where: ColumnElement[bool] = AuditEvent.chain.is_(None)
    if not every_chain:
        unchained_where &= AuditEvent.org_id.is_(None) if org_id is None else AuditEvent.org_id == org_id
    stray = session.execute(
        select(AuditEvent.id, AuditEvent.org_id).where(unchained_where).order_by(AuditEvent.id)
    ).first()
    if stray is not None:
        breaks.append(Break(chain_of(stray.org_id), 0, stray.id, "unchained"))
    return Verified(chains=len(chains), rows=rows, breaks=breaks)
