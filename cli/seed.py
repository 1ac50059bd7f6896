"""``twofa seed``: sample organisations, members and eight weeks of sign-ins, to try policies and reports on.

Sample members are written in bulk, a few statements per organisation. Their password is hashed once for the run;
members with an app get a confirmed device and the audit row of turning 2FA on, but no backup codes (nobody could
read them) and no "2FA turned on" email (their addresses are not real).
"""

from __future__ import annotations

import random
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.progress import track
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from twofa import accounts, audit, crypto, totp
from twofa.clock import FrozenClock
from twofa.db import transaction
from twofa.models import LoginHistory, Membership, Organization, Role, TotpDevice, TwoFactorMethod, User
from twofa.passwords import hash_password

ROLES = [Role.OWNER, Role.ADMIN, Role.SUPER_ADMIN, Role.FINANCE, *[Role.MEMBER] * 6]


@dataclass(frozen=True)
class Sample:
    """One new member, drawn before anything is written."""

    email: str
    role: str
    joined: datetime
    enrolled: bool


def _history(user_id: int, email: str, enrolled: bool, rng: random.Random, start: datetime) -> list[dict[str, Any]]:
    rows = []
    for _ in range(rng.randint(3, 30)):
        outcome = rng.choices(["success", "invalid_credentials", "bad_code"], weights=[85, 10, 5 if enrolled else 0])[0]
        verified = enrolled and outcome == "success"
        method = ("backup_code" if rng.random() < 0.03 else TwoFactorMethod.TOTP.value) if verified else "password"
        rows.append(
            {
                "at": start + timedelta(seconds=rng.randint(0, 56 * 86400)),
                "user_id": user_id,
                "email": email,
                "ip": f"198.51.100.{rng.randint(1, 254)}",
                "user_agent": "seed",
                "outcome": outcome,
                "method": method,
                "twofa_verified": verified,
            }
        )
    return rows


def _samples(
    session: Session, org: Organization, members: int, share: float, rng: random.Random, start: datetime
) -> list[Sample]:
    emails = [f"user{m + 1}@{org.slug}.example" for m in range(members)]
    existing = set(session.execute(select(User.email).where(User.email.in_(emails))).scalars())
    samples = []
    for m, email in enumerate(emails):
        if email in existing:
            continue
        joined = start + timedelta(days=rng.randint(0, 40))
        enrolled = org.sso_idp is None and rng.random() < share
        samples.append(Sample(email, ROLES[m % len(ROLES)].value, joined, enrolled))
    return samples


def _write(
    session: Session, org: Organization, samples: list[Sample], password_hash: str, rng: random.Random, start: datetime
) -> None:
    user_ids = session.scalars(
        insert(User).returning(User.id, sort_by_parameter_order=True),
        [
            {
                "email": s.email,
                "password_hash": password_hash,
                "created_at": s.joined,
                "twofa_method": TwoFactorMethod.TOTP.value if s.enrolled else None,
                "twofa_enabled_at": s.joined if s.enrolled else None,
            }
            for s in samples
        ],
    ).all()
    people = list(zip(user_ids, samples, strict=True))
    session.execute(
        insert(Membership),
        [{"org_id": org.id, "user_id": i, "role": s.role, "created_at": s.joined} for i, s in people],
    )
    with_app = [(i, s) for i, s in people if s.enrolled]
    if with_app:
        session.execute(
            insert(TotpDevice),
            [
                {
                    "user_id": i,
                    "secret_ciphertext": crypto.encrypt(totp.new_secret()),
                    "created_at": s.joined,
                    "confirmed_at": s.joined,
                }
                for i, s in with_app
            ],
        )
    for i, s in with_app:
        details = {"method": TwoFactorMethod.TOTP.value}
        audit.record(session, audit.Event.TWOFA_ENABLED, user_id=i, details=details, clock=FrozenClock(s.joined))
    session.execute(
        insert(LoginHistory), [row for i, s in people for row in _history(i, s.email, s.enrolled, rng, start)]
    )


def seed(
    orgs: int = typer.Option(3, min=1, max=200, metavar="N", help="Organisations to create."),
    members: int = typer.Option(20, min=1, max=5000, metavar="N", help="Members per organisation."),
    enrolled: float = typer.Option(
        0.6, min=0, max=1, metavar="SHARE", help="Share of members with an authenticator app, 0 to 1."
    ),
    seed_value: int = typer.Option(7, "--seed", metavar="N", help="Random seed: the same seed, the same data."),
) -> None:
    """Create sample data; the new members' password is random and printed once."""
    rng = random.Random(seed_value)
    # Not from the seeded generator: the same data, but never a password anyone could know in advance. Letters and
    # digits only (95 bits), so a double click selects all of it.
    password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(16))
    password_hash: str | None = None  # one argon2 evaluation for the whole run, and none when nothing is new
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(weeks=8)
    created = 0
    for o in track(range(orgs), description="seeding"):
        with transaction() as session:
            slug = f"sample-{o + 1}"
            org = accounts.get_org(session, slug) or accounts.create_org(
                session, slug, name=f"Sample {o + 1}", sso_idp="okta" if o % 5 == 4 else None, clock=FrozenClock(start)
            )
            samples = _samples(session, org, members, enrolled, rng, start)
            if samples:
                password_hash = password_hash or hash_password(password)
                _write(session, org, samples, password_hash, rng, start)
                created += len(samples)
    typer.echo(f"created {created} members in {orgs} organisation(s)")
    if created:
        typer.echo(f"their password (shown once): {password}")
