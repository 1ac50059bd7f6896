"""Writing emails to the outbox, and handing them to a sender after the transaction commits.

The core knows no queue. An edge installs a dispatcher (the worker package installs one that sends a Celery task
per row; tests and the demo install a synchronous one). The dispatcher runs only after a successful commit, so a
task can never look for a row that is not there yet, and a rolled-back transaction sends nothing. Rows whose
dispatch was lost (no dispatcher, a broker outage) stay ``queued`` until a sweeper picks them up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import insert_rows
from twofa.models import OutboxMessage, OutboxStatus
from twofa.settings import get_settings

OTP_QUEUE = "otp"
MAIL_QUEUE = "mail"


@dataclass(frozen=True)
class OutboxRef:
    id: int
    queue: str


Dispatcher = Callable[[Sequence[OutboxRef]], None]

_dispatcher: Dispatcher | None = None
_PENDING = "twofa_outbox_pending"


def install_dispatcher(dispatcher: Dispatcher | None) -> Dispatcher | None:
    """Set the function called with the outbox rows of each committed transaction; returns the previous one."""
    global _dispatcher
    previous, _dispatcher = _dispatcher, dispatcher
    return previous


def new_message_id() -> str:
    return f"<{uuid.uuid4().hex}@{_domain(get_settings().mail_from)}>"


@lru_cache(maxsize=4)
def _domain(mail_from: str) -> str:
    """The domain of ``TWOFA_MAIL_FROM``, parsed once: every email asks for it."""
    return parseaddr(mail_from)[1].rpartition("@")[2] or "localhost"


def enqueue(
    session: Session,
    *,
    template: str,
    to: str,
    context: dict[str, Any] | None = None,
    user_id: int | None = None,
    org_id: int | None = None,
    queue: str = MAIL_QUEUE,
    email_otp_id: int | None = None,
    not_after: datetime | None = None,
    dedupe_key: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> OutboxMessage:
    row = OutboxMessage(
        template=template,
        queue=queue,
        to_address=to,
        user_id=user_id,
        org_id=org_id,
        context=context or {},
        email_otp_id=email_otp_id,
        status=OutboxStatus.QUEUED,
        created_at=clock.now(),
        not_after=not_after,
        attempts=0,
        message_id=new_message_id(),
        dedupe_key=dedupe_key,
    )
    session.add(row)
    return row


def enqueue_unique(
    session: Session, messages: Sequence[dict[str, Any]], *, clock: Clock = SYSTEM_CLOCK
) -> dict[str, OutboxRef]:
    """Insert many messages at once, each with a ``dedupe_key``; a key that exists already is skipped, so a job
    that runs twice, or twice at once, writes each message once. Returns the rows actually inserted, by key.

    Each message is a dict of ``template``, ``to``, ``dedupe_key`` and optionally ``context``, ``user_id``,
    ``org_id``, ``queue``.
    """
    if not messages:
        return {}
    now = clock.now()
    rows = [
        {
            "template": m["template"],
            "queue": m.get("queue", MAIL_QUEUE),
            "to_address": m["to"],
            "user_id": m.get("user_id"),
            "org_id": m.get("org_id"),
            "context": m.get("context") or {},
            "status": OutboxStatus.QUEUED.value,
            "created_at": now,
            "attempts": 0,
            "message_id": new_message_id(),
            "dedupe_key": m["dedupe_key"],
        }
        for m in messages
    ]
    written = insert_rows(
        session,
        OutboxMessage,
        rows,
        returning=(OutboxMessage.id, OutboxMessage.queue, OutboxMessage.dedupe_key),
        on_conflict=lambda stmt: stmt.on_conflict_do_nothing(index_elements=["dedupe_key"]),
    )
    inserted = {row.dedupe_key: OutboxRef(row.id, row.queue) for row in written}
    track(session, inserted.values())
    return inserted


def track(session: Session, refs: Iterable[OutboxRef]) -> None:
    """Dispatch these rows, written by a Core statement (the ORM's are found at flush), after ``session`` commits."""
    session.info.setdefault(_PENDING, []).extend(refs)


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush_context: Any) -> None:
    refs = [OutboxRef(obj.id, obj.queue) for obj in session.new if isinstance(obj, OutboxMessage)]
    if refs:
        session.info.setdefault(_PENDING, []).extend(refs)


@event.listens_for(Session, "after_commit")
def _dispatch(session: Session) -> None:
    refs: list[OutboxRef] = session.info.pop(_PENDING, [])
    if refs and _dispatcher is not None:
        _dispatcher(refs)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
