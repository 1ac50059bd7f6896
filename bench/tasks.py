"""Bench-only Celery tasks, loaded into a benchmark's worker with ``--include bench.tasks``.

Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import redis

from workers.app import app

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
