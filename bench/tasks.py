"""Bench-only Celery tasks, loaded into a benchmark's worker with ``--include bench.tasks``.

Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import redis

from twofa import outbox
from twofa.clock import SYSTEM_CLOCK
from twofa.mail.delivery import code_message_id, compose, new_email_code
from twofa.notify import Template
from twofa.settings import get_settings
from workers.app import app, mail_backend

_clients: dict[int, redis.Redis] = {}


def _redis() -> redis.Redis:
    """One client per process (a forked pool child makes its own), on the broker's Redis."""
    client = _clients.get(os.getpid())
    if client is None:
        client = _clients[os.getpid()] = redis.Redis.from_url(str(app.conf.broker_url))
    return client


@app.task(name="bench.noop", ignore_result=True)
def noop(counter: str, total: int) -> None:
    """Counts itself; the one that brings the count to ``total`` notes when (``time.monotonic()``, host-wide)."""
    r = _redis()
    if r.incr(counter) == total:
        r.set(f"{counter}:at", repr(time.monotonic()))


@app.task(name="bench.report", ignore_result=True)
def report(flag: str, max_seconds: float = 50) -> int:
    """A CPU- and memory-heavy report: pandas group-bys over a million rows, again and again, until ``{flag}:stop``
    is set in Redis or ``max_seconds`` have passed (below celeryconfig's soft time limit)."""
    r = _redis()
    rng = np.random.default_rng(7)
    rows = 1_000_000
    frame = pd.DataFrame(
        {
            "org": rng.integers(0, 5_000, rows),
            "user": rng.integers(0, 200_000, rows),
            "event": rng.integers(0, 12, rows),
            "ms": rng.random(rows) * 100.0,
        }
    )
    r.set(f"{flag}:started", repr(time.monotonic()))
    deadline = time.monotonic() + max_seconds
    rounds = 0
    while time.monotonic() < deadline and not r.exists(f"{flag}:stop"):
        summary = frame.groupby(["org", "event"]).agg(n=("user", "nunique"), ms=("ms", "mean"))
        frame["ms"] = frame["ms"] * 0.999 + float(summary["ms"].iloc[rounds % len(summary)]) * 0.001
        rounds += 1
    r.set(f"{flag}:done", repr(time.monotonic()))
    r.set(f"{flag}:rounds", rounds)
    return rounds


@app.task(name="bench.bare_otp", ignore_result=True)
def bare_otp(to: str) -> None:
    """An email code without a database: made, put in the product's message and sent over this process's SMTP
    backend (its connection reused or not, as the worker is set). The issue's reference point ("a bare OTP task
    without a database"); the product's task adds the row's claim, its lock, and the mark with the code's hash."""
    # The context email_otp.issue stores with the row, and what delivery.plan adds to it.
    context: dict[str, object] = {"email": to, "issuer": get_settings().issuer, "purpose": "login"}
    context |= {"code": new_email_code(), "expires_in_minutes": 5}
    message_id = code_message_id(outbox.new_message_id())
    mail_backend().send(compose(Template.EMAIL_CODE, context, to, message_id, SYSTEM_CLOCK))
