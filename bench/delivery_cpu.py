"""The worker's CPU and statements per email code, in process: ``delivery.attempt`` over committed rows.

A fresh migrated PostgreSQL database (the test harness's), ``--codes`` users each with an email code queued, then
each row delivered in its own transaction as ``twofa.deliver_email`` does, into the memory backend. Prints CPU
milliseconds per code (``time.process_time``; this process only, so the database server's share is not in it),
wall milliseconds, and the statements the session sent per code (BEGIN and COMMIT apart).

    .venv/bin/python bench/delivery_cpu.py [--codes 2000] [--repeats 3]

Not named ``bench_*.py``: ``make bench`` runs those; this one is for quick comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.harness, bench
from bench.common import SETTINGS, say

os.environ.update(SETTINGS, TWOFA_MAIL_BACKEND="memory")

from sqlalchemy import event, insert, select

from tests.harness.services import pg_database
from twofa import email_otp
from twofa.db import get_engine, session_factory
from twofa.mail.backends import MemoryBackend
from twofa.mail.delivery import attempt
from twofa.models import User


def queue_codes(url: str, count: int, batch: int) -> list[int]:
    """``count`` users with email 2FA, each with one code queued (committed); the outbox ids."""
    now = datetime.now(UTC)
    row = {"password_hash": "x", "created_at": now, "twofa_method": "email", "twofa_enabled_at": now}
    with session_factory(url).begin() as s:
        s.execute(insert(User), [dict(row, email=f"u{batch}-{i}@cpu.example") for i in range(count)])
    with session_factory(url).begin() as s:
        users = s.scalars(select(User).where(User.email.like(f"u{batch}-%"))).all()
        return [email_otp.issue(s, u, email_otp.LOGIN).outbox_id for u in users]


def deliver_all(url: str, ids: list[int]) -> dict[str, Any]:
    """Each row in its own transaction; CPU and wall milliseconds per code, statements per code."""
    engine, factory, backend = get_engine(url), session_factory(url), MemoryBackend()
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine, "before_cursor_execute", count)
    cpu, wall = time.process_time(), time.perf_counter()
    for outbox_id in ids:
        with factory.begin() as s:
            status, _ = attempt(s, outbox_id, backend, retry_in=timedelta(seconds=1))
        if status != "sent":
            raise RuntimeError(f"row {outbox_id}: {status}")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    event.remove(engine, "before_cursor_execute", count)
    n = len(ids)
    return {"cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n, "statements": statements / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codes", type=int, default=2000, help="codes per repeat (2000)")
    p.add_argument("--repeats", type=int, default=3, help="repeats; the median is kept (3)")
    args = p.parse_args(argv)
    with pg_database("twofa_bench") as url:
        deliver_all(url, queue_codes(url, 50, 0))  # warm-up: connection, templates, statement caches
        runs = [deliver_all(url, queue_codes(url, args.codes, i + 1)) for i in range(args.repeats)]
    for r in runs:
        say(f"cpu {r['cpu_ms']:.2f} ms, wall {r['wall_ms']:.2f} ms, {r['statements']:.1f} statements per code")
    median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    say(json.dumps({"codes": args.codes, "repeats": args.repeats, **median, "load": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
