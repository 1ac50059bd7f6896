"""Delivering outbox rows. Thin: the core claims, renders and sends; this maps failures to retries."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from twofa.db import session_factory
from twofa.mail.batch import deliver_batch
from twofa.mail.delivery import attempt
from workers.app import app, mail_backend

BASE_BACKOFF = 1.0  # seconds
MAX_BACKOFF = {"otp": 5.0, "mail": 300.0}  # an email code has minutes to live: retry it often
MAX_RETRIES = 10
# Rows a batch claimed are its own until then: longer than the hard time limit that would end the batch.
BATCH_LEASE = timedelta(seconds=(app.conf.task_time_limit or 90) + 60)


def backoff(retries: int, queue: str) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): uniform in [cap/2, cap]."""
    cap = min(BASE_BACKOFF * 2**retries, MAX_BACKOFF.get(queue, MAX_BACKOFF["mail"]))
    return random.uniform(cap / 2, cap)


def _deliver_one(session: Session, outbox_id: int, retries: int, queue: str) -> tuple[str, float | None]:
    """One attempt; returns its outcome and, when the row is to be tried again, the delay."""
    delay = backoff(retries, queue)
    status, again = attempt(
        session,
        outbox_id,
        mail_backend(),
        retry_in=timedelta(seconds=delay),
        give_up=retries >= MAX_RETRIES and queue != "otp",  # codes give up at their expiry instead
    )
    return status, delay if again else None


@app.task(name="twofa.deliver_email_batch")
def deliver_email_batch(outbox_ids: list[int]) -> dict[str, int]:
    """Bulk rows over this process's one SMTP connection: claimed together, each marked sent as it is accepted
    (``twofa.mail.batch``). A row that meets a 4xx goes on alone, as a ``deliver_email`` retry."""
    delay = backoff(0, "mail")
    with session_factory()() as session:
        outcome = deliver_batch(
            session, outbox_ids, mail_backend(), retry_in=timedelta(seconds=delay), lease=BATCH_LEASE
        )
    for outbox_id in outcome.retry:
        deliver_email.apply_async(args=(outbox_id,), countdown=delay, queue="mail")
    return outcome.counts


@app.task(bind=True, name="twofa.deliver_email", max_retries=None)
def deliver_email(self: Task[Any, Any], outbox_id: int) -> str:
    queue = (self.request.delivery_info or {}).get("routing_key") or "mail"
    with session_factory().begin() as session:
        status, delay = _deliver_one(session, outbox_id, self.request.retries, queue)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)
    return status
