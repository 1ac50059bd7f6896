"""Writing security events to the append-only audit log."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import AuditEvent


class Event:
    """The audit event names, stable for queries and reports."""

    TOTP_ENROLMENT_STARTED = "totp_enrolment_started"
    TWOFA_ENABLED = "2fa_enabled"
    TWOFA_DISABLED = "2fa_disabled"
    TWOFA_RESET_BY_SUPPORT = "2fa_reset_by_support"
    BACKUP_CODE_USED = "backup_code_used"
    BACKUP_CODE_REUSED = "backup_code_reuse_refused"
    BACKUP_CODES_REGENERATED = "backup_codes_regenerated"
    CODE_REPLAY_REFUSED = "totp_replay_refused"
    SECOND_FACTOR_LOCKED = "second_factor_locked"
    API_KEY_CREATED = "api_key_created"
    API_KEY_REVOKED = "api_key_revoked"
    MAIL_FAILED = "mail_failed"


def record(
    session: Session,
    event: str,
    *,
    user_id: int | None = None,
    org_id: int | None = None,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> AuditEvent:
    row = AuditEvent(at=clock.now(), event=event, user_id=user_id, org_id=org_id, actor=actor, details=details or {})
    session.add(row)
    return row
