"""Domain errors: one class per failure, each with a stable code that the edges translate once.

A failed attempt must leave a trace even though it fails: the login-history row, the failure counter, the audit
row of a refused replay. A function that wrote such a record marks the error it raises with ``recorded(...)``; the
unit of work (``twofa.db.transaction``) commits for a marked error and rolls back for any other, so bad input never
leaves a half-written row.
"""

from __future__ import annotations

from typing import TypeVar


class DomainError(Exception):
    code: str = "error"
    status: int = 400  # the HTTP status an edge should answer with
    keep_writes: bool = False  # set by ``recorded``: the transaction holds the record of this failure

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or self.code)

    @property
    def message(self) -> str:
        return str(self)


E = TypeVar("E", bound=DomainError)


def recorded(error: E) -> E:
    """Mark ``error`` as raised after writing the record of the failure, which must be committed."""
    error.keep_writes = True
    return error


class InvalidInput(DomainError):
    """The input is not valid."""

    code = "invalid_input"
    status = 422


class MalformedCode(InvalidInput):
    """The code must be exactly 6 ASCII digits."""

    code = "malformed_code"


class MalformedBackupCode(InvalidInput):
    """A backup code looks like xxxxx-xxxxx (letters and digits)."""

    code = "malformed_backup_code"


class NotFound(DomainError):
    code = "not_found"
    status = 404


class Conflict(DomainError):
    code = "conflict"
    status = 409


class InvalidCredentials(DomainError):
    """Email or password is wrong."""

    code = "invalid_credentials"
    status = 401


class SsoRequired(DomainError):
    """The password was right, but every organisation of the account signs in through its identity provider."""

    code = "sso_required"
    status = 403


class InvalidCode(DomainError):
    """The code is wrong or has expired."""

    code = "invalid_code"
    status = 401


class CodeReused(InvalidCode):
    """This code was already used; wait for the next one."""

    code = "code_reused"


class BackupCodeUsed(CodeReused):
    """This backup code was already used."""

    code = "backup_code_used"


class CodeExpired(InvalidCode):
    """The code has expired; request a new one."""

    code = "code_expired"


class TooManyAttempts(DomainError):
    """Too many wrong codes; try again later."""

    code = "second_factor_locked"
    status = 429

    def __init__(self, message: str | None = None, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ResendCooldown(TooManyAttempts):
    """A code was sent moments ago; wait before asking for another."""

    code = "resend_cooldown"


class HourlyCapReached(TooManyAttempts):
    """Too many codes requested this hour."""

    code = "email_otp_hourly_cap"


class ChallengeInvalid(DomainError):
    """The login challenge is unknown, finished or expired; sign in again."""

    code = "challenge_invalid"
    status = 401


class TwoFactorAlreadyEnabled(Conflict):
    """Two-factor authentication is already on; disable it first to change device."""

    code = "2fa_already_enabled"


class TwoFactorNotEnabled(Conflict):
    """Two-factor authentication is not on."""

    code = "2fa_not_enabled"


class NoPendingEnrolment(Conflict):
    """Start the set-up first."""

    code = "no_pending_enrolment"


class ManagedBySso(Conflict):
    """Two-factor authentication is managed by your organisation's single sign-on."""

    code = "managed_by_sso"


class EnrolmentRequired(DomainError):
    """Your organisation requires two-factor authentication: set it up to continue."""

    code = "enrolment_required"
    status = 403


class InvalidApiKey(DomainError):
    """The API key is unknown or revoked."""

    code = "invalid_api_key"
    status = 401


class InvalidSession(DomainError):
    """The session is unknown, expired or revoked."""

    code = "invalid_session"
    status = 401
