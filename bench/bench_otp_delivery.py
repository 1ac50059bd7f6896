"""Email codes, from the sign-in that asks for one to the SMTP server's acceptance, beside a no-op Celery task.

Everything is real and private to this run, started by the test harness (``tests/harness/services.py``): a
redis-server, a fresh migrated PostgreSQL database, ``twofa serve``, ``celery -A workers.app worker`` processes and
an aiosmtpd server (in a process of its own). A user with email 2FA signs in (``POST /api/v1/auth/login``); the
API commits the code's outbox row and publishes its id; the worker's ``twofa.deliver_email`` sends it. Latency is
the SMTP server's arrival time minus the moment the request was sent (both ``time.monotonic()``, host-wide).

Phases, one function each:

1. ratio: email codes whose sign-ins were answered while the worker was stopped (SIGSTOP: rows committed, ids
   queued), delivered once it goes on, against no-op tasks published back to back while it runs (the baseline as
   the goal was set) and, for information, a backlog of no-op tasks; alternating rounds;
2. saturation: every user of a batch signs in at once, until the last code is accepted;
3. half load: open-loop sign-ins at half the saturation rate;
4. with a report: the same while a CPU-heavy report task runs in a reports-only worker started under ``nice -n 19``,
   as ``deploy/systemd``'s report worker runs.

    .venv/bin/python bench/bench_otp_delivery.py [--help] [--ratio-only]

The last line of stdout is one JSON object with every figure and the goals.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.harness, bench.tasks
from bench.common import NO_RATE_LIMITS, SETTINGS, CpuMeter, SmtpProcess, percentile, say

os.environ.update(SETTINGS)

from celery import Celery
from sqlalchemy import func, insert, select
from sqlalchemy.orm import sessionmaker

from tests.harness.services import ApiServer, RedisServer, Worker, pg_database, service_env, wait_for
from twofa.db import get_engine
from twofa.models import OutboxMessage, User
from twofa.passwords import hash_password

BENCH_QUEUE = "bench"
# The bench queue is not in celeryconfig's task_queues: the worker is told to accept it (``-- key=value``).
WORKER_EXTRA = ["--include", "bench.tasks", "--", "task_create_missing_queues=true"]
PASSWORD = "bench password"  # noqa: S105  (the users of a throw-away database)
GOAL_OTP_VS_NOOP = 0.35
GOAL_P99_MS = 50.0
GOAL_P99_WITH_REPORT_MS = 250.0


@dataclass
class Run:
    """The services of one run, and what it found."""

    args: argparse.Namespace
    tmp: Path
    redis: RedisServer
    db_url: str
    smtp: SmtpProcess
    api: ApiServer
    client: Celery
    workers: list[Worker] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    disturbed: dict[str, float] = field(default_factory=dict)
    batches: int = 0

    def worker(self, name: str, queues: str, concurrency: int, nice: int = 0) -> Worker:
        env = service_env(self.db_url, self.redis.url, self.smtp.port)
        log = self.tmp / f"{name}.log"
        w = Worker(env, log, queues=queues, concurrency=concurrency, extra_args=WORKER_EXTRA, nice=nice)
        self.workers.append(w)
        return w.start()

    def users(self, count: int) -> list[str]:
        """``count`` new users with email 2FA (one password hash shared); their addresses."""
        self.batches += 1
        now, password_hash = datetime.now(UTC), hash_password(PASSWORD)
        emails = [f"u{self.batches}-{i}@bench.example" for i in range(count)]
        row = {"password_hash": password_hash, "created_at": now, "twofa_method": "email", "twofa_enabled_at": now}
        with sessionmaker(get_engine(self.db_url)).begin() as s:
            s.execute(insert(User), [dict(row, email=e) for e in emails])
        return emails

    def meter(self) -> CpuMeter:
        database = self.db_url.rsplit("/", 1)[1]
        assert self.api.proc is not None
        processes = {"api": self.api.proc.pid, "smtp": self.smtp.pid}
        return CpuMeter(self.workers, self.redis.proc.pid, database, host_wide=True, processes=processes)

    def note_cpu(self, phase: str, meter: CpuMeter, seconds: float) -> None:
        """Print where the CPU went; flag the phase when other jobs on the host took more than a tenth of it."""
        say(meter.line(seconds))
        taken = (meter.used["other"] + meter.used["steal"]) / seconds
        if taken > 0.1 * (os.cpu_count() or 1):
            say(f"    NOTE: {taken:.2f} cores went to other jobs or the hypervisor: a disturbed figure")
            self.disturbed[phase] = round(taken, 2)


# --- sign-ins over HTTP ------------------------------------------------------------------------------------------


class SignIns:
    """``POST /api/v1/auth/login`` as a user's browser sends it, one keep-alive connection per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def __call__(self, email: str) -> float:
        """Sign in; the moment the answer (a challenge, the code on its way) arrived."""
        conn = getattr(self.local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.local.conn = conn
        body = json.dumps({"email": email, "password": PASSWORD})
        conn.request("POST", "/api/v1/auth/login", body, {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = json.loads(answer.read())
        if answer.status != 200 or not data.get("email_code_sent"):
            raise RuntimeError(f"sign-in of {email}: {answer.status} {data}")
        return time.monotonic()


def burst(sign_in: SignIns, emails: list[str], threads: int) -> tuple[float, float]:
    """Every address signs in at once on ``threads`` connections: (first sent, last answered)."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(sign_in, emails))
    return started, time.monotonic()


def paced(sign_in: SignIns, emails: list[str], rate: float, threads: int) -> dict[str, tuple[float, float]]:
    """Open loop: sign-in ``i`` is due at ``t0 + i / rate`` whatever happened to the earlier ones. Address ->
    (sent, answered)."""
    sent: dict[str, float] = {}

    def one(email: str) -> float:
        sent[email] = time.monotonic()
        return sign_in(email)

    with ThreadPoolExecutor(threads) as pool:
        t0, futures = time.monotonic() + 0.05, {}
        for i, email in enumerate(emails):
            time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            futures[email] = pool.submit(one, email)
        answered = {email: f.result() for email, f in futures.items()}
    return {email: (sent[email], answered[email]) for email in emails}


def arrivals(smtp: SmtpProcess, base: int, expected: list[str]) -> dict[str, float]:
    """Acceptance time per address, once every expected email arrived after the first ``base``; each exactly once."""
    wait_for(lambda: smtp.count() - base >= len(expected), 60 + len(expected) / 5, 0.01, f"{len(expected)} emails")
    found: dict[str, float] = {}
    for (to,), at in smtp.since(base):
        if to in found:
            raise RuntimeError(f"two emails to {to}")
        found[to] = at
    if set(found) != set(expected):
        raise RuntimeError(f"{len(set(expected) - set(found))} emails missing, {len(set(found) - set(expected))} extra")
    return found


# --- phase 1: the worker's throughput against a no-op task's -------------------------------------------------------


@contextlib.contextmanager
def held(worker: Worker) -> Iterator[list[float]]:
    """The worker (every process of it) stopped inside the block, so that a backlog builds up in Redis, and let go on
    leaving; the list yields when."""
    assert worker.proc is not None
    resumed: list[float] = []
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        yield resumed
    finally:
        resumed.append(time.monotonic())
        os.killpg(worker.proc.pid, signal.SIGCONT)


def noop_backlog(b: Run, worker: Worker, count: int) -> float:
    """Seconds the worker takes to run ``count`` no-op tasks queued beforehand."""
    counter = f"bench:noop:{secrets.token_hex(4)}"
    with held(worker) as resumed:
        for _ in range(count):
            b.client.send_task("bench.noop", args=[counter, count], queue=BENCH_QUEUE)
    wait_for(lambda: bool(b.redis.client.exists(f"{counter}:at")), 60 + count / 20, 0.02, "the no-op tasks")
    return float(b.redis.client.get(f"{counter}:at") or 0) - resumed[0]


def otp_backlog(b: Run, worker: Worker, count: int) -> float:
    """Seconds the worker takes to deliver ``count`` email codes whose sign-ins were answered beforehand."""
    emails, base = b.users(count), b.smtp.count()
    with held(worker) as resumed:
        burst(SignIns(b.api.port), emails, b.args.threads)
    return max(arrivals(b.smtp, base, emails).values()) - resumed[0]


def noop_published(b: Run, worker: Worker, count: int) -> float:
    """Seconds from publishing the first of ``count`` no-op tasks, back to back while the worker runs them, to the
    last one run: the no-op baseline as the goal's threshold was set (the publishing shares the host's CPU)."""
    counter, started = f"bench:noop:{secrets.token_hex(4)}", time.monotonic()
    for _ in range(count):
        b.client.send_task("bench.noop", args=[counter, count], queue=BENCH_QUEUE)
    wait_for(lambda: bool(b.redis.client.exists(f"{counter}:at")), 60 + count / 20, 0.02, "the no-op tasks")
    return float(b.redis.client.get(f"{counter}:at") or 0) - started


def phase_ratio(b: Run, worker: Worker) -> None:
    """Email codes against the no-op task, in alternating rounds; the goal against the no-op published back to
    back, as the issue set it; the backlog against backlog figure, the worker's alone, for information."""
    a, n = b.args, b.args.tasks // b.args.rounds
    kinds = (otp_backlog, noop_published, noop_backlog)
    took = dict.fromkeys(kinds, 0.0)
    with b.meter() as meter:
        for i in range(a.rounds):
            this = {fn: fn(b, worker, n) for fn in (kinds if i % 2 == 0 else kinds[::-1])}
            took = {fn: took[fn] + this[fn] for fn in kinds}
            say(
                f"round {i + 1}: email codes {n / this[otp_backlog]:.0f}/s; no-op {n / this[noop_published]:.0f} "
                f"tasks/s published while run, {n / this[noop_backlog]:.0f}/s from a backlog"
            )
    otp, noop, drained = (n * a.rounds / took[fn] for fn in kinds)
    say(
        f"{n * a.rounds} each: email codes {otp:.0f}/s = {otp / noop:.3f} of the no-op published while run "
        f"({noop:.0f}/s; goal >= {GOAL_OTP_VS_NOOP}), {otp / drained:.3f} of the no-op from a backlog ({drained:.0f}/s)"
    )
    b.note_cpu("ratio", meter, sum(took.values()))
    b.results.update(
        noop_tps=round(noop, 1),
        noop_backlog_tps=round(drained, 1),
        otp_worker_tps=round(otp, 1),
        otp_worker_vs_noop=round(otp / noop, 3),
        otp_worker_vs_noop_backlog=round(otp / drained, 3),
    )


# --- phases 2-4: end to end -----------------------------------------------------------------------------------------


def phase_saturation(b: Run) -> float:
    """Every user of a batch signs in at once; email codes per second until the last is accepted."""
    emails, base = b.users(b.args.burst), b.smtp.count()
    with b.meter() as meter:
        started, answered = burst(SignIns(b.api.port), emails, b.args.threads)
        last = max(arrivals(b.smtp, base, emails).values())
    rate = len(emails) / (last - started)
    say(
        f"saturation: {len(emails)} sign-ins answered in {answered - started:.2f} s, every code accepted after "
        f"{last - started:.2f} s = {rate:.0f} codes/s"
    )
    b.note_cpu("saturation", meter, last - started)
    b.results.update(saturation_tps=round(rate, 1), sign_in_rate=round(len(emails) / (answered - started), 1))
    return rate


def latencies(b: Run, rate: float, phase: str) -> dict[str, float]:
    """Open-loop sign-ins at ``rate`` for ``--seconds``: percentiles of sign-in to acceptance, and of the answer."""
    emails, base = b.users(max(20, round(rate * b.args.seconds))), b.smtp.count()
    with b.meter() as meter:
        timings = paced(SignIns(b.api.port), emails, rate, b.args.threads * 2)
        arrived = arrivals(b.smtp, base, emails)
    total = [(arrived[e] - sent) * 1000 for e, (sent, _) in timings.items()]
    answer = [(done - sent) * 1000 for sent, done in timings.values()]
    found = {f"p{q}_ms": round(percentile(total, q), 2) for q in (50, 90, 99)}
    found |= {"max_ms": round(max(total), 2), "p50_answer_ms": round(percentile(answer, 50), 2)}
    say(
        f"{phase}: {rate:.0f} sign-ins/s for {b.args.seconds:g} s ({len(emails)}): "
        + ", ".join(f"{k} {v:.1f}" for k, v in found.items())
    )
    b.note_cpu(phase, meter, max(arrived.values()) - min(s for s, _ in timings.values()))
    return found


def phase_with_report(b: Run, rate: float) -> dict[str, float]:
    """Half load again while ``bench.report`` (pandas group-bys) runs in a reports-only worker at nice 19."""
    r, flag = b.redis.client, f"bench:report:{secrets.token_hex(4)}"
    reports = b.worker("reports", "reports", 1, nice=19)
    b.client.send_task("bench.report", args=[flag], queue="reports")
    wait_for(lambda: bool(r.exists(f"{flag}:started")), 60, what="the report task to start")
    found = latencies(b, rate, "with_report")
    if r.exists(f"{flag}:done"):
        say("    WARNING: the report ended before the window did")
    r.set(f"{flag}:stop", 1)
    wait_for(lambda: bool(r.exists(f"{flag}:done")), 60, what="the report task to finish")
    reports.stop()
    return found


def check_outbox(b: Run) -> None:
    """Every row sent, once, first try."""
    with sessionmaker(get_engine(b.db_url))() as s:
        statuses = dict(s.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())
        retried = s.execute(select(func.count()).where(OutboxMessage.attempts > 1)).scalar_one()
    say(f"outbox rows: {statuses}, {retried} needed more than one attempt, {b.smtp.count()} emails received")
    b.results.update(outbox_statuses=statuses, outbox_retried=retried, nothing_lost=set(statuses) == {"sent"})


def run(b: Run) -> None:
    say(f"host: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    main = b.worker("worker", f"otp,mail,{BENCH_QUEUE}", b.args.concurrency)
    burst(SignIns(b.api.port), b.users(30), 4)  # warm-up: pool children connected, templates compiled
    wait_for(lambda: b.smtp.count() >= 30, 60, what="the warm-up's emails")
    phase_ratio(b, main)
    res = b.results
    res["goals"] = {f"otp_worker_vs_noop>={GOAL_OTP_VS_NOOP}": res["otp_worker_vs_noop"] >= GOAL_OTP_VS_NOOP}
    res["disturbed_phases"] = b.disturbed
    if b.args.ratio_only:
        return
    rate = phase_saturation(b) / 2
    res.update(half_load_rate=round(rate, 1), **latencies(b, rate, "half_load"))
    res.update({f"{k}_with_report": v for k, v in phase_with_report(b, rate).items()})
    check_outbox(b)
    res["goals"] |= {
        f"p99_ms<{GOAL_P99_MS:g}": res["p99_ms"] < GOAL_P99_MS,
        f"p99_ms_with_report<{GOAL_P99_WITH_REPORT_MS:g}": res["p99_ms_with_report"] < GOAL_P99_WITH_REPORT_MS,
        "nothing_lost": res["nothing_lost"] and res["outbox_retried"] == 0,
    }


def stop_workers(b: Run) -> None:
    for w in b.workers:
        w.stop()


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[Run]:
    """Everything the run needs, torn down in reverse order however the run ends."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_otp_")))
        redis_server = RedisServer(tmp)
        stack.callback(redis_server.stop)
        db_url = stack.enter_context(pg_database("twofa_bench"))
        smtp = SmtpProcess()
        stack.callback(smtp.stop)
        api = ApiServer(service_env(db_url, redis_server.url, smtp.port, **NO_RATE_LIMITS), tmp / "api.log", quiet=True)
        stack.callback(api.stop)
        api.start()
        client = Celery("bench-client")
        client.config_from_object("celeryconfig")
        client.conf.update(broker_url=redis_server.url, task_create_missing_queues=True)  # the bench queue
        stack.callback(client.close)
        b = Run(args, tmp, redis_server, db_url, smtp, api, client)
        stack.callback(stop_workers, b)  # before the database is dropped and Redis stopped
        yield b


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=1800, help="no-op tasks and email codes each, phase 1 (1800)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of phase 1 (3)")
    p.add_argument("--burst", type=int, default=1000, help="sign-ins at saturation (1000)")
    p.add_argument("--seconds", type=float, default=12, help="each latency window (12)")
    p.add_argument("--concurrency", type=int, default=2, help="prefork children of the worker (2)")
    p.add_argument("--threads", type=int, default=4, help="sign-in connections at saturation (4)")
    p.add_argument("--ratio-only", action="store_true", help="phase 1 only: the worker against the no-op task")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with services(args) as b:
        run(b)
    b.results["wall_seconds"] = round(time.monotonic() - started, 1)
    say(json.dumps(b.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
