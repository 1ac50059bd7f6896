"""The organisations, users and memberships of ``bench/bench_policies.py``: generated in Python with a fixed seed,
bulk-loaded with COPY.

Not named ``bench_*.py``: ``make bench`` runs every ``bench/bench_*.py`` as a benchmark.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from policies.rules import DEFAULT_ROLES

SEED = 20261130
DAY = timedelta(days=1)


@dataclass
class Population:
    """Rows for COPY, ids explicit. Users in the first rows of ``memberships`` each belong to one organisation; the
    last 5% of the memberships go to users who already belong to another one."""

    orgs: list[tuple[Any, ...]] = field(default_factory=list)
    users: list[tuple[Any, ...]] = field(default_factory=list)
    memberships: list[tuple[Any, ...]] = field(default_factory=list)
    policies: list[tuple[Any, ...]] = field(default_factory=list)
    policy_roles: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)


ROLE_MIX = (("owner", 0.01), ("admin", 0.03), ("super_admin", 0.01), ("finance", 0.03))  # the rest: member


def _role(rng: Any) -> str:
    x = rng.random()
    for role, share in ROLE_MIX:
        if x < share:
            return role
        x -= share
    return "member"


def _org_sizes(rng: Any, members: int, orgs: int) -> list[int]:
    """Skewed sizes (log-normal): many small organisations, a few large ones; at least 3 members each."""
    if members < 3 * orgs:
        raise ValueError(f"{members} members cannot fill {orgs} organisations of at least 3")
    weights = [rng.lognormvariate(0.0, 1.0) for _ in range(orgs)]
    total = sum(weights)
    sizes = [max(3, round(members * w / total)) for w in weights]
    diff = members - sum(sizes)
    while diff:
        j = rng.randrange(orgs)
        if diff > 0:
            sizes[j] += 1
            diff -= 1
        elif sizes[j] > 3:
            sizes[j] -= 1
            diff += 1
    return sizes


def generate(members: int, orgs: int, now: datetime, password_hash: str) -> Population:
    """A realistic mix: 2% of organisations on SSO; 60 with a policy row (15 switched off, 20 requiring an app for
    owners and admins, 15 covering every member, 10 owners and admins only without escalation), the rest on the
    default policy. 8% of members in the default policy's roles. 60% of users enrolled (a fifth of them by email);
    of those not enrolled, 5% disabled 2FA in the last 30 days and 0.5% were reset by support. Joined over the past
    60 days, so most of those subject to a policy are past a 14-day grace period and some are still pending."""
    import random

    rng = random.Random(SEED + members)
    pop = Population()
    sso = _add_orgs(pop, rng, orgs, now)
    _add_policies(pop, rng, [j for j in range(1, orgs + 1) if j not in sso], now)
    n_users = members - members // 20
    _add_users(pop, rng, n_users, now, password_hash)
    _add_memberships(pop, rng, _org_sizes(rng, members, orgs), n_users, now)
    return pop


def _add_orgs(pop: Population, rng: Any, orgs: int, now: datetime) -> set[int]:
    """The organisations; the ids of those on SSO."""
    sso = set()
    for j in range(1, orgs + 1):
        idp = rng.choice(("okta", "azure-ad")) if rng.random() < 0.02 else None
        if idp:
            sso.add(j)
        pop.orgs.append((j, f"org-{j}", f"Organisation {j}", idp, now - rng.uniform(90, 1500) * DAY))
    return sso


def _add_policies(pop: Population, rng: Any, candidates: list[int], now: datetime) -> None:
    org_created = {row[0]: row[4] for row in pop.orgs}
    for k, org_id in enumerate(rng.sample(candidates, 60)):
        enabled_at = org_created[org_id]
        if k < 15:
            kind, required, grace, days, escalate = set(DEFAULT_ROLES), False, 14, [7, 3, 1], True
            totp_only: set[str] = set()
        elif k < 35:
            kind, required, grace, days, escalate = set(DEFAULT_ROLES), True, 14, [7, 3, 1], True
            totp_only = {"owner", "admin"}
            enabled_at = now - rng.uniform(1, 40) * DAY  # switched on recently: a fresh grace period
        elif k < 50:
            kind, required, grace, days, escalate = set(DEFAULT_ROLES) | {"member"}, True, 30, [14, 7, 1], True
            totp_only = set()
            enabled_at = now - rng.uniform(1, 60) * DAY
        else:
            kind, required, grace, days, escalate = {"owner", "admin"}, True, 7, [3, 1], False
            totp_only = set()
        pop.policies.append(
            (org_id, required, grace, json.dumps(days), escalate, "enrol_only", 1, enabled_at, now, "bench")
        )
        pop.policy_roles += [(org_id, role, role in totp_only) for role in sorted(kind)]


def _add_users(pop: Population, rng: Any, n_users: int, now: datetime, password_hash: str) -> None:
    for u in range(1, n_users + 1):
        x = rng.random()
        method = None if x < 0.40 else ("totp" if x < 0.88 else "email")
        enabled_at = now - rng.uniform(0, 400) * DAY if method else None
        created = now - rng.uniform(61, 700) * DAY
        pop.users.append((u, f"user-{u}@bench.example", password_hash, created, method, enabled_at))
        if method:
            pop.audit.append((len(pop.audit) + 1, enabled_at, "2fa_enabled", u, None, None, "{}"))
        elif x < 0.02:
            pop.audit.append((len(pop.audit) + 1, now - rng.uniform(0, 30) * DAY, "2fa_disabled", u, None, None, "{}"))
        elif x < 0.022:
            at = now - rng.uniform(0, 30) * DAY
            pop.audit.append((len(pop.audit) + 1, at, "2fa_reset_by_support", u, None, "support:bench", "{}"))


def _add_memberships(pop: Population, rng: Any, sizes: list[int], n_users: int, now: datetime) -> None:
    """The first ``n_users`` memberships, one per user; the rest to users who already belong elsewhere."""
    org_of = [j + 1 for j, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(org_of)
    in_org: dict[int, set[int]] = {}
    for i, org_id in enumerate(org_of):
        seen = in_org.setdefault(org_id, set())
        if i < n_users:
            user_id = i + 1
        else:
            user_id = rng.randint(1, n_users)
            while user_id in seen:
                user_id = rng.randint(1, n_users)
        role = "owner" if not seen else _role(rng)
        seen.add(user_id)
        joined = now - rng.uniform(0, 60) * DAY
        changed = joined + (now - joined) * rng.random() if rng.random() < 0.05 else None
        pop.memberships.append((i + 1, org_id, user_id, role, joined, changed))


def due_population(count: int, now: datetime, password_hash: str) -> Population:
    """``count`` members of 100 organisations (default policy), in a required role, not enrolled, joined 8 to 10
    days ago: with the 14-day grace period their deadline is 4 to 6 days away and the "7 days before" reminder is
    due now (nobody is overdue, so the run writes no escalations)."""
    import random

    rng = random.Random(SEED)
    pop = Population()
    pop.orgs = [(j, f"due-{j}", f"Organisation {j}", None, now - 400 * DAY) for j in range(1, 101)]
    for u in range(1, count + 1):
        pop.users.append((u, f"member-{u}@bench.example", password_hash, now - 30 * DAY, None, None))
        joined = now - rng.uniform(8, 10) * DAY
        pop.memberships.append((u, (u - 1) % 100 + 1, u, "finance", joined, None))
    return pop


COPY_COLUMNS = {
    "orgs": "organizations (id, slug, name, sso_idp, created_at)",
    "users": "users (id, email, password_hash, created_at, twofa_method, twofa_enabled_at)",
    "memberships": "memberships (id, org_id, user_id, role, created_at, role_changed_at)",
    "policies": (
        "org_policies (org_id, required, grace_days, reminder_days, escalate, after_deadline, disable_grace_days,"
        " enabled_at, updated_at, updated_by)"
    ),
    "policy_roles": "org_policy_roles (org_id, role, totp_only)",
    "audit": "audit_log (id, at, event, user_id, org_id, actor, details)",
}
SEQUENCES = ("organizations", "users", "memberships", "audit_log")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def load(url: str, pop: Population) -> float:
    """COPY every table, move the id sequences past the explicit ids, ANALYZE; returns the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(libpq_url(url)) as conn:
        with conn.cursor() as cur:
            for name, target in COPY_COLUMNS.items():
                rows = getattr(pop, name)
                if not rows:
                    continue
                with cur.copy(f"COPY {target} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            for table in SEQUENCES:
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
                )
        conn.commit()
        analyze(conn)
    return time.monotonic() - started


def analyze(conn: psycopg.Connection[Any], vacuum: bool = False) -> None:
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    conn.autocommit = False


def analyze_url(url: str, vacuum: bool = False) -> None:
    with psycopg.connect(libpq_url(url)) as conn:
        analyze(conn, vacuum)
