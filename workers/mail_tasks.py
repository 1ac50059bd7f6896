"""Delivering outbox rows. Thin: the core claims, renders and sends; this maps failures to retries."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from celery import Task

from twofa.db import transaction
from twofa.mail.backends import PermanentMailError, TransientMailError
from twofa.mail.delivery import deliver, record_failure
from workers.app import app, mail_backend

BASE_BACKOFF = 1.0  # seconds
MAX_BACKOFF = {"otp": 5.0, "mail": 300.0}  # an email code has minutes to live: retry it often
MAX_RETRIES = 10


def backoff(retries: int, queue: str) -> float:
    """Exponential backoff with full jitter (AWS architecture blog): uniform in [cap/2, cap]."""
    cap = min(BASE_BACKOFF * 2**retries, MAX_BACKOFF.get(queue, MAX_BACKOFF["mail"]))
    return random.uniform(cap / 2, cap)


@app.task(bind=True, name="twofa.deliver_email", max_retries=None)
def deliver_email(self: Task[Any, Any], outbox_id: int) -> str:
    queue = (self.request.delivery_info or {}).get("routing_key") or "mail"
    try:
        with transaction() as session:
            return deliver(session, outbox_id, mail_backend()).value
    except TransientMailError as exc:
        delay = backoff(self.request.retries, queue)
        permanent = self.request.retries >= MAX_RETRIES and queue != "otp"
        with transaction() as session:
            again = record_failure(session, outbox_id, str(exc), permanent=permanent, retry_in=timedelta(seconds=delay))
        if again:
            raise self.retry(countdown=delay, max_retries=None) from None
        return "failed"
    except PermanentMailError as exc:
        with transaction() as session:
            record_failure(session, outbox_id, str(exc), permanent=True)
        return "failed"
