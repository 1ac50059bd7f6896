"""Bench-only Celery task for ``bench/bench_policies.py``: a prototype of bulk delivery with one transaction per
batch, loaded into that benchmark's worker with ``--include bench.policies_tasks``. The service does not use it.

Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.

``twofa.deliver_email_batch`` claims, renders, sends and commits each row in its own transaction (a session, a
pool checkout with its pre-ping, BEGIN, SELECT ... FOR UPDATE SKIP LOCKED, UPDATE, COMMIT per message). The
prototype claims every row of the batch with one ``SELECT ... FOR UPDATE SKIP LOCKED``, sends them over the same
connection, and marks them sent in the same transaction (one UPDATE per row at flush, one COMMIT). With
``builder="mime"`` it also builds the message with the ``compat32`` classes (``email.mime``) instead of
``EmailMessage``, whose header parsing under ``email.policy.default`` costs more than the SMTP exchange itself.

What a production version must add (left out here, the benchmark never fails a message): a failed message is
recorded on its own row while the others still commit, and the claim holds its locks for the whole batch, so a
crash mid-batch re-sends what was already accepted (the stable Message-ID lets receivers drop the copies); a smaller
commit interval bounds that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Any, cast

from sqlalchemy import select

from twofa.db import transaction
from twofa.mail.render import build_message, render
from twofa.models import OutboxMessage, OutboxStatus
from twofa.settings import get_settings
from workers.app import app, mail_backend

PROTOTYPE_TASK = "bench.policies.deliver_batch_one_transaction"


def build_mime(*, template: str, context: dict[str, Any], to: str, message_id: str) -> Message:
    """The same text + HTML message as ``build_message``, built with the compat32 ``email.mime`` classes."""
    settings = get_settings()
    subject, text, html = render(template, {"issuer": settings.issuer, "email": to} | context)
    msg = MIMEMultipart("alternative")
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg.attach(MIMEText(text, "plain", "utf-8"))
    msg.attach(MIMEText(html, "html", "utf-8"))
    return msg


def build_row(row: OutboxMessage, builder: str) -> Message:
    kwargs: dict[str, Any] = {
        "template": row.template,
        "context": dict(row.context),
        "to": row.to_address,
        "message_id": row.message_id,
    }
    return build_mime(**kwargs) if builder == "mime" else build_message(**kwargs)


@app.task(name=PROTOTYPE_TASK, ignore_result=True)
def deliver_batch_one_transaction(outbox_ids: list[int], builder: str = "build_message") -> int:
    """Claim every queued row of the batch at once, send each over this process's SMTP connection, mark them all
    sent, commit once. Returns how many were sent."""
    backend = mail_backend()
    now = datetime.now(UTC)
    sent = 0
    with transaction() as session:
        rows = session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.id.in_(outbox_ids),
                OutboxMessage.status == OutboxStatus.QUEUED,
                OutboxMessage.email_otp_id.is_(None),
            )
            .order_by(OutboxMessage.id)
            .with_for_update(skip_locked=True)
        ).scalars()
        for row in rows:
            message = build_row(row, builder)
            row.attempts += 1
            backend.send(cast(EmailMessage, message))  # smtplib's send_message takes any Message
            row.status = OutboxStatus.SENT
            row.sent_at = now
            row.last_error = None
            sent += 1
    return sent
