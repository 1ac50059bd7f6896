"""Organisations, users and memberships."""

from __future__ import annotations

import re

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import Conflict, InvalidInput, NotFound
from twofa.models import Membership, Organization, Role, User
from twofa.passwords import hash_password

SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# Deliberately loose: one @, something on each side, a dot in the domain, no spaces or colons (a colon would break
# the otpauth label).
EMAIL_RE = re.compile(r"[^@\s:]+@[^@\s:]+\.[^@\s:]+")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 320 or not EMAIL_RE.fullmatch(email):
        raise InvalidInput(f"not a valid email address: {email!r}")
    return email


def parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role {role!r} (one of: {allowed})") from None


def create_org(
    session: Session,
    slug: str,
    *,
    name: str | None = None,
    sso_idp: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Organization:
    if not SLUG_RE.fullmatch(slug):
        raise InvalidInput(f"not a valid organisation slug: {slug!r} (lowercase letters, digits and dashes)")
    if sso_idp is not None and not sso_idp.strip():
        raise InvalidInput("the SSO identity provider may not be empty")
    if get_org(session, slug) is not None:
        raise Conflict(f"organisation {slug!r} exists already")
    org = Organization(slug=slug, name=name or slug, sso_idp=sso_idp, created_at=clock.now())
    session.add(org)
    session.flush()
    return org


def get_org(session: Session, slug: str) -> Organization | None:
    return session.execute(select(Organization).where(Organization.slug == slug)).scalar_one_or_none()


def require_org(session: Session, slug: str) -> Organization:
    org = get_org(session, slug)
    if org is None:
        raise NotFound(f"no organisation {slug!r}")
    return org


def create_user(session: Session, email: str, password: str, *, clock: Clock = SYSTEM_CLOCK) -> User:
    email = normalize_email(email)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidInput(f"the password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    if get_user(session, email) is not None:
        raise Conflict(f"a user with email {email!r} exists already")
    user = User(email=email, password_hash=hash_password(password), created_at=clock.now())
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, email: str) -> User | None:
    return session.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()


def add_member(
    session: Session, org: Organization, user: User, role: str, *, clock: Clock = SYSTEM_CLOCK
) -> Membership:
    parsed = parse_role(role)
    if get_membership(session, org, user) is not None:
        raise Conflict(f"{user.email} is already a member of {org.slug}")
    membership = Membership(org_id=org.id, user_id=user.id, role=parsed.value, created_at=clock.now())
    session.add(membership)
    session.flush()
    return membership


def get_membership(session: Session, org: Organization, user: User) -> Membership | None:
    return session.execute(
        select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
    ).scalar_one_or_none()


def change_role(
    session: Session, org: Organization, user: User, role: str, *, clock: Clock = SYSTEM_CLOCK
) -> Membership:
    parsed = parse_role(role)
    membership = get_membership(session, org, user)
    if membership is None:
        raise NotFound(f"{user.email} is not a member of {org.slug}")
    if membership.role != parsed.value:
        membership.role = parsed.value
        membership.role_changed_at = clock.now()
        session.flush()
    return membership


def sso_provider(session: Session, user_id: int) -> str | None:
    """The identity provider through which the user must sign in: set when every organisation of the user uses SSO
    (one of them, when they use several)."""
    idps = (
        session.execute(
            select(Organization.sso_idp)
            .join(Membership, Membership.org_id == Organization.id)
            .where(Membership.user_id == user_id)
        )
        .scalars()
        .all()
    )
    return idps[0] if idps and all(idps) else None


def is_managed_by_sso(session: Session, user_id: int) -> bool:
    """A member of any organisation that signs in through SSO has 2FA managed by that identity provider."""
    return bool(
        session.execute(
            select(
                exists().where(
                    Membership.user_id == user_id,
                    Membership.org_id == Organization.id,
                    Organization.sso_idp.is_not(None),
                )
            )
        ).scalar()
    )
