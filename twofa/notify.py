"""Security notifications to a user, written to the outbox (delivered after commit)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from twofa import outbox
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.models import User
from twofa.settings import get_settings


class Template:
    EMAIL_CODE = "email_code"
    TWOFA_ENABLED = "twofa_enabled"
    TWOFA_DISABLED = "twofa_disabled"
    BACKUP_CODE_USED = "backup_code_used"
    BACKUP_CODES_LOW = "backup_codes_low"
    BACKUP_CODES_REGENERATED = "backup_codes_regenerated"
    RESET_BY_SUPPORT = "twofa_reset_by_support"
    API_KEY_CREATED = "api_key_created"
    SECOND_FACTOR_LOCKED = "second_factor_locked"


class BackupCodePurpose(StrEnum):
    """What a backup code was used for: the ``purpose`` of ``Template.BACKUP_CODE_USED``, named in its mail.
    Without one the mail says only that a code was used."""

    SIGN_IN = "sign_in"
    DISABLE_2FA = "disable_2fa"
    CHANGE_FACTOR = "change_factor"  # setting up or switching to another second factor
    REAUTHENTICATE = "reauthenticate"  # confirming it is the person before a change to the account's protection


def notify(
    session: Session,
    user: User,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    ctx = {"email": user.email, "issuer": get_settings().issuer, "at": clock.now().strftime("%Y-%m-%d %H:%M UTC")}
    ctx.update(context or {})
    if template == Template.BACKUP_CODE_USED and ctx.get("purpose") is not None:
        # A typo would otherwise mail the generic wording without a word of complaint.
        ctx["purpose"] = BackupCodePurpose(ctx["purpose"]).value
    outbox.enqueue(session, template=template, to=user.email, context=ctx, user_id=user.id, clock=clock)
