"""The weekly report at scale: 5 million login events over 20,000 members on PostgreSQL, beside two baselines that
compute the same figures, in the same run.

- report: ``reports.build.build(session, org, week, now)`` (SQL aggregation in ``reports.extract``, policy
  verdicts from ``policies.evaluate``, pandas arithmetic, the matplotlib chart, the HTML page and the CSVs);
- sql: a plain SQL ``GROUP BY`` (two statements: per member in the week, per week of the trend), fetched;
- arrow: a bare Arrow load of the raw events of the trend's 8 weeks (ADBC ``fetch_arrow_table``, which is COPY
  binary underneath), then a pandas ``groupby`` for the same per-member and per-week counts.

Each measurement runs in a fresh child process (``bench/reports_paths.py``), timed around the call only (imports
and connecting excluded), median of ``--repeats``; its peak RSS is the child's ``VmHWM``, absolute (nothing
subtracted), shown beside the RSS of a child that only imports the same modules. PostgreSQL's own memory is not
counted (it is another process). The figures of the three paths are checked to agree. The report runs with pyarrow
hidden, as where the service is installed (pyarrow is in the ``bench`` extra only; pandas would import it and use
it for strings): one extra run with pyarrow importable shows the difference.

Sizes: the main one (20,000 members, 5,000,000 events), the same members with a quarter of the events (memory must
not follow events), and a quarter of the members with that quarter of the events (memory may follow members).
Each size is a fresh migrated database (``tests.harness.services.pg_database``), loaded in SQL, dropped at the end.
Half of the events fall in the report week, the other half evenly over the 7 weeks before it (``--week-share``).

    .venv/bin/python bench/bench_reports.py [--help]

The last line of stdout is one JSON object with every figure and the goals. Exit status 0 even when a goal is
missed; non-zero only when the benchmark itself breaks (including the paths disagreeing on the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.harness, bench.*
os.environ.update(
    TWOFA_SECRET_KEY=os.environ.get("TWOFA_SECRET_KEY", "bench-key-0123456789-abcdefghijklmnopqrstuvwxyz"),
    TWOFA_ARGON2_TIME_COST="1",
    TWOFA_ARGON2_MEMORY_COST="256",
    TWOFA_ARGON2_PARALLELISM="1",
)

from bench.reports_data import Dataset, load
from reports.week import IsoWeek
from tests.harness.services import pg_database

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "bench" / "reports_paths.py"
PATHS = ("report", "sql", "arrow")
GOAL_RATIO = 1.5
GOAL_PEAK_MB = 500.0
# Memory "grows with events" when 4x the events costs more than this factor (or this many MB) over the smaller
# size's increment above the import-only child.
EVENTS_GROWTH_FACTOR = 1.25
EVENTS_GROWTH_SLACK_MB = 20.0


@dataclass(frozen=True)
class Size:
    members: int
    events: int
    label: str


def child(mode: str, url: str, ds: Dataset | None, timeout: float = 600, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": mode, "url": url, **extra}
    if ds is not None:
        spec.update(org_id=ds.org_id, week=str(ds.week), now=ds.now.isoformat())
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["child_wall_s"] = time.perf_counter() - t0
    out["loadavg_1m"] = os.getloadavg()[0]
    return out


def check_agree(results: dict[str, list[dict[str, Any]]], label: str) -> None:
    checks = {path: runs[0]["check"] for path, runs in results.items() if runs and "check" in runs[0]}
    reference = checks.get("report")
    for path, check in checks.items():
        if check != reference:
            raise RuntimeError(f"{label}: {path} disagrees with the report:\n{check}\n!=\n{reference}")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    stages = {name: statistics.median(r["stages"][name] for r in runs) for name in runs[0].get("stages", {})}
    return {
        "s": statistics.median(r["seconds"] for r in runs),
        "s_all": [round(r["seconds"], 3) for r in runs],
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "stages": stages,
        "peak_mb": max(r["peak_mb"] for r in runs),
        "before_mb": max(r["before_mb"] for r in runs),
        "loadavg_1m": [round(r["loadavg_1m"], 1) for r in runs],
    }


def measure(
    size: Size, repeats: int, main_size: bool, week: IsoWeek, week_share: float, explain: bool
) -> dict[str, Any]:
    with pg_database("twofa_bench_reports") as url:
        ds = load(url, size.members, size.events, week, week_share)
        print(
            f"[{size.label}] loaded {size.members:,} members, {size.events:,} events in {ds.load_s:.1f} s "
            f"(login_history {ds.table_mb:.0f} MB with indexes)",
            flush=True,
        )
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        baseline_repeats = repeats if main_size else 1
        for i in range(repeats):  # interleaved, so that the machine's noise spreads over the paths alike
            for path in PATHS:
                if path == "report" or i < baseline_repeats:
                    results[path].append(child(path, url, ds))
        with_pyarrow = child("report", url, ds, pyarrow=True) if main_size else None
        check_agree({**results, "report with pyarrow": [with_pyarrow] if with_pyarrow else []}, size.label)
        imports = {path: child(f"imports-{path}", url, None)["peak_mb"] for path in PATHS}
        imports_with_pyarrow = child("imports-report", url, None, pyarrow=True)["peak_mb"] if main_size else None
        breakdown = child("breakdown", url, ds, explain=explain) if main_size else None
    out: dict[str, Any] = {
        "label": size.label,
        "members": size.members,
        "events": size.events,
        "load_s": round(ds.load_s, 1),
        "table_mb": round(ds.table_mb),
        "active_members": results["report"][0]["check"]["active_members"],
        "arrow_rows": results["arrow"][0]["rows"],
        "arrow_load_s": statistics.median(r["load_s"] for r in results["arrow"]),
        "imports_mb": imports,
    }
    for path in PATHS:
        out[path] = summarise(results[path])
        out[path]["increment_mb"] = out[path]["peak_mb"] - imports[path]
    out["summary"] = results["report"][0]["summary"]
    if breakdown is not None:
        out["breakdown"] = breakdown
    if with_pyarrow is not None:
        out["report_with_pyarrow"] = {
            "s": with_pyarrow["seconds"],
            "peak_mb": with_pyarrow["peak_mb"],
            "imports_mb": imports_with_pyarrow,
        }
    return out


def print_size(m: dict[str, Any]) -> None:
    print(
        f"[{m['label']}] {m['members']:,} members, {m['events']:,} events, {m['active_members']:,} active in the week"
    )
    for path, name in (("report", "report (build)"), ("sql", "SQL GROUP BY"), ("arrow", "Arrow + pandas")):
        r = m[path]
        print(
            f"    {name:<16} {r['s']:7.2f} s  (runs {r['s_all']}, own CPU {r['cpu_s']:.2f} s)   peak RSS "
            f"{r['peak_mb']:4.0f} MB  (import-only child {m['imports_mb'][path]:4.0f} MB, +{r['increment_mb']:.0f} MB)"
        )
        if r["stages"]:
            print("        " + ", ".join(f"{k} {v:.2f} s" for k, v in r["stages"].items()))
    if "report_with_pyarrow" in m:
        w = m["report_with_pyarrow"]
        print(
            f"    report with pyarrow importable (as in this venv; pandas then uses it): {w['s']:.2f} s (one run), "
            f"peak RSS {w['peak_mb']:.0f} MB (import-only child {w['imports_mb']:.0f} MB)"
        )
    loads = m["report"]["loadavg_1m"] + m["sql"]["loadavg_1m"] + m["arrow"]["loadavg_1m"]
    print(
        f"    arrow: {m['arrow_rows']:,} rows fetched; load average (1 min) after the runs: {min(loads)}-{max(loads)}"
    )


def print_breakdown(b: dict[str, Any]) -> None:
    print(f"\nwhere the report's time goes (one instrumented run, {b['seconds']:.2f} s):")
    for name, seconds in sorted(b["stages"].items(), key=lambda kv: kv[0]):
        print(f"    {name:<52} {seconds:7.3f} s")
    print("  statements (execute time; server-side cursors fetch later):")
    for s in b["statements"]:
        print(f"    {s['execute_s']:7.3f} s  {s['sql']}")
    for e in b["explained"]:
        lines = [ln for ln in e["plan"] if "Execution Time" in ln or "->" in ln or ln == e["plan"][0]]
        print(f"  EXPLAIN ANALYZE {e['what']} (measured execute {e['execute_s']:.2f} s):")
        for ln in lines[:14]:
            print(f"      {ln}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--fewer-events", type=int, default=1_250_000, help="the second size: same members")
    parser.add_argument("--fewer-members", type=int, default=5_000, help="the third size (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--week", default="2026-W49", help="the report week (ISO)")
    parser.add_argument("--week-share", type=float, default=0.5, help="share of the events in the report week")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the report's heavy statements")
    return parser.parse_args()


def goals(measured: list[dict[str, Any]]) -> dict[str, bool]:
    """Time against the faster baseline; peak RSS; memory that follows members (third size), not events (second)."""
    main_m, fewer_events = measured[0], measured[1]
    ratio = main_m["report"]["s"] / min(main_m["sql"]["s"], main_m["arrow"]["s"])
    big_inc, small_inc = main_m["report"]["increment_mb"], fewer_events["report"]["increment_mb"]
    events_flat = big_inc <= max(EVENTS_GROWTH_FACTOR * small_inc, small_inc + EVENTS_GROWTH_SLACK_MB)
    members_inc = measured[2]["report"]["increment_mb"] if len(measured) > 2 else None
    follows_members = members_inc is None or small_inc >= members_inc
    return {
        "report<=1.5x_fastest": ratio <= GOAL_RATIO,
        "peak<500MB": all(m["report"]["peak_mb"] < GOAL_PEAK_MB for m in measured),
        "memory_grows_with_members_not_events": events_flat and follows_members,
    }


def print_summary(measured: list[dict[str, Any]]) -> None:
    main_m = measured[0]
    report_s, sql_s, arrow_s = main_m["report"]["s"], main_m["sql"]["s"], main_m["arrow"]["s"]
    print(
        f"\nreport {report_s:.2f} s vs SQL GROUP BY {sql_s:.2f} s ({report_s / sql_s:.2f}x) and Arrow + pandas "
        f"{arrow_s:.2f} s ({report_s / arrow_s:.2f}x): {report_s / min(sql_s, arrow_s):.2f}x the faster baseline "
        f"(goal <= {GOAL_RATIO}x)"
    )
    for path in ("report", "arrow"):
        peaks = ", ".join(
            f"{m[path]['peak_mb']:.0f} MB (+{m[path]['increment_mb']:.0f}) at {m['members']:,} members, "
            f"{m['events']:,} events"
            for m in measured
        )
        print(
            f"{path} peak RSS (above the import-only child): {peaks}"
            + (f" (goal < {GOAL_PEAK_MB:.0f} MB)" if path == "report" else "")
        )


def r1(x: float) -> float:
    return round(x, 1)


def r3(x: float) -> float:
    return round(x, 3)


def result(args: argparse.Namespace, measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON line: the main size in full, every size in short, the goals."""
    main_m = measured[0]
    report_s, sql_s, arrow_s = main_m["report"]["s"], main_m["sql"]["s"], main_m["arrow"]["s"]
    return {
        "members": main_m["members"],
        "events": main_m["events"],
        "week_share": args.week_share,
        "load_s": main_m["load_s"],
        "report_s": r3(report_s),
        "sql_groupby_s": r3(sql_s),
        "arrow_pandas_s": r3(arrow_s),
        "arrow_load_s": r3(main_m["arrow_load_s"]),
        "report_cpu_s": r3(main_m["report"]["cpu_s"]),
        "loadavg_1m": sorted({x for p in PATHS for x in main_m[p]["loadavg_1m"]}),
        "report_vs_sql": r3(report_s / sql_s),
        "report_vs_arrow": r3(report_s / arrow_s),
        "report_vs_fastest": r3(report_s / min(sql_s, arrow_s)),
        "report_peak_mb": r1(main_m["report"]["peak_mb"]),
        "arrow_pandas_peak_mb": r1(main_m["arrow"]["peak_mb"]),
        "imports_only_peak_mb": {k: r1(v) for k, v in main_m["imports_mb"].items()},
        "report_with_pyarrow": {k: r3(v) for k, v in main_m["report_with_pyarrow"].items()},
        "report_stages_s": {k: r3(v) for k, v in main_m.get("breakdown", {}).get("stages", {}).items()},
        "sizes": [
            {
                "members": m["members"],
                "events": m["events"],
                "report_s": r3(m["report"]["s"]),
                "report_peak_mb": r1(m["report"]["peak_mb"]),
                "report_increment_mb": r1(m["report"]["increment_mb"]),
                "sql_groupby_s": r3(m["sql"]["s"]),
                "arrow_pandas_s": r3(m["arrow"]["s"]),
            }
            for m in measured
        ],
        "goals": goals(measured),
    }


def main() -> int:
    args = parse_args()
    week = IsoWeek.parse(args.week)
    sizes = [Size(args.members, args.events, "main"), Size(args.members, args.fewer_events, "fewer events")]
    if args.fewer_members:
        sizes.append(Size(args.fewer_members, args.fewer_events, "fewer members"))
    t_start = time.perf_counter()
    measured = []
    for i, size in enumerate(sizes):
        measured.append(measure(size, args.repeats, i == 0, week, args.week_share, args.explain))
        print_size(measured[-1])
    if "breakdown" in measured[0]:
        print_breakdown(measured[0]["breakdown"])
    print_summary(measured)
    print(f"total wall time {time.perf_counter() - t_start:.0f} s")
    print(json.dumps(result(args, measured)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
