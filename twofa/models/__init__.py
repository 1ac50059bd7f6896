"""SQLAlchemy models. Importing this package registers every table on ``Base.metadata``."""

from twofa.models.accounts import Membership, Organization, Role, TwoFactorMethod, User
from twofa.models.api_keys import ApiKey
from twofa.models.audit import AuditChain, AuditEvent
from twofa.models.factors import BackupCode, BackupCodeSet, EmailOtp, TotpDevice
from twofa.models.logins import LoginChallenge, LoginHistory, UserSession
from twofa.models.outbox import OutboxMessage, OutboxStatus

__all__ = [
    "ApiKey",
    "AuditChain",
    "AuditEvent",
    "BackupCode",
    "BackupCodeSet",
    "EmailOtp",
    "LoginChallenge",
    "LoginHistory",
    "Membership",
    "Organization",
    "OutboxMessage",
    "OutboxStatus",
    "Role",
    "TotpDevice",
    "TwoFactorMethod",
    "User",
    "UserSession",
]
