"""Delivering outbox rows. Thin: the core claims, renders and sends; this maps failures to retries."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from celery import Task
from sqlalchemy.orm import Session

from twofa.db import session_factory
from twofa.mail.delivery import attempt
from workers.app import app, mail_backend

BASE_BACKOFF = 1.0  # seconds
MAX_BACKOFF = {"otp": 5.0, "mail": 300.0}  # an email code has minutes to live: retry it often
MAX_RETRIES = 10


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
    """Many rows over this process's one SMTP connection and one database session; each row is still claimed and
    committed on its own, so a crash re-sends nothing that was marked sent."""
    counts: dict[str, int] = {}
    with session_factory()() as session:
        for outbox_id in outbox_ids:
            status, delay = _deliver_one(session, outbox_id, 0, "mail")
            if delay is not None:
                deliver_email.apply_async(args=(outbox_id,), countdown=delay, queue="mail")
            counts[status] = counts.get(status, 0) + 1
    return counts


@app.task(bind=True, name="twofa.deliver_email", max_retries=None)
def deliver_email(self: Task[Any, Any], outbox_id: int) -> str:
    queue = (self.request.delivery_info or {}).get("routing_key") or "mail"
    with session_factory()() as session:
        status, delay = _deliver_one(session, outbox_id, self.request.retries, queue)
    if delay is not None:
        raise self.retry(countdown=delay, max_retries=None)
    return status
