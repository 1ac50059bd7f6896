"""Telling an organisation's owners and admins of an event that concerns them, once per event and person."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from twofa import outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import Membership, Organization, Role, User
from twofa.settings import get_settings

ADMIN_NOTICE = "admin_notice"
TELL = (Role.OWNER.value, Role.ADMIN.value, Role.SUPER_ADMIN.value)


def tell_managers(
    session: Session,
    *,
    event_id: int,
    kind: str,
    org_ids: Sequence[int],
    context: dict[str, Any],
    exclude_user_id: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> int:
    """Mail the owners and admins of ``org_ids`` about the audit event ``event_id`` (``kind``: member_disabled,
    member_reset or policy_changed); returns the messages written. The key of each message names the event and the
    person, so a second call for the same event writes nothing."""
    if not org_ids:
        return 0
    found = session.execute(
        select(User.id, User.email, Organization.id, Organization.name)
        .join(Membership, Membership.user_id == User.id)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.org_id.in_(org_ids), Membership.role.in_(TELL))
        .order_by(User.id, Organization.name)
    ).all()
    orgs_of: dict[tuple[int, str], list[tuple[int, str]]] = {}
    for user_id, email, org_id, org_name in found:
        if user_id != exclude_user_id:
            orgs_of.setdefault((user_id, email), []).append((org_id, org_name))
    at = clock.now().strftime("%Y-%m-%d %H:%M UTC")
    messages = [
        {
            "template": ADMIN_NOTICE,
            "to": email,
            "user_id": user_id,
            "org_id": orgs[0][0],
            "dedupe_key": f"admin-notice:{event_id}:{user_id}",
            "context": {
                **context,
                "kind": kind,
                "email": email,
                "issuer": get_settings().issuer,
                "at": at,
                "org_names": [name for _, name in orgs],
            },
        }
        for (user_id, email), orgs in orgs_of.items()
    ]
    return len(outbox.enqueue_unique(session, messages, clock=clock))
