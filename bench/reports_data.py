"""Synthetic data for ``bench/bench_reports.py``: one organisation, its members, and a login history, generated
inside PostgreSQL (``INSERT ... SELECT generate_series``), so nothing crosses the wire row by row.

The login history covers the 8 weeks of the report's trend (the report week and the 7 before it). A share of the
events (``week_share``, 0.5 by default) falls in the report week, the rest evenly over the 7 weeks before. ``at``
grows with the row id, as in a real append-only log, so the table is physically ordered by time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from reports.week import IsoWeek

TREND_WEEKS = 8
CHUNK = 500_000  # login events per INSERT statement
LOADERS = 2  # INSERT statements at once, each in its own connection
# The user agents of a realistic login history: a few long strings repeated.
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
]


@dataclass(frozen=True)
class Dataset:
    org_id: int
    members: int
    events: int
    week: IsoWeek
    now: datetime
    load_s: float
    table_mb: float


def _psycopg_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _insert_events(url: str, lo: int, hi: int, params: dict[str, Any]) -> None:
    """Rows ``lo..hi`` (1-based) of the login history, in their own connection (several run at once)."""
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (1 / (1 + lo),))
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute(
            """
            INSERT INTO login_history (at, user_id, email, ip, user_agent, outcome, method, "2fa_verified")
            SELECT e.at, u.id, u.email,
                   '10.' || (u.id %% 200) || '.' || (e.g %% 250) || '.' || (e.g %% 7 + 1),
                   (%(agents)s::text[])[1 + u.id %% 4],
                   CASE WHEN u.twofa_method IS NULL THEN
                            CASE WHEN e.r < 0.08 THEN 'enrolment_required' WHEN e.r < 0.80 THEN 'success'
                                 ELSE 'invalid_credentials' END
                        WHEN e.r < 0.78 THEN 'success' WHEN e.r < 0.86 THEN 'invalid_credentials'
                        WHEN e.r < 0.92 THEN 'second_factor_required' WHEN e.r < 0.97 THEN 'bad_code'
                        WHEN e.r < 0.98 THEN 'code_reused' WHEN e.r < 0.99 THEN 'malformed_code'
                        WHEN e.r < 0.995 THEN 'locked' ELSE 'challenge_invalid' END,
                   CASE WHEN u.twofa_method IS NULL OR (e.r >= 0.78 AND e.r < 0.86) THEN 'password'
                        WHEN e.r < 0.78 AND e.r2 < 0.03 THEN 'backup_code'
                        ELSE u.twofa_method END,
                   u.twofa_method IS NOT NULL AND e.r < 0.78
            FROM (
                SELECT g,
                       CASE WHEN g <= %(before)s
                            THEN %(first)s + (g - 1) * (interval '7 days' * %(prior_weeks)s / %(before_div)s)
                            ELSE %(week_start)s + (g - %(before)s - 1) * (interval '7 days' / %(in_week)s) END AS at,
                       %(first_uid)s + floor(random() * %(n_users)s)::int AS uid,
                       random() AS r, random() AS r2
                FROM generate_series(%(lo)s, %(hi)s) AS g
            ) e JOIN users u ON u.id = e.uid
            """,
            {**params, "lo": lo, "hi": hi},
        )


# Users: 97% joined before the trend window, 3% during it; 55% TOTP, 15% email codes, 30% without 2FA.
USERS_SQL = """
INSERT INTO users (email, password_hash, created_at, twofa_method, twofa_enabled_at,
                   second_factor_failures)
SELECT 'user' || lpad(g::text, 6, '0') || '@bench.example', '$argon2id$v=19$bench', created,
       CASE WHEN h < 0.55 THEN 'totp' WHEN h < 0.70 THEN 'email' END,
       CASE WHEN h < 0.70 THEN least(created + random() * interval '20 days', %(now)s - interval '1 day')
       END,
       0
FROM (
    SELECT g, random() AS h,
           CASE WHEN random() < 0.97
                THEN %(first)s - interval '30 days' - random() * interval '400 days'
                ELSE %(first)s + random() * %(window_days)s * interval '1 day' END AS created
    FROM generate_series(1, %(n)s) AS g
) s
ORDER BY g
"""

# Memberships: 3 owners, ~1% admins, 0.5% super admins, 2% finance, the rest members.
MEMBERSHIPS_SQL = """
INSERT INTO memberships (org_id, user_id, role, created_at, role_changed_at)
SELECT %(org)s, u.id,
       CASE WHEN u.rn <= 3 THEN 'owner' WHEN r < 0.010 THEN 'admin' WHEN r < 0.015 THEN 'super_admin'
            WHEN r < 0.035 THEN 'finance' ELSE 'member' END,
       u.created_at + interval '1 hour',
       CASE WHEN random() < 0.02 THEN %(first)s + random() * %(window_days)s * interval '1 day' END
FROM (SELECT id, created_at, row_number() OVER (ORDER BY id) AS rn, random() AS r FROM users) u
ORDER BY u.id
"""

# The audit trail the trend reads: 2FA switched on (for those who did it in the window), 2FA switched off
# by 1% of the members without it, and second-factor lockouts in the report week.
AUDIT_SQL = """
INSERT INTO audit_log (at, event, user_id, org_id, actor, details)
SELECT twofa_enabled_at, '2fa_enabled', id, NULL::int, NULL::text, '{"method": "x"}'::json
FROM users WHERE twofa_enabled_at >= %(first)s
UNION ALL
SELECT %(first)s + random() * %(window_days)s * interval '1 day', '2fa_disabled', id, NULL, NULL,
       '{}'::json
FROM users WHERE twofa_method IS NULL AND random() < 0.03
UNION ALL
SELECT %(week_start)s + random() * interval '7 days', 'second_factor_locked', id, NULL, NULL, '{}'::json
FROM users WHERE twofa_method IS NOT NULL AND random() < 0.02
"""

# Reminders already sent to privileged members without 2FA.
REMINDERS_SQL = """
INSERT INTO outbox (template, queue, to_address, user_id, org_id, context, status, created_at,
                    attempts, message_id)
SELECT 'policy_reminder', 'mail', u.email, u.id, m.org_id, '{}'::json, 'sent',
       %(week_start)s - k * interval '3 days', 1,
       '<reminder-' || m.id || '-' || k || '@bench.example>'
FROM memberships m JOIN users u ON u.id = m.user_id, generate_series(1, 2) AS k
WHERE m.role <> 'member' AND u.twofa_method IS NULL
"""


def load(url: str, members: int, events: int, week: IsoWeek, week_share: float = 0.5) -> Dataset:
    """Fill a fresh, migrated database. Returns what the report needs to run on it."""
    first = week.minus(TREND_WEEKS - 1).start
    now = week.end + timedelta(hours=6)  # the report runs the Monday morning after its week
    window = {"first": first, "window_days": (week.end - first).days, "week_start": week.start}
    t0 = time.perf_counter()
    with psycopg.connect(_psycopg_url(url), autocommit=True) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute("SET maintenance_work_mem = '512MB'")
        org_id = conn.execute(
            "INSERT INTO organizations (slug, name, sso_idp, created_at) "
            "VALUES ('bench', 'Bench Org', NULL, %s) RETURNING id",
            (first - timedelta(days=500),),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(USERS_SQL, {"n": members, "now": now, **window})
        conn.execute(MEMBERSHIPS_SQL, {"org": org_id, **window})
        conn.execute(AUDIT_SQL, window)
        conn.execute(REMINDERS_SQL, window)
        _load_history(conn, url, events, int(events * week_share), window)
        table_bytes = conn.execute("SELECT pg_total_relation_size('login_history')").fetchone()[0]  # type: ignore[index]
    return Dataset(
        org_id=org_id,
        members=members,
        events=events,
        week=week,
        now=now,
        load_s=time.perf_counter() - t0,
        table_mb=table_bytes / 2**20,
    )


def _load_history(conn: psycopg.Connection[Any], url: str, events: int, in_week: int, window: dict[str, Any]) -> None:
    """The login history, in chunks on parallel connections. Users with 2FA: 78% success (3% of them with a backup
    code), 8% wrong password, 6% abandoned at the second factor, 5% bad code, 1% each reused and malformed codes,
    0.5% locked. Users without: 80% success (10% of those 'enrolment_required'), 20% wrong password."""
    first_uid, n_users = conn.execute("SELECT min(id), count(*) FROM users").fetchone()  # type: ignore[misc]
    # Bulk-load settings for this one statement: the secondary indexes are built afterwards, and the per-row
    # foreign-key trigger on user_id is skipped (session_replication_role; the join makes every user_id valid).
    conn.execute("ALTER TABLE login_history SET (autovacuum_enabled = false)")
    conn.execute("SET session_replication_role = replica")
    conn.execute("DROP INDEX ix_login_history_user_at")
    conn.execute("DROP INDEX ix_login_history_at")
    before = events - in_week
    params = {
        "agents": USER_AGENTS,
        "before": before,
        "before_div": max(before, 1),
        "prior_weeks": TREND_WEEKS - 1,
        "first": window["first"],
        "week_start": window["week_start"],
        "in_week": max(in_week, 1),
        "first_uid": first_uid,
        "n_users": n_users,
    }
    chunks = [(lo, min(lo + CHUNK - 1, events)) for lo in range(1, events + 1, CHUNK)]
    with ThreadPoolExecutor(LOADERS) as pool:
        for _ in pool.map(lambda c: _insert_events(url, c[0], c[1], params), chunks):
            pass
    conn.execute("SET session_replication_role = DEFAULT")
    conn.execute('CREATE INDEX ix_login_history_user_at ON login_history (user_id, "at")')
    conn.execute('CREATE INDEX ix_login_history_at ON login_history ("at")')
    conn.execute("ALTER TABLE login_history RESET (autovacuum_enabled)")
    conn.execute("VACUUM ANALYZE")
