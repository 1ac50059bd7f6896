"""``POST /api/v1/auth/2fa/login`` with valid TOTP codes, beside the trivial ``GET /healthz`` of the same server.

Everything is real and private to this run: a fresh migrated PostgreSQL database (dropped afterwards), the API
served by ``twofa serve`` (uvicorn) in its own process(es) on the system clock, and a closed-loop load
generator (``bench/api_load.py``) in another process with a fixed number of keep-alive connections.

A TOTP code is accepted once per user and time step, so every login is a different user: N users are inserted
directly (a confirmed TOTP device, an open login challenge; no password hashing) and each request computes its
user's current code just before it is sent. The two endpoints are measured in alternating rounds, so that the
machine's background load falls on both alike. Afterwards the database must hold one successful, 2FA-verified
login-history row and one session per 200 answer. A short in-process profile then splits one login into its SQL
statements, the commit and Python.

Goal (the issue): the login rate is at least 25% of the trivial endpoint's, with 0 errors and every history row.

The ratio depends on how the trivial endpoint runs. ``/healthz`` is a plain ``def``, which FastAPI runs in its own
thread pool (anyio's, as ``api.routing`` runs the API's slow reads); sign-ins take the API's slot threads, a cheaper
trip. Measured on one host on 2026-11-30, 16 connections: ``/healthz`` 2,900 requests/s (login/trivial 0.267); the
same answer from an ``async def``, 6,200/s (0.135); from a ``def`` on the slot threads, 4,000/s (0.19).

    .venv/bin/python bench/bench_api.py [--help]

Human-readable lines first; the last line of stdout is one JSON object with every figure and the goal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests.harness
RATE_LIMIT = "10000000"
# Like tests/conftest.py: cheap argon2, a fixed key; set before twofa reads its settings. The server gets the same.
os.environ.update(
    TWOFA_SECRET_KEY=os.environ.get("TWOFA_SECRET_KEY", "bench-key-0123456789-abcdefghijklmnopqrstuvwxyz"),
    TWOFA_ARGON2_TIME_COST="1",
    TWOFA_ARGON2_MEMORY_COST="256",
    TWOFA_ARGON2_PARALLELISM="1",
    TWOFA_MAIL_BACKEND="memory",
    TWOFA_RATELIMIT_PER_IP=RATE_LIMIT,
    TWOFA_RATELIMIT_AUTH_PER_IP=RATE_LIMIT,
    TWOFA_RATELIMIT_AUTH_PER_ACCOUNT=RATE_LIMIT,
)
os.environ.pop("TWOFA_RATELIMIT_URL", None)  # the per-process memory limiter, as in the tests

from sqlalchemy import Engine, event, func, insert, select  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from bench.common import descendants, proc_cpu  # noqa: E402
from tests.harness.services import free_port, pg_database, wait_for  # noqa: E402
from twofa import crypto, logins, totp  # noqa: E402
from twofa.db import make_engine  # noqa: E402
from twofa.models import LoginChallenge, LoginHistory, TotpDevice, User, UserSession  # noqa: E402
from twofa.sessions import Client  # noqa: E402

GOAL_RATIO = 0.25
LOAD = ROOT / "bench" / "api_load.py"


# --------------------------------------------------------------------------------------------------- set-up


def seed_users(url: str, n: int, path: Path) -> None:
    """``n`` users with a confirmed TOTP device and an open login challenge; writes "token secret" lines."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    tokens = [crypto.new_token() for _ in range(n)]
    seeds = [totp.new_secret() for _ in range(n)]
    try:
        with engine.begin() as conn:
            ids = (
                conn.execute(
                    insert(User).returning(User.id, sort_by_parameter_order=True),
                    [
                        {
                            "email": f"bench{i}@bench.example",
                            "password_hash": "!unused",
                            "created_at": now,
                            "twofa_method": "totp",
                            "twofa_enabled_at": now,
                            "second_factor_failures": 0,
                        }
                        for i in range(n)
                    ],
                )
                .scalars()
                .all()
            )
            conn.execute(
                insert(TotpDevice),
                [
                    {"user_id": uid, "secret_ciphertext": crypto.encrypt(seed), "created_at": now, "confirmed_at": now}
                    for uid, seed in zip(ids, seeds, strict=True)
                ],
            )
            conn.execute(
                insert(LoginChallenge),
                [
                    {
                        "user_id": uid,
                        "token_hash": crypto.token_hash(token),
                        "created_at": now,
                        "expires_at": now + timedelta(days=1),
                        "ip": "127.0.0.1",
                        "user_agent": "bench-api",
                    }
                    for uid, token in zip(ids, tokens, strict=True)
                ],
            )
            for table in ("users", "totp_devices", "login_challenges"):
                conn.exec_driver_sql(f"ANALYZE {table}")
    finally:
        engine.dispose()
    path.write_text("".join(f"{t} {s}\n" for t, s in zip(tokens, seeds, strict=True)), encoding="ascii")


# --------------------------------------------------------------------------------------------------- processes


class ApiServer:
    """``twofa serve`` (uvicorn, as in production) in its own process group, without access log."""

    def __init__(self, db_url: str, workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
        env.update({k: v for k, v in os.environ.items() if k.startswith("TWOFA_")})
        env.update(TWOFA_DATABASE_URL=db_url, PYTHONPATH=str(ROOT))
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli.main",
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self._healthy, 60, interval=0.2, what="uvicorn to answer /healthz")
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:  # noqa: S310  (loopback)
                return bool(answer.status == 200)
        except OSError:
            return False

    def cpu(self) -> float:
        return sum(proc_cpu(pid)[1] for pid in [self.proc.pid, *descendants(self.proc.pid)])

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class Backends:
    """CPU of the PostgreSQL backends serving the bench database (the server's pooled connections)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def snapshot(self) -> dict[int, float]:
        with self.engine.connect() as conn:
            pids = conn.exec_driver_sql(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).scalars()
            return {int(pid): proc_cpu(int(pid))[1] for pid in pids}

    @staticmethod
    def used(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# --------------------------------------------------------------------------------------------------- load


def run_load(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(LOAD), json.dumps(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Totals:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    elapsed: float = 0.0
    gen_cpu: float = 0.0
    server_cpu: float = 0.0
    pg_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def add(self, r: dict[str, Any], server_cpu: float, pg_cpu: float) -> None:
        self.requests += r["requests"]
        self.ok += r["ok"]
        self.errors += r["errors"]
        self.elapsed += r["elapsed_s"]
        self.gen_cpu += r["cpu_s"]
        self.server_cpu += server_cpu
        self.pg_cpu += pg_cpu
        self.latencies.extend(r["latencies_ms"])
        self.error_samples.extend(r["error_samples"][: max(0, 5 - len(self.error_samples))])

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def per_request_ms(self, cpu: float) -> float:
        return cpu / self.requests * 1000.0 if self.requests else float("nan")

    def line(self, name: str) -> str:
        return (
            f"{name:8s} {self.rps:8.1f} req/s  p50 {percentile(self.latencies, 50):7.2f} ms  "
            f"p99 {percentile(self.latencies, 99):7.2f} ms  requests {self.requests:6d}  errors {self.errors}  "
            f"CPU/request: server {self.per_request_ms(self.server_cpu):.2f} ms, "
            f"postgres {self.per_request_ms(self.pg_cpu):.2f} ms, generator {self.per_request_ms(self.gen_cpu):.2f} ms"
            f"; busy (cores): server {self.server_cpu / self.elapsed:.2f}, postgres {self.pg_cpu / self.elapsed:.2f}, "
            f"generator {self.gen_cpu / self.elapsed:.2f}"
        )


def wrk_trivial(url: str, concurrency: int, seconds: int) -> float | None:
    """Requests/s of ``wrk`` (C, one thread) on /healthz: a second opinion on the trivial rate, when installed."""
    binary = shutil.which("wrk")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", url + "/healthz"],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    match = re.search(r"Requests/sec:\s*([\d.]+)", out.stdout)
    if out.returncode != 0 or match is None or "Non-2xx" in out.stdout:
        return None
    return float(match.group(1))


# --------------------------------------------------------------------------------------------------- profile


def _label(statement: str) -> str:
    text = " ".join(statement.split())
    verb = text.split(" ", 1)[0].upper()
    if verb == "WITH":  # data-modifying CTEs, then the statement that carries them
        names, rest = [], text[len("WITH") :]
        while found := re.match(r"\s*,?\s*(\w+) AS \(", rest):
            names.append(found.group(1))
            depth, i = 1, found.end()
            while depth:  # to the CTE's closing parenthesis
                depth += {"(": 1, ")": -1}.get(rest[i], 0)
                i += 1
            rest = rest[i:]
        return f"{_label(rest.strip())} WITH {', '.join(names)}"
    if verb == "SELECT":
        table = re.search(r"\bFROM (\w+)", text)
        name = f"SELECT {table.group(1) if table else '?'}"
        if "JOIN" in text:
            name += " (join)"
        return name + (" FOR UPDATE" if "FOR UPDATE" in text else "")
    if verb == "INSERT":
        table = re.search(r"INTO (\w+)", text)
        return f"INSERT {table.group(1) if table else '?'}"
    if verb == "UPDATE":
        table = re.search(r"UPDATE (\w+)", text)
        return f"UPDATE {table.group(1) if table else '?'}"
    return verb


def profile_logins(url: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Run ``logins.finish_login`` (what the server's ``/auth/2fa/login`` runs) in this process, one at a time,
    timing every SQL statement; what remains is Python (with the pool's checkout and return)."""
    engine = make_engine(url)  # the API's engine settings (pool_pre_ping, pool size)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    stmt_time: dict[str, float] = defaultdict(float)
    stmt_count: dict[str, int] = defaultdict(int)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        label = _label(statement)
        stmt_time[label] += time.perf_counter() - conn.info.pop("bench_t0")
        stmt_count[label] += 1

    client = Client(ip="127.0.0.1", user_agent="bench-api")
    total = cpu = 0.0
    done = 0
    try:
        # Warm the pool and SQLAlchemy's statement caches with a few logins that are not counted.
        for warm, (token, seed) in enumerate(pairs):
            t0, c0 = time.perf_counter(), time.process_time()
            logins.finish_login(factory, token, totp.code_at(seed, datetime.now(UTC)), client)
            if warm < 20:
                stmt_time.clear()
                stmt_count.clear()
                continue
            done += 1
            total += time.perf_counter() - t0
            cpu += time.process_time() - c0
    finally:
        engine.dispose()
    sql = sum(stmt_time.values())
    ms = 1000.0 / max(done, 1)
    return {
        "logins": done,
        "total_ms": total * ms,
        "cpu_ms": cpu * ms,
        "sql_ms": sql * ms,
        "python_ms": (total - sql) * ms,
        "statements_per_login": sum(stmt_count.values()) / max(done, 1),
        "statements": {
            k: {"per_login": stmt_count[k] / max(done, 1), "ms": v * ms}
            for k, v in sorted(stmt_time.items(), key=lambda kv: -kv[1])
        },
    }


# --------------------------------------------------------------------------------------------------- main


def verify(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            "history_success_verified": conn.execute(
                select(func.count())
                .select_from(LoginHistory)
                .where(LoginHistory.outcome == "success", LoginHistory.twofa_verified.is_(True))
            ).scalar_one(),
            "history_all": conn.execute(select(func.count()).select_from(LoginHistory)).scalar_one(),
            "sessions_verified": conn.execute(
                select(func.count()).select_from(UserSession).where(UserSession.twofa_verified.is_(True))
            ).scalar_one(),
            "challenges_completed": conn.execute(
                select(func.count()).select_from(LoginChallenge).where(LoginChallenge.completed_at.is_not(None))
            ).scalar_one(),
        }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=10000, help="users prepared (each can log in once)")
    p.add_argument("--concurrency", type=int, default=16, help="in-flight requests (keep-alive connections)")
    p.add_argument("--workers", type=int, default=1, help="server processes (twofa serve --workers)")
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per endpoint, over all rounds")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds the duration is split into")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint first")
    p.add_argument("--profile", type=int, default=200, help="in-process logins profiled statement by statement")
    p.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check of the trivial rate")
    return p.parse_args()


@contextlib.contextmanager
def stopping(server: ApiServer) -> Iterator[ApiServer]:
    try:
        yield server
    finally:
        server.stop()


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench_api_"))
    users_file = workdir / "users.txt"
    profile_n = max(args.profile, 0) + (20 if args.profile > 0 else 0)
    load_users = args.users - profile_n
    try:
        with pg_database("twofa_bench_api") as url:
            t0 = time.monotonic()
            seed_users(url, args.users, users_file)
            print(f"seeded {args.users} users with a TOTP device and an open challenge in {time.monotonic() - t0:.1f}s")
            engine = make_engine(url)
            backends = Backends(engine)
            try:
                with stopping(ApiServer(url, args.workers, workdir / "uvicorn.log")) as server:
                    print(f"twofa serve --workers {args.workers} on {server.url}; concurrency {args.concurrency}")
                    offset = 0
                    ok_logins = 0
                    base = {"port": server.port, "concurrency": args.concurrency}

                    def phase(mode: str, seconds: float) -> tuple[dict[str, Any], float, float]:
                        nonlocal offset, ok_logins
                        cfg = dict(base, mode=mode, duration=seconds)
                        if mode == "login":
                            cfg.update(users_file=str(users_file), offset=offset, limit=load_users - offset)
                        cpu0, pg0 = server.cpu(), backends.snapshot()
                        r = run_load(cfg, timeout=seconds + 120)
                        cpu1, pg1 = server.cpu(), backends.snapshot()
                        if mode == "login":
                            offset += r["users_taken"]
                            ok_logins += r["ok"]
                        return r, cpu1 - cpu0, Backends.used(pg0, pg1)

                    warm_errors = 0
                    for mode in ("trivial", "login"):
                        warm_errors += phase(mode, args.warmup)[0]["errors"]
                    totals = {"trivial": Totals(), "login": Totals()}
                    per_round = args.duration / args.rounds
                    for i in range(args.rounds):
                        order = ("trivial", "login") if i % 2 == 0 else ("login", "trivial")
                        for mode in order:
                            r, server_cpu, pg_cpu = phase(mode, per_round)
                            totals[mode].add(r, server_cpu, pg_cpu)
                            if mode == "login" and r["users_taken"] and offset >= load_users:
                                print(f"warning: all {load_users} users used; raise --users", file=sys.stderr)
                    wrk_rps = None if args.no_wrk else wrk_trivial(server.url, args.concurrency, 3)
                trivial, login = totals["trivial"], totals["login"]
                print(trivial.line("trivial"))
                print(login.line("login"))
                if wrk_rps is not None:
                    print(f"wrk (C, 1 thread) on /healthz: {wrk_rps:.1f} req/s (our generator: {trivial.rps:.1f})")
                for name, t in totals.items():
                    for sample in t.error_samples:
                        print(f"  {name} error: {sample}")

                prof = profile_logins(url, pairs_for_profile(users_file, load_users, profile_n)) if profile_n else None
                if prof:
                    print(
                        f"profile of {prof['logins']} sequential in-process logins (logins.finish_login): "
                        f"{prof['total_ms']:.2f} ms each, CPU {prof['cpu_ms']:.2f} ms; SQL {prof['sql_ms']:.2f} "
                        f"({prof['statements_per_login']:.0f} statements), Python and the pool "
                        f"{prof['python_ms']:.2f} ms"
                    )
                    for label, s in prof["statements"].items():
                        print(f"    {label:42s} x{s['per_login']:.0f}  {s['ms']:.3f} ms")

                counts = verify(engine)
            finally:
                engine.dispose()
            expected = ok_logins + (prof["logins"] + 20 if prof else 0)
            history_ok = (
                counts["history_success_verified"] == expected
                and counts["history_all"] == expected
                and counts["sessions_verified"] == expected
                and counts["challenges_completed"] == expected
            )
            print(
                f"database: {counts['history_success_verified']} success+2fa_verified history rows, "
                f"{counts['sessions_verified']} sessions, {counts['challenges_completed']} completed challenges; "
                f"expected {expected} (200s incl. warm-up, profiled logins): {'OK' if history_ok else 'MISMATCH'}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    errors = trivial.errors + login.errors + warm_errors
    ratio = login.rps / trivial.rps if trivial.rps else 0.0
    # What the rates' ratio would be if server + PostgreSQL CPU were the only limit: steadier on a noisy machine.
    cost_login = login.per_request_ms(login.server_cpu + login.pg_cpu)
    cost_trivial = trivial.per_request_ms(trivial.server_cpu + trivial.pg_cpu)
    cpu_ratio = cost_trivial / cost_login if cost_login > 0 else float("nan")
    met = ratio >= GOAL_RATIO and errors == 0 and history_ok
    print(
        f"ratio login/trivial = {ratio:.3f} (goal >= {GOAL_RATIO}): {'met' if met else 'MISSED'}; "
        f"wall time {time.monotonic() - started:.0f}s"
    )
    print(
        f"server+postgres CPU per request: login {cost_login:.2f} ms, trivial {cost_trivial:.2f} ms "
        f"(their ratio {cpu_ratio:.3f}: the rate ratio a CPU-bound machine allows)"
    )
    summary = {
        "login_rps": round(login.rps, 1),
        "login_p50_ms": round(percentile(login.latencies, 50), 2),
        "login_p99_ms": round(percentile(login.latencies, 99), 2),
        "login_requests": login.requests,
        "trivial_rps": round(trivial.rps, 1),
        "trivial_p50_ms": round(percentile(trivial.latencies, 50), 2),
        "trivial_p99_ms": round(percentile(trivial.latencies, 99), 2),
        "trivial_requests": trivial.requests,
        "trivial_rps_wrk": round(wrk_rps, 1) if wrk_rps is not None else None,
        "ratio": round(ratio, 3),
        "cpu_cost_ratio": round(cpu_ratio, 3),
        "errors": errors,
        "history_rows_ok": history_ok,
        "db_counts": counts,
        "expected_logins": expected,
        "server_cpu_ms_per_request": {
            "login": round(login.per_request_ms(login.server_cpu), 3),
            "trivial": round(trivial.per_request_ms(trivial.server_cpu), 3),
        },
        "postgres_cpu_ms_per_login": round(login.per_request_ms(login.pg_cpu), 3),
        "generator_busy": round(trivial.gen_cpu / trivial.elapsed, 2) if trivial.elapsed else None,
        "profile_ms": {k: round(v, 3) for k, v in prof.items() if k.endswith("_ms")} if prof else None,
        "concurrency": args.concurrency,
        "server_workers": args.workers,
        "duration_s_per_endpoint": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "goals": {"login>=0.25x_trivial": met},
    }
    print(json.dumps(summary))
    return 0


def pairs_for_profile(path: Path, offset: int, n: int) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="ascii").splitlines()[offset : offset + n]
    return [(a, b) for a, b in (line.split() for line in lines)]


if __name__ == "__main__":
    sys.exit(main())
