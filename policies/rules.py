"""Reading and changing an organisation's policy. Every change is audited with what it was and what it became."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from policies.admin_mail import tell_managers
from policies.models import OrgPolicy, OrgPolicyRole
from twofa import audit
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.errors import InvalidInput
from twofa.models import Organization, Role

DEFAULT_ROLES = frozenset({Role.OWNER.value, Role.ADMIN.value, Role.SUPER_ADMIN.value, Role.FINANCE.value})
AFTER_DEADLINE = ("enrol_only", "remind_only")
POLICY_CHANGED = "policy_changed"


@dataclass(frozen=True)
class Policy:
    required: bool = True
    roles: frozenset[str] = DEFAULT_ROLES
    totp_only_roles: frozenset[str] = frozenset()
    grace_days: int = 14
    reminder_days: tuple[int, ...] = (7, 3, 1)
    escalate: bool = True
    after_deadline: str = "enrol_only"
    disable_grace_days: int = 1
    enabled_at: datetime | None = None  # None: the organisation's creation (the default policy)
    stored: bool = field(default=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["roles"] = sorted(self.roles)
        d["totp_only_roles"] = sorted(self.totp_only_roles)
        d["reminder_days"] = list(self.reminder_days)
        d["enabled_at"] = self.enabled_at.isoformat() if self.enabled_at else None
        d.pop("stored")
        return d


DEFAULT = Policy()


def get_policy(session: Session, org: Organization) -> Policy:
    row = session.get(OrgPolicy, org.id)
    if row is None:
        return replace(DEFAULT, enabled_at=org.created_at)
    roles = session.execute(select(OrgPolicyRole).where(OrgPolicyRole.org_id == org.id)).scalars().all()
    return Policy(
        required=row.required,
        roles=frozenset(r.role for r in roles),
        totp_only_roles=frozenset(r.role for r in roles if r.totp_only),
        grace_days=row.grace_days,
        reminder_days=tuple(row.reminder_days),
        escalate=row.escalate,
        after_deadline=row.after_deadline,
        disable_grace_days=row.disable_grace_days,
        enabled_at=row.enabled_at,
        stored=True,
    )


def covers(policy: Policy, role: str) -> bool:
    """Whether the policy requires 2FA of members in ``role``."""
    return policy.required and role in policy.roles


def validate(policy: Policy) -> Policy:
    known = {r.value for r in Role}
    unknown = (policy.roles | policy.totp_only_roles) - known
    if unknown:
        raise InvalidInput(f"unknown role(s) {', '.join(sorted(unknown))} (one of: {', '.join(sorted(known))})")
    if not policy.totp_only_roles <= policy.roles:
        raise InvalidInput("a role can require an authenticator app only if the policy applies to it")
    if policy.required and not policy.roles:
        raise InvalidInput("a required policy needs at least one role")
    if not 0 <= policy.grace_days <= 365:
        raise InvalidInput("the grace period is 0 to 365 days")
    if not 0 <= policy.disable_grace_days <= 30:
        raise InvalidInput("the deadline after disabling 2FA is 0 to 30 days")
    if any(not 1 <= d <= 365 for d in policy.reminder_days) or len(set(policy.reminder_days)) != len(
        policy.reminder_days
    ):
        raise InvalidInput("reminder days are distinct whole numbers of days before the deadline (1 to 365)")
    if policy.after_deadline not in AFTER_DEADLINE:
        raise InvalidInput(f"after the deadline: one of {', '.join(AFTER_DEADLINE)}")
    return replace(policy, reminder_days=tuple(sorted(policy.reminder_days, reverse=True)))


def set_policy(
    session: Session, org: Organization, changes: dict[str, Any], *, actor: str, clock: Clock = SYSTEM_CLOCK
) -> Policy:
    """Apply ``changes`` (field names of ``Policy``) to the organisation's policy; returns the new policy."""
    before = get_policy(session, org)
    allowed = set(Policy.__dataclass_fields__) - {"enabled_at", "stored"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"unknown policy field(s): {', '.join(sorted(unknown))}")
    coerced: dict[str, Any] = {k: frozenset(v) if k in ("roles", "totp_only_roles") else v for k, v in changes.items()}
    if "reminder_days" in coerced:
        coerced["reminder_days"] = tuple(coerced["reminder_days"])
    after = validate(replace(before, **coerced))
    now = clock.now()
    if after.required and not before.required:
        after = replace(after, enabled_at=now)  # switching on starts a fresh grace period for everyone
    row = session.get(OrgPolicy, org.id) or OrgPolicy(org_id=org.id)
    row.required = after.required
    row.grace_days = after.grace_days
    row.reminder_days = list(after.reminder_days)
    row.escalate = after.escalate
    row.after_deadline = after.after_deadline
    row.disable_grace_days = after.disable_grace_days
    row.enabled_at = after.enabled_at or org.created_at
    row.updated_at = now
    row.updated_by = actor
    session.add(row)
    session.flush()
    session.execute(delete(OrgPolicyRole).where(OrgPolicyRole.org_id == org.id))
    session.add_all(
        OrgPolicyRole(org_id=org.id, role=role, totp_only=role in after.totp_only_roles) for role in after.roles
    )
    old, new = before.as_dict(), after.as_dict()
    event = audit.record(
        session, POLICY_CHANGED, org_id=org.id, actor=actor, details={"before": old, "after": new}, clock=clock
    )
    session.flush()
    changed = [{"field": k, "before": _shown(old[k]), "after": _shown(new[k])} for k in new if old[k] != new[k]]
    if changed:
        tell_managers(
            session,
            event_id=event.id,
            kind="policy_changed",
            org_ids=[org.id],
            context={"by": actor, "changes": changed},
            clock=clock,
        )
    return replace(after, stored=True)


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) or "none" if isinstance(value, list) else str(value)
