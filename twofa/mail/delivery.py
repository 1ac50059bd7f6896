"""Delivering one outbox row: claim it, make the email code if it carries one, send, mark it sent.

The row is claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` and stays locked while the message is handed to the
backend; it is marked sent in the same transaction. So a duplicated or redelivered task finds the row locked (it
skips) or already sent (it does nothing), and a worker killed mid-send releases the lock with its connection,
leaving the row ``queued`` for the retried task. The only window for a duplicate is a crash between the SMTP
server's acceptance and the commit; the stable Message-ID lets the receiving side drop that copy. An email code is
the exception: each attempt makes a new code, so its message is a new version with an ID of its own
(``code_message_id``).

Lock order, as everywhere a user's codes and their mail are touched: the user, then the code, then the outbox row
(``email_otp.issue`` takes all three; delivery takes the last two).
"""

from __future__ import annotations

import enum
import secrets
from datetime import timedelta
from email.message import Message
from typing import Any, cast

from jinja2 import TemplateError
from sqlalchemy import Row, Table, bindparam, select, update
from sqlalchemy.orm import Session

from twofa import audit, crypto
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import UTCDateTime
from twofa.mail.backends import MailBackend, MailError, PermanentMailError
from twofa.mail.render import build_message
from twofa.models import EmailOtp, OutboxMessage, OutboxStatus


class Delivery(enum.StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"  # not queued any more, or another worker holds it
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# Why a code's email is cancelled: a newer code for the same user voided it.
REPLACED = "a newer code replaced it"
EXPIRED_UNSENT = "expired before it could be sent"


def email_code_hash(otp_id: int, code: str) -> bytes:
    return crypto.keyed_hash("email_otp", f"{otp_id}:{code}")


def email_code_matches(otp_id: int, code: str, digest: bytes) -> bool:
    """Whether ``code`` is the one hashed in ``digest``, under any configured key (a rotation may be under way)."""
    return crypto.keyed_hash_matches("email_otp", f"{otp_id}:{code}", digest)


def new_email_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


_outbox = cast(Table, OutboxMessage.__table__)
_codes = cast(Table, EmailOtp.__table__)
_the_row = _outbox.c.id == bindparam("outbox_id")

# The code is locked in a CTE, which PostgreSQL evaluates (and locks) before the outer query locks the row: the
# order user, code, outbox row that ``email_otp.issue`` takes. Without it a resend and a delivery deadlock. SQLite
# ignores the locking clauses (its ``BEGIN IMMEDIATE`` already serialises writers) and runs the same statement.
_code = (
    select(_codes.c.id, _codes.c.created_at, _codes.c.expires_at, _codes.c.used_at, _codes.c.invalidated_at)
    .where(_codes.c.id == select(_outbox.c.email_otp_id).where(_the_row).correlate(None).scalar_subquery())
    .with_for_update()
    .cte("code")
)
_CLAIM = (
    select(
        _outbox.c.template,
        _outbox.c.to_address,
        _outbox.c.context,
        _outbox.c.message_id,
        _outbox.c.not_after,
        _code.c.id.label("code_id"),
        _code.c.created_at.label("code_created_at"),
        _code.c.expires_at.label("code_expires_at"),
        (_code.c.used_at.is_not(None) | _code.c.invalidated_at.is_not(None)).label("code_void"),
    )
    .select_from(_outbox.outerjoin(_code, _code.c.id == _outbox.c.email_otp_id))
    .where(_the_row, _outbox.c.status == OutboxStatus.QUEUED)
    .with_for_update(of=_outbox, skip_locked=True)
)
_END = update(_outbox).where(_the_row).values(status=bindparam("outcome"), last_error=bindparam("why"))
_SENT = (
    update(_outbox)
    .where(_the_row)
    .values(
        status=OutboxStatus.SENT,
        sent_at=bindparam("now", type_=UTCDateTime()),
        attempts=_outbox.c.attempts + 1,
        last_error=None,
    )
)
_the_code = _codes.c.id == bindparam("code_id")
_CODE_SENT = (
    update(_codes)
    .where(_the_code)
    .values(code_hash=bindparam("code_hash"), delivered_at=bindparam("now", type_=UTCDateTime()))
)
_CODE_UNSENT = update(_codes).where(_the_code).values(delivery_failed_at=bindparam("now", type_=UTCDateTime()))


def claim(session: Session, outbox_id: int) -> Row[Any] | None:
    """The queued row ``outbox_id`` with its email code's columns (``code_*``, None without one), both locked;
    None when the row is not queued or another worker holds it."""
    return session.execute(_CLAIM, {"outbox_id": outbox_id}).one_or_none()


def deliver(session: Session, outbox_id: int, backend: MailBackend, clock: Clock = SYSTEM_CLOCK) -> Delivery:
    """Send outbox row ``outbox_id`` once, in the caller's transaction, which the caller commits. A ``MailError``
    is raised with nothing written (``attempt`` records it)."""
    row = claim(session, outbox_id)
    if row is None:
        return Delivery.SKIPPED
    now, has_code = clock.now(), row.code_id is not None
    if has_code and row.code_void:
        return _end(session, outbox_id, Delivery.CANCELLED, REPLACED)
    if has_code and now >= row.code_expires_at:
        session.execute(_CODE_UNSENT, {"code_id": row.code_id, "now": now})  # no cooldown, no hourly cap
        return _end(session, outbox_id, Delivery.EXPIRED, EXPIRED_UNSENT)
    if row.not_after is not None and now >= row.not_after:
        return _end(session, outbox_id, Delivery.EXPIRED, EXPIRED_UNSENT)
    context = dict(row.context)
    message_id = row.message_id
    if has_code:
        # The code exists only here, in memory, and in the email; the row keeps its keyed hash, written in the
        # transaction that marks the email sent: both or neither.
        secret = new_email_code()
        context["code"] = secret
        context["expires_in_minutes"] = max(1, int((row.code_expires_at - row.code_created_at).total_seconds()) // 60)
        message_id = code_message_id(row.message_id)
    backend.send(compose(row.template, context, row.to_address, message_id, clock))
    if has_code:
        session.execute(
            _CODE_SENT, {"code_id": row.code_id, "code_hash": email_code_hash(row.code_id, secret), "now": now}
        )
    session.execute(_SENT, {"outbox_id": outbox_id, "now": now})
    return Delivery.SENT


def _end(session: Session, outbox_id: int, outcome: Delivery, why: str) -> Delivery:
    session.execute(_END, {"outbox_id": outbox_id, "outcome": outcome.value, "why": why})
    return outcome


def code_message_id(message_id: str) -> str:
    """The Message-ID of one email code's message: the row's, with a mark of its own before the ``@``.

    Each attempt makes a new code (RFC 5322 3.6.4: one ID per version): under one ID, a receiver that drops copies
    would keep an earlier attempt, accepted with its reply lost, whose code no longer verifies."""
    local, at, domain = message_id.strip("<>").rpartition("@")
    if not at:
        raise ValueError(f"not a Message-ID: {message_id!r}")
    return f"<{local}.{secrets.token_hex(4)}@{domain}>"


def attempt(
    session: Session,
    outbox_id: int,
    backend: MailBackend,
    *,
    retry_in: timedelta,
    give_up: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[str, bool]:
    """One delivery attempt in the caller's transaction: delivered, or the mail error recorded on the row (the row
    is still locked by the claim). Returns the outcome (a ``Delivery`` value, "retry" or "failed") and whether to
    try again after ``retry_in``."""
    try:
        return deliver(session, outbox_id, backend, clock).value, False
    except MailError as exc:
        permanent = give_up or isinstance(exc, PermanentMailError)
        again = record_failure(session, outbox_id, str(exc), permanent=permanent, retry_in=retry_in, clock=clock)
        return ("retry" if again else "failed"), again


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
    code_id = session.scalar(select(OutboxMessage.email_otp_id).where(OutboxMessage.id == outbox_id))
    otp = session.get(EmailOtp, code_id, with_for_update=True, populate_existing=True) if code_id else None
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
    session.flush()
    return True
