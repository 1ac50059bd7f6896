"""``POST /api/v1/auth/2fa/login`` with valid TOTP codes, beside the trivial ``GET /healthz`` of the same server.

Everything is real and private to this run: a fresh migrated PostgreSQL database and ``twofa serve`` (the test
harness's ``ApiServer``, uvicorn as deployed) on the system clock; a closed-loop load generator
(``bench/api_load.py``) in another process keeps a fixed number of keep-alive connections busy.

A TOTP code is accepted once per user and time step, so every sign-in is a different user: the users are inserted
directly (a confirmed TOTP device, an open login challenge) and each request computes its user's current code just
before it is sent. Phases, one function each: seed; warm up; the two endpoints in alternating rounds, so that the
host's background load falls on both alike; check that the database holds one verified history row, one session
and one completed challenge per 200 answer.

    .venv/bin/python bench/bench_api.py [--help]

The last line of stdout is one JSON object with every figure and the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.harness, bench.common
from bench.common import NO_RATE_LIMITS, SETTINGS, descendants, percentile, proc_cpu, say

os.environ.update(SETTINGS)

from sqlalchemy import Engine, func, insert, select

from tests.harness.services import ApiServer, pg_database
from twofa import crypto, totp
from twofa.db import make_engine
from twofa.models import LoginChallenge, LoginHistory, TotpDevice, User, UserSession

ROOT = Path(__file__).resolve().parents[1]
GOAL_RATIO = 0.22
LOAD = ROOT / "bench" / "api_load.py"


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


def server_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    env.update(SETTINGS | NO_RATE_LIMITS, TWOFA_DATABASE_URL=db_url, TWOFA_MAIL_BACKEND="memory", PYTHONPATH=str(ROOT))
    return env


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every process below it."""
    return sum(proc_cpu(p)[1] for p in [pid, *descendants(pid)])


def backends_cpu(engine: Engine) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving the bench database (the server's pool)."""
    with engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).scalars()
        return {int(pid): proc_cpu(int(pid))[1] for pid in pids}


def run_load(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One run of the load generator; its JSON answer."""
    out = subprocess.run(
        [sys.executable, str(LOAD), json.dumps(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed ({out.returncode}): {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


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


@dataclass
class Load:
    """Drives one endpoint at a time against the server; logins take the next unused users."""

    server: ApiServer
    engine: Engine
    args: argparse.Namespace
    users_file: Path
    offset: int = 0
    ok_logins: int = 0
    totals: dict[str, Totals] = field(default_factory=lambda: {"trivial": Totals(), "login": Totals()})

    def phase(self, mode: str, seconds: float) -> tuple[dict[str, Any], float, float]:
        """(the generator's answer, server CPU seconds, PostgreSQL CPU seconds) of ``seconds`` on ``mode``."""
        cfg: dict[str, Any] = {"port": self.server.port, "concurrency": self.args.concurrency}
        cfg.update(mode=mode, duration=seconds)
        if mode == "login":
            cfg.update(users_file=str(self.users_file), offset=self.offset, limit=self.args.users - self.offset)
        assert self.server.proc is not None
        cpu0, pg0 = tree_cpu(self.server.proc.pid), backends_cpu(self.engine)
        r = run_load(cfg, timeout=seconds + 120)
        cpu1, pg1 = tree_cpu(self.server.proc.pid), backends_cpu(self.engine)
        if mode == "login":
            self.offset += r["users_taken"]
            self.ok_logins += r["ok"]
            if self.offset >= self.args.users:
                say(f"warning: all {self.args.users} users used; raise --users")
        return r, cpu1 - cpu0, sum(cpu - pg0.get(pid, 0.0) for pid, cpu in pg1.items())

    def warm_up(self) -> int:
        """Unmeasured seconds on each endpoint; the errors seen."""
        return sum(self.phase(mode, self.args.warmup)[0]["errors"] for mode in ("trivial", "login"))

    def rounds(self) -> None:
        """The two endpoints in alternating rounds, which go first in turn."""
        per_round = self.args.duration / self.args.rounds
        for i in range(self.args.rounds):
            for mode in ("trivial", "login") if i % 2 == 0 else ("login", "trivial"):
                self.totals[mode].add(*self.phase(mode, per_round))


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


def check_database(engine: Engine, expected: int) -> bool:
    counts = verify(engine)
    ok = all(n == expected for n in counts.values())
    say(f"database: {counts}; expected {expected} each (200s incl. warm-up): {'OK' if ok else 'MISMATCH'}")
    return ok


def summary(load: Load, errors: int, history_ok: bool) -> dict[str, Any]:
    trivial, login = load.totals["trivial"], load.totals["login"]
    ratio = login.rps / trivial.rps if trivial.rps else 0.0
    # The rates' ratio if server + PostgreSQL CPU were the only limit: steadier on a shared host.
    cost_login = login.per_request_ms(login.server_cpu + login.pg_cpu)
    cost_trivial = trivial.per_request_ms(trivial.server_cpu + trivial.pg_cpu)
    met = ratio >= GOAL_RATIO and errors == 0 and history_ok
    say(
        f"ratio login/trivial = {ratio:.3f} (goal >= {GOAL_RATIO}): {'met' if met else 'MISSED'}; "
        f"server+postgres CPU per request: login {cost_login:.2f} ms, trivial {cost_trivial:.2f} ms"
    )
    figures = {f"{name}_rps": round(t.rps, 1) for name, t in load.totals.items()}
    for name, t in load.totals.items():
        figures |= {f"{name}_p{q}_ms": round(percentile(t.latencies, q), 2) for q in (50, 99)}
        figures[f"{name}_requests"] = t.requests
    return figures | {
        "ratio": round(ratio, 3),
        "cpu_cost_ratio": round(cost_trivial / cost_login, 3) if cost_login > 0 else None,
        "errors": errors,
        "history_rows_ok": history_ok,
        "concurrency": load.args.concurrency,
        "server_workers": load.args.workers,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "goals": {f"login>={GOAL_RATIO}x_trivial": met},
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=10000, help="users prepared (each can log in once)")
    p.add_argument("--concurrency", type=int, default=16, help="in-flight requests (keep-alive connections)")
    p.add_argument("--workers", type=int, default=1, help="server processes (twofa serve --workers)")
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per endpoint, over all rounds")
    p.add_argument("--rounds", type=int, default=6, help="alternating rounds the duration is split into")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint first")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_api_") as tmp, pg_database("twofa_bench_api") as url:
        users_file = Path(tmp) / "users.txt"
        seed_users(url, args.users, users_file)
        engine = make_engine(url)
        server = ApiServer(server_env(url), Path(tmp) / "uvicorn.log", workers=args.workers, quiet=True)
        try:
            server.start()
            say(f"twofa serve --workers {args.workers} on {server.url}; concurrency {args.concurrency}")
            load = Load(server, engine, args, users_file)
            warm_errors = load.warm_up()
            load.rounds()
        finally:
            server.stop()
        for name, t in load.totals.items():
            say(t.line(name))
            for sample in t.error_samples:
                say(f"  {name} error: {sample}")
        history_ok = check_database(engine, load.ok_logins)
        engine.dispose()
    errors = warm_errors + sum(t.errors for t in load.totals.values())
    say(json.dumps(summary(load, errors, history_ok)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
