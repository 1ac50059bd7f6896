"""The measured paths of ``bench/bench_reports.py``, each run in a fresh child process so that its peak RSS
(``VmHWM``) is its own:

- ``report``: ``reports.build.build(session, org, week, now)``, the real thing (extract + render);
- ``sql``: a plain SQL ``GROUP BY`` over the login history (psycopg, two statements, results fetched);
- ``arrow``: a bare Arrow load of the raw events (ADBC ``fetch_arrow_table``), then a pandas ``groupby``;
- ``breakdown``: the report once more, with every stage timed (and, with ``explain``, its statements on
  ``login_history`` run again under ``EXPLAIN ANALYZE``);
- ``imports-<path>``: only the imports of a path, for the RSS a child has before it does anything.

The report runs without pyarrow (as installed, the service has none), unless the spec says ``"pyarrow": true``.

    python bench/reports_paths.py '{"mode": "report", "url": ..., "org_id": 1, "week": "2026-W49", "now": ...}'

prints one JSON object on its last line: seconds (the measured call only, imports and connecting excluded), this
process's CPU seconds in that call (the rest of the wall time is PostgreSQL working, or the machine busy with
others), peak RSS in MB, the RSS before the call, and the figures the path computed (so the orchestrator can check
they agree).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.update(
    TWOFA_SECRET_KEY=os.environ.get("TWOFA_SECRET_KEY", "bench-key-0123456789-abcdefghijklmnopqrstuvwxyz"),
    TWOFA_ARGON2_TIME_COST="1",
    TWOFA_ARGON2_MEMORY_COST="256",
    TWOFA_ARGON2_PARALLELISM="1",
)

# The same predicates as reports/extract.py.
SIGNED_IN = ("success", "enrolment_required")
FAILED_2FA = ("bad_code", "code_reused", "malformed_code", "locked")
COUNTS = ["signed_in", "verified", "unverified", "failed_password", "failed_2fa", "backup_codes_used"]
TREND_WEEKS = 8
WEEK_S = 7 * 86400


class _HidePyarrow(importlib.abc.MetaPathFinder):
    """``import pyarrow`` fails, as it does where the service is installed: pyarrow is a bench-only dependency, and
    pandas imports it when it can (about 60 MB more RSS, and pyarrow-backed strings)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by bench/reports_paths.py)", name=name)


def rss_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident set size, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def pg_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def fingerprint(per_member: Iterator[tuple[int, ...]], trend: list[tuple[int, int]]) -> dict[str, Any]:
    """What every path must agree on: per count, its total, its sum of squares over members, and the number of
    members with a non-zero row; per trend week, signed-in and verified logins."""
    totals = [0] * len(COUNTS)
    squares = [0] * len(COUNTS)
    active = 0
    for row in per_member:
        if any(row):
            active += 1
        for i, v in enumerate(row):
            totals[i] += int(v)
            squares[i] += int(v) * int(v)
    return {
        "active_members": active,
        "totals": dict(zip(COUNTS, totals, strict=True)),
        "squares": dict(zip(COUNTS, squares, strict=True)),
        "trend": [[int(a), int(b)] for a, b in trend],
    }


def _window(spec: dict[str, Any]) -> tuple[datetime, datetime, datetime]:
    from reports.week import IsoWeek

    week = IsoWeek.parse(spec["week"])
    return week.minus(TREND_WEEKS - 1).start, week.start, week.end


# --- the paths -------------------------------------------------------------------------------------------------


def imports_report() -> None:
    import policies  # noqa: F401  (as every edge of the service does)
    import reports.build
    import reports.models  # noqa: F401


def run_report(spec: dict[str, Any]) -> dict[str, Any]:
    imports_report()
    import io

    import pandas as pd
    from sqlalchemy.orm import Session

    from reports.build import build
    from reports.week import IsoWeek
    from twofa.db import get_engine
    from twofa.models import Organization

    week, now = IsoWeek.parse(spec["week"]), datetime.fromisoformat(spec["now"])
    with Session(get_engine(spec["url"])) as session:
        org = session.get(Organization, spec["org_id"])
        assert org is not None
        before = rss_mb()
        c0, t0 = time.process_time(), time.perf_counter()
        rendered = build(session, org, week, now)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = rss_mb()
    activity = pd.read_csv(io.BytesIO(rendered.csv["activity.csv"]))
    trend = pd.read_csv(io.BytesIO(rendered.csv["trend.csv"]))
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_mb": peak,
        "before_mb": before,
        "check": fingerprint(
            activity[COUNTS].itertuples(index=False, name=None),
            list(zip(trend["signed_in"], trend["verified"], strict=True)),
        ),
        "summary": {k: v for k, v in rendered.summary.items() if isinstance(v, int | float | None)},
        "html_kb": len(rendered.html) / 1024,
    }


def imports_sql() -> None:
    import psycopg  # noqa: F401


SQL_MEMBERS = """
SELECT l.user_id,
       count(*) FILTER (WHERE l.outcome = ANY(%(signed)s)),
       count(*) FILTER (WHERE l.outcome = ANY(%(signed)s) AND l."2fa_verified"),
       count(*) FILTER (WHERE l.outcome = ANY(%(signed)s) AND NOT l."2fa_verified"),
       count(*) FILTER (WHERE l.outcome = 'invalid_credentials'),
       count(*) FILTER (WHERE l.outcome = ANY(%(failed_2fa)s)),
       count(*) FILTER (WHERE l.outcome = 'success' AND l.method = 'backup_code')
FROM login_history l JOIN memberships m ON m.user_id = l.user_id AND m.org_id = %(org)s
WHERE l.at >= %(start)s AND l.at < %(end)s
GROUP BY l.user_id
"""
# date_bin, not floor(extract(epoch ...)): extract returns numeric, which made this statement twice as slow.
SQL_TREND = """
SELECT date_bin('7 days', l.at, %(first)s) AS week,
       count(*) FILTER (WHERE l.outcome = ANY(%(signed)s)),
       count(*) FILTER (WHERE l.outcome = ANY(%(signed)s) AND l."2fa_verified")
FROM login_history l JOIN memberships m ON m.user_id = l.user_id AND m.org_id = %(org)s
WHERE l.at >= %(first)s AND l.at < %(end)s
GROUP BY 1 ORDER BY 1
"""


def run_sql(spec: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    first, start, end = _window(spec)
    params = {
        "signed": list(SIGNED_IN),
        "failed_2fa": list(FAILED_2FA),
        "org": spec["org_id"],
        "first": first,
        "start": start,
        "end": end,
    }
    with psycopg.connect(pg_url(spec["url"])) as conn:
        before = rss_mb()
        c0, t0 = time.process_time(), time.perf_counter()
        members = conn.execute(SQL_MEMBERS, params).fetchall()
        t1 = time.perf_counter()
        trend = conn.execute(SQL_TREND, params).fetchall()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = rss_mb()
    by_week = {(w - first) // timedelta(weeks=1): (s, v) for w, s, v in trend}
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "stages": {"members statement": t1 - t0, "trend statement": t0 + seconds - t1},
        "peak_mb": peak,
        "before_mb": before,
        "check": fingerprint((tuple(r[1:]) for r in members), [by_week.get(w, (0, 0)) for w in range(TREND_WEEKS)]),
    }


def imports_arrow() -> None:
    import adbc_driver_postgresql.dbapi  # type: ignore[import-untyped]  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow  # type: ignore[import-untyped]  # noqa: F401


def run_arrow(spec: dict[str, Any]) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as adbc
    import numpy as np
    import pandas as pd

    first, _, end = _window(spec)
    query = (
        'SELECT l.user_id, l.at, l.outcome, l.method, l."2fa_verified" AS verified '
        "FROM login_history l JOIN memberships m ON m.user_id = l.user_id AND m.org_id = "
        f"{int(spec['org_id'])} WHERE l.at >= '{first.isoformat()}' AND l.at < '{end.isoformat()}'"
    )
    with adbc.connect(pg_url(spec["url"])) as conn, conn.cursor() as cur:
        before = rss_mb()
        c0, t0 = time.process_time(), time.perf_counter()
        cur.execute(query)
        table = cur.fetch_arrow_table()
        load_s = time.perf_counter() - t0
        events = pd.DataFrame(table.to_pandas())
        del table
        outcome = events["outcome"]
        signed = outcome.isin(SIGNED_IN).to_numpy()
        verified = events["verified"].to_numpy(dtype=bool)
        week_no = ((events["at"] - pd.Timestamp(first)) // pd.Timedelta(weeks=1)).to_numpy()
        in_week = week_no == TREND_WEEKS - 1
        flags = pd.DataFrame(
            {
                "user_id": events["user_id"].to_numpy()[in_week],
                "signed_in": signed[in_week],
                "verified": (signed & verified)[in_week],
                "unverified": (signed & ~verified)[in_week],
                "failed_password": (outcome == "invalid_credentials").to_numpy()[in_week],
                "failed_2fa": outcome.isin(FAILED_2FA).to_numpy()[in_week],
                "backup_codes_used": ((outcome == "success") & (events["method"] == "backup_code")).to_numpy()[in_week],
            }
        )
        per_member = flags.groupby("user_id").sum().astype("int64")
        trend = (
            pd.DataFrame({"week": week_no, "signed_in": signed, "verified": signed & verified})
            .groupby("week")
            .sum()
            .reindex(np.arange(TREND_WEEKS), fill_value=0)
        )
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = rss_mb()
        rows = len(events)
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "stages": {"Arrow load (ADBC)": load_s, "pandas": seconds - load_s},
        "load_s": load_s,
        "rows": rows,
        "peak_mb": peak,
        "before_mb": before,
        "check": fingerprint(
            per_member[COUNTS].itertuples(index=False, name=None),
            list(zip(trend["signed_in"], trend["verified"], strict=True)),
        ),
    }


def _timed(stages: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, its time added to ``stages[name]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def _timed_iter(stages: dict[str, float], name: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """The generator ``fn``, the time of each step added to ``stages[name]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        it = fn(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            item = next(it, StopIteration)
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
            if item is StopIteration:
                return
            yield item

    return wrapper


def _time_stages(stages: dict[str, float]) -> None:
    """Wrap (never change) the functions the report calls, so that each stage's time lands in ``stages``."""
    import policies.members
    import reports.build
    import reports.compute
    import reports.extract
    import reports.render

    def wrap(module: Any, attr: str, name: str, how: Callable[..., Any] = _timed) -> None:
        setattr(module, attr, how(stages, name, getattr(module, attr)))

    wrap(policies.members, "evaluate", "extract.members: evaluate() (SQL + verdicts)", _timed_iter)
    for attr in ("members", "logins", "lockouts", "trend_logins", "toggles"):
        wrap(reports.extract, attr, f"extract.{attr}")
    wrap(reports.build, "extract", "extract (total)")
    wrap(reports.build, "render", "render (total)")
    wrap(reports.render, "trend_png", "render: matplotlib chart")
    wrap(reports.render, "_csv", "render: to_csv")
    compute = ("coverage_by_role", "coverage_by_method", "non_compliant", "activity", "privileged_unverified")
    for name in (*compute, "trend", "summary"):
        wrap(reports.compute, name, "render: compute.* (pandas)")


def _record_statements(engine: Any) -> list[dict[str, Any]]:
    """Every statement ``engine`` runs from now on, with its parameters and execution time."""
    from sqlalchemy import event

    statements: list[dict[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        elapsed = time.perf_counter() - conn.info.pop("t0")
        statements.append({"sql": statement, "params": parameters, "execute_s": elapsed})

    return statements


def _explain(url: str, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements on ``login_history`` run again under ``EXPLAIN ANALYZE``."""
    import psycopg

    explained = []
    with psycopg.connect(pg_url(url)) as conn:
        for s in (s for s in statements if "login_history" in s["sql"]):
            rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + s["sql"], s["params"]).fetchall()
            what = "trend_logins" if s["sql"].count("CASE") > 8 else "logins"
            explained.append({"what": what, "execute_s": s["execute_s"], "plan": [r[0] for r in rows]})
    return explained


def run_breakdown(spec: dict[str, Any]) -> dict[str, Any]:
    """The report once, with its stages timed (and, with ``explain``, its heavy statements explained)."""
    imports_report()
    from sqlalchemy.orm import Session

    import reports.build
    from reports.week import IsoWeek
    from twofa.db import get_engine
    from twofa.models import Organization

    stages: dict[str, float] = {}
    _time_stages(stages)
    engine = get_engine(spec["url"])
    statements = _record_statements(engine)
    week, now = IsoWeek.parse(spec["week"]), datetime.fromisoformat(spec["now"])
    with Session(engine) as session:
        org = session.get(Organization, spec["org_id"])
        assert org is not None
        statements.clear()
        t0 = time.perf_counter()
        reports.build.build(session, org, week, now)
        total = time.perf_counter() - t0
    rendered_parts = sum(v for k, v in stages.items() if k.startswith("render:"))
    stages["render: rest (template, to_datetime, dicts)"] = stages["render (total)"] - rendered_parts
    return {
        "seconds": total,
        "stages": stages,
        "statements": [{"execute_s": s["execute_s"], "sql": " ".join(s["sql"].split())[:100]} for s in statements],
        "explained": _explain(spec["url"], statements) if spec.get("explain") else [],
    }


MODES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "report": run_report,
    "sql": run_sql,
    "arrow": run_arrow,
    "breakdown": run_breakdown,
}
IMPORTS: dict[str, Callable[[], None]] = {"report": imports_report, "sql": imports_sql, "arrow": imports_arrow}


def main() -> None:
    spec = json.loads(sys.argv[1])
    mode = spec["mode"]
    if mode in ("report", "breakdown", "imports-report") and not spec.get("pyarrow"):
        sys.meta_path.insert(0, _HidePyarrow())
    if mode.startswith("imports-"):
        IMPORTS[mode.removeprefix("imports-")]()
        out: dict[str, Any] = {"peak_mb": rss_mb()}
    else:
        out = MODES[mode](spec)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
