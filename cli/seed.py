"""``twofa seed``: sample organisations, members and eight weeks of sign-ins, to try policies and reports on."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import typer
from rich.progress import track

from twofa import accounts, enrolment, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import LoginHistory, Role, User

ROLES = [Role.OWNER, Role.ADMIN, Role.SUPER_ADMIN, Role.FINANCE, *[Role.MEMBER] * 6]
PASSWORD = "seeded password"  # noqa: S105 (sample data)


def _history(user: User, rng: random.Random, start: datetime, enrolled: bool) -> list[LoginHistory]:
    rows = []
    for _ in range(rng.randint(3, 30)):
        at = start + timedelta(seconds=rng.randint(0, 56 * 86400))
        outcome = rng.choices(["success", "invalid_credentials", "bad_code"], weights=[85, 10, 5 if enrolled else 0])[0]
        verified = enrolled and outcome == "success"
        method = ("backup_code" if rng.random() < 0.03 else user.twofa_method) if verified else "password"
        rows.append(
            LoginHistory(
                at=at,
                user_id=user.id,
                email=user.email,
                ip=f"198.51.100.{rng.randint(1, 254)}",
                user_agent="seed",
                outcome=outcome,
                method=method,
                twofa_verified=verified,
            )
        )
    return rows


def seed(
    orgs: int = typer.Option(3, min=1, max=200, help="Organisations to create."),
    members: int = typer.Option(20, min=1, max=5000, help="Members per organisation."),
    enrolled: float = typer.Option(0.6, min=0, max=1, help="Share of members with an authenticator app."),
    seed_value: int = typer.Option(7, "--seed", help="Random seed (the same seed gives the same data)."),
) -> None:
    """Create sample data. Every member's password is 'seeded password'."""
    rng = random.Random(seed_value)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(weeks=8)
    created = 0
    for o in track(range(orgs), description="seeding"):
        with transaction() as s:
            slug = f"sample-{o + 1}"
            org = accounts.get_org(s, slug) or accounts.create_org(
                s, slug, name=f"Sample {o + 1}", sso_idp="okta" if o % 5 == 4 else None, clock=FrozenClock(start)
            )
            for m in range(members):
                email = f"user{m + 1}@{slug}.example"
                if accounts.get_user(s, email) is not None:
                    continue
                clock = FrozenClock(start + timedelta(days=rng.randint(0, 40)))
                user = accounts.create_user(s, email, PASSWORD, clock=clock)
                accounts.add_member(s, org, user, ROLES[m % len(ROLES)].value, clock=clock)
                on = org.sso_idp is None and rng.random() < enrolled
                if on:
                    started = enrolment.start_totp(s, user, PASSWORD, clock=clock)
                    enrolment.confirm_totp(s, user, totp.code_at(started.secret, clock.now()), clock=clock)
                s.add_all(_history(user, rng, start, on))
                created += 1
    typer.echo(f"created {created} members in {orgs} organisation(s) (password: {PASSWORD!r})")
