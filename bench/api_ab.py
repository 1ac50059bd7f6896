"""Sign-ins on two checkouts of the service, side by side: which one costs the server less CPU per sign-in.

For a change to the sign-in path on a shared, noisy host: both trees' ``twofa serve`` run at once on one fresh
database (the harness's ``ApiServer``, each with its own checkout on ``PYTHONPATH``), and the load generator of
``bench_api`` drives them in alternating phases, so that whatever else the host does falls on both alike. Each
phase uses users of its own (``bench_api.seed_users``). Prints each phase, then the medians and B's against A's.

    git worktree add --detach /tmp/base main       # or the commit before the change; . holds the change
    .venv/bin/python bench/api_ab.py --a /tmp/base --b .    [--rounds 6 --seconds 5 --concurrency 16]

The last line of stdout is one JSON object. Both checkouts must share this one's database schema.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.harness, bench
from bench.bench_api import Load, seed_users, server_env
from bench.common import say
from tests.harness.services import ApiServer, pg_database
from twofa.db import make_engine

SIGN_INS_PER_SECOND = 600  # more than either tree manages here: users enough for every phase


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--a", type=Path, required=True, help="the first checkout (the baseline)")
    p.add_argument("--b", type=Path, required=True, help="the second checkout (the change)")
    p.add_argument("--rounds", type=int, default=6, help="phases per checkout")
    p.add_argument("--seconds", type=float, default=5.0, help="length of a phase")
    p.add_argument("--concurrency", type=int, default=16, help="in-flight requests (keep-alive connections)")
    return p.parse_args()


def start(name: str, root: Path, url: str, tmp: Path, users: list[str], args: argparse.Namespace) -> Load:
    """``root``'s ``twofa serve`` on ``url``, with ``users`` of its own."""
    users_file = tmp / f"users_{name}.txt"
    users_file.write_text("".join(users), encoding="ascii")
    env = server_env(url) | {"PYTHONPATH": str(root.resolve())}
    server = ApiServer(env, tmp / f"serve_{name}.log", quiet=True, root=root.resolve()).start()
    options = argparse.Namespace(users=len(users), concurrency=args.concurrency, workers=1, warmup=1.5)
    return Load(server, make_engine(url), options, users_file)


def phase(load: Load, seconds: float) -> dict[str, float]:
    answer, server_cpu, _pg = load.phase("login", seconds)
    if answer["errors"]:
        raise RuntimeError(f"sign-ins failed: {answer['error_samples'][:3]}")
    n = answer["requests"]
    return {"per_second": n / answer["elapsed_s"], "server_cpu_ms": server_cpu / n * 1000.0}


def compare(loads: dict[str, Load], args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Warm-up, then alternating phases (which checkout goes first alternates too)."""
    for load in loads.values():
        load.warm_up()
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in loads}
    for i in range(args.rounds):
        for name in ("a", "b") if i % 2 == 0 else ("b", "a"):
            figures = phase(loads[name], args.seconds)
            phases[name].append(figures)
            say(f"{name}: {figures['per_second']:7.1f} sign-ins/s, server CPU {figures['server_cpu_ms']:.3f} ms each")
    return phases


def summary(phases: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    medians = {
        f"{name}_{key}": round(statistics.median(p[key] for p in runs), 3)
        for name, runs in phases.items()
        for key in ("per_second", "server_cpu_ms")
    }
    return medians | {
        "b_vs_a_per_second": round(medians["b_per_second"] / medians["a_per_second"], 3),
        "b_vs_a_server_cpu": round(medians["b_server_cpu_ms"] / medians["a_server_cpu_ms"], 3),
    }


def main() -> int:
    args = parse_args()
    per_tree = int(args.rounds * args.seconds * SIGN_INS_PER_SECOND) + 2000
    with tempfile.TemporaryDirectory(prefix="api_ab_") as tmp_name, pg_database("twofa_bench_ab") as url:
        tmp = Path(tmp_name)
        seed_users(url, 2 * per_tree, tmp / "users.txt")
        users = (tmp / "users.txt").read_text(encoding="ascii").splitlines(keepends=True)
        loads: dict[str, Load] = {}
        try:
            for i, (name, root) in enumerate((("a", args.a), ("b", args.b))):
                loads[name] = start(name, root, url, tmp, users[i * per_tree : (i + 1) * per_tree], args)
            phases = compare(loads, args)
        finally:
            for load in loads.values():
                load.server.stop()
                load.engine.dispose()
    result = summary(phases)
    say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
