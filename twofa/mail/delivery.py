"""Delivering one outbox row: claim it, make the email code if it carries one, send, mark it sent.

The row is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and stays locked while the message is handed to the
backend; it is marked sent in the same transaction. So a duplicated or redelivered task finds the row locked (it
skips) or already sent (it does nothing), and a worker killed mid-send releases the lock with its connection,
leaving the row ``queued`` for the retried task. The only window for a duplicate is a crash between the SMTP
server's acceptance and the commit; the stable Message-ID lets the receiving side drop that copy. An email code is
the exception: each attempt makes a new code, so its message is a new version with an ID of its own
(``code_message_id``).

``plan`` holds the decisions (expired, cancelled, or the message and the writes that mark it sent) apart from the
statements' execution, which ``deliver`` does through a SQLAlchemy session, and ``pg_delivery`` in two round trips
on PostgreSQL (the worker's path there).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import timedelta
from email.message import Message
from typing import Any, cast

from jinja2 import TemplateError
from sqlalchemy import Executable, LargeBinary, String, Table, bindparam, select, text, update
from sqlalchemy.orm import Session

from twofa import audit, crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime
from twofa.mail.backends import MailBackend, PermanentMailError
from twofa.mail.render import build_message
from twofa.models import EmailOtp, OutboxMessage, OutboxStatus


class Delivery(enum.StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"  # not queued any more, or another worker holds it
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# Why a code's email is cancelled: a newer code for the same user voided it (``email_otp.issue`` cancels the queued
# ones; one already claimed meets it here).
REPLACED = "a newer code replaced it"


def email_code_hash(otp_id: int, code: str) -> bytes:
    return crypto.keyed_hash("email_otp", f"{otp_id}:{code}")


def new_email_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


_outbox = cast(Table, OutboxMessage.__table__)
_o = _outbox.c
_otps = cast(Table, EmailOtp.__table__)
_e = _otps.c

# Prebuilt statements: an email code is on the clock, and this path runs for every one of them. The claim reads the
# row and its email code (if any) in one statement and locks the outbox row only.
CLAIM = (
    select(
        _o.id,
        _o.template,
        _o.to_address,
        _o.context,
        _o.message_id,
        _o.not_after,
        _o.email_otp_id,
        _e.expires_at.label("code_expires_at"),
        _e.used_at.label("code_used_at"),
        _e.invalidated_at.label("code_invalidated_at"),
    )
    .select_from(_outbox.outerjoin(_otps, _e.id == _o.email_otp_id))
    .where(_o.id == bindparam("oid"), _o.status == OutboxStatus.QUEUED)
    .with_for_update(of=_outbox, skip_locked=True)
)
_MARK_SENT = (
    update(_outbox)
    .where(_o.id == bindparam("oid"))
    .values(
        status=OutboxStatus.SENT,
        sent_at=bindparam("at", type_=UTCDateTime()),
        attempts=_o.attempts + 1,
        last_error=None,
    )
)
_END = (
    update(_outbox)
    .where(_o.id == bindparam("oid"))
    .values(status=bindparam("status", type_=String()), last_error=bindparam("why", type_=String()))
)
_CODE_MADE = (
    update(_otps)
    .where(_e.id == bindparam("cid"))
    .values(code_hash=bindparam("hash", type_=LargeBinary()), delivered_at=bindparam("at", type_=UTCDateTime()))
)
# PostgreSQL: both in one statement, one round trip fewer for every email code.
_MARK_SENT_WITH_CODE = _MARK_SENT.add_cte(_CODE_MADE.cte("code_made"))
_CODE_UNSENT = (
    update(_otps).where(_e.id == bindparam("cid")).values(delivery_failed_at=bindparam("at", type_=UTCDateTime()))
)
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")
# Every statement ``plan`` writes with on PostgreSQL but ``_ASYNC_COMMIT`` (``pg_delivery`` prepares them).
WRITES = (_MARK_SENT, _MARK_SENT_WITH_CODE, _END, _CODE_UNSENT)


Write = tuple[Executable, dict[str, Any]]  # a statement and its parameters


@dataclass(frozen=True)
class Plan:
    """What a claimed row comes to: the message to hand the backend (none for a row that ends unsent) and the
    writes that end the row, to run after the backend accepted it, in the claim's transaction."""

    outcome: Delivery
    message: Message | None
    writes: list[Write]


def plan(row: Any, outbox_id: int, clock: Clock, *, postgresql: bool) -> Plan:
    """Decide what to do with a row of ``CLAIM``'s columns (SQLAlchemy's ``Row`` or psycopg's named tuple), and make
    its email code if it carries one: in the message, and its hash among the writes. A template that fails to render
    is a ``PermanentMailError``."""
    now = clock.now()
    if row.email_otp_id is not None:  # the code's own state first: an expired one is marked as never delivered
        if row.code_invalidated_at is not None or row.code_used_at is not None:
            return _end(outbox_id, Delivery.CANCELLED, REPLACED)
        if now >= row.code_expires_at:
            return _end(
                outbox_id,
                Delivery.EXPIRED,
                "expired before it could be sent",
                (_CODE_UNSENT, {"cid": row.email_otp_id, "at": now}),
            )
    if row.not_after is not None and now >= row.not_after:
        return _end(outbox_id, Delivery.EXPIRED, "expired before it could be sent")
    context = dict(row.context)
    sent = {"oid": outbox_id, "at": now}
    writes: list[Write]
    message_id = row.message_id
    if row.email_otp_id is None:
        writes = [(_MARK_SENT, sent)]
        if postgresql:
            # Bulk mail: the commit that marks the row sent need not wait for the disk. Were the database to crash
            # and lose it, the message would be sent again with the same Message-ID. An email code keeps durable
            # commits: lost, its stored hash would go too, and the code the user already holds would never verify.
            writes.insert(0, (_ASYNC_COMMIT, {}))
    else:
        # The code exists only here, in memory, and in the email; the row keeps its keyed hash, written in the
        # transaction that marks the email sent: both or neither.
        code = new_email_code()
        made = {"cid": row.email_otp_id, "hash": email_code_hash(row.email_otp_id, code)}
        context["code"] = code
        context["expires_in_minutes"] = max(1, round((row.code_expires_at - now).total_seconds() / 60))
        if postgresql:
            writes = [(_MARK_SENT_WITH_CODE, sent | made)]  # one statement, one round trip fewer
        else:
            writes = [(_CODE_MADE, sent | made), (_MARK_SENT, sent)]
        message_id = code_message_id(row.message_id)
    message = compose(row.template, context, row.to_address, message_id, clock)
    return Plan(Delivery.SENT, message, writes)


def code_message_id(message_id: str) -> str:
    """The Message-ID of one email code's message: the row's, marked with a version of its own before the ``@``.

    RFC 5322 3.6.4 gives a Message-ID to one version of a message, and each attempt of an email-code row makes a new
    code (only the newest verifies). Under the row's one Message-ID, a receiver that drops copies by Message-ID
    would keep an earlier attempt's message, accepted by the relay although its reply was lost, whose code no longer
    verifies. The same message sent again (the SMTP backend's resend over a fresh connection) keeps its code and
    its ID. The sent ID still names the row: it is the row's with the mark before the ``@``."""
    local, at, domain = message_id.strip("<>").rpartition("@")
    if not at:
        raise ValueError(f"not a Message-ID: {message_id!r}")
    return f"<{local}.{secrets.token_hex(4)}@{domain}>"


def deliver(session: Session, outbox_id: int, backend: MailBackend, clock: Clock = SYSTEM_CLOCK) -> Delivery:
    """Send outbox row ``outbox_id`` once. The caller commits; on a ``MailError`` the caller rolls back and calls
    ``record_failure`` in a new transaction. (On PostgreSQL the worker takes ``pg_delivery``: the same, in two
    round trips.)"""
    conn = session.connection()
    row = conn.execute(CLAIM, {"oid": outbox_id}).first()
    if row is None:
        return Delivery.SKIPPED
    todo = plan(row, outbox_id, clock, postgresql=conn.dialect.name == "postgresql")
    if todo.message is not None:
        backend.send(todo.message)
    for statement, parameters in todo.writes:
        conn.execute(statement, parameters)
    return todo.outcome


def _end(outbox_id: int, outcome: Delivery, why: str, *before: Write) -> Plan:
    return Plan(outcome, None, [*before, (_END, {"oid": outbox_id, "status": outcome.value, "why": why})])


def compose(template: str, context: dict[str, Any], to: str, message_id: str, clock: Clock) -> Message:
    """The message of an outbox row. A template that fails to render is a ``PermanentMailError``."""
    context = dict(context)
    # Attachments travel in the row itself (text files such as CSV reports), so any worker host can send them.
    attachments = [
        (a["filename"], a["mimetype"], a["content"].encode()) for a in context.pop("attachments", None) or []
    ]
    try:
        return build_message(
            template=template,
            context=context,
            to=to,
            message_id=message_id,
            attachments=attachments,
            clock=clock,
        )
    except TemplateError as exc:  # a bug, not a transient fault: retrying would loop forever
        raise PermanentMailError(f"cannot render {template!r}: {type(exc).__name__}: {exc}") from exc


def record_failure(
    session: Session,
    outbox_id: int,
    error: str,
    *,
    permanent: bool,
    retry_in: timedelta | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> bool:
    """Note a failed attempt; True when the row should be tried again after ``retry_in``.

    A permanent failure, or a retry that would land past the row's validity, ends the row and is audited; an email
    code whose mail failed for good stops counting against the user's resend cooldown."""
    row = session.get(OutboxMessage, outbox_id, with_for_update=True, populate_existing=True)
    if row is None or row.status not in (OutboxStatus.QUEUED, OutboxStatus.SENDING):
        return False
    now = clock.now()
    row.status = OutboxStatus.QUEUED  # a batch's claim ends here
    row.lease_until = None
    row.attempts += 1
    row.last_error = error[:2000]
    next_at = now + retry_in if retry_in is not None else None
    too_late = row.not_after is not None and (next_at or now) >= row.not_after
    if permanent or too_late:
        row.status = OutboxStatus.FAILED
        row.next_attempt_at = None
        if row.email_otp_id is not None:
            otp = session.get(EmailOtp, row.email_otp_id)
            if otp is not None and otp.delivered_at is None:
                otp.delivery_failed_at = now
        audit.record(
            session,
            audit.Event.MAIL_FAILED,
            user_id=row.user_id,
            org_id=row.org_id,
            details={"outbox_id": row.id, "template": row.template, "error": row.last_error},
            clock=clock,
        )
        return False
    row.next_attempt_at = next_at
    return True
