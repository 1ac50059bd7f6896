"""TOTP (RFC 6238): secrets, the key URI and QR code, and replay-proof verification.

pyotp computes codes; this module adds what pyotp leaves to the caller: strict input checks (pyotp normalises with
NFKC, so full-width digits would pass its compare) and the last-accepted-step rule of RFC 6238 5.2.
"""

from __future__ import annotations

import base64
import hmac
import io
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno

from twofa.errors import InvalidInput, MalformedCode

DIGITS = 6
STEP_SECONDS = 30
WINDOW = 1  # steps accepted either side of the current one
SECRET_BYTES = 20  # 160 bits (RFC 4226 R6 asks for at least 128)
_ASCII_DIGITS = frozenset("0123456789")


def new_secret() -> str:
    """A random 160-bit seed as unpadded base32 (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def check_code_format(code: object, digits: int = DIGITS) -> str:
    """The code itself if it is exactly ``digits`` ASCII digits; ``MalformedCode`` otherwise."""
    if not isinstance(code, str) or len(code) != digits or not set(code) <= _ASCII_DIGITS:
        raise MalformedCode(f"the code must be exactly {digits} digits 0-9")
    return code


def time_step(at: datetime) -> int:
    return int(at.timestamp()) // STEP_SECONDS


def _totp(secret: str, digits: int = DIGITS) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=digits, interval=STEP_SECONDS)


def code_at_step(secret: str, step: int, digits: int = DIGITS) -> str:
    return _totp(secret, digits).generate_otp(step)


def code_at(secret: str, at: datetime) -> str:
    return code_at_step(secret, time_step(at))


def matching_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step within the window whose code equals ``code``, or None. Compares every candidate in constant
    time, whichever matches."""
    check_code_format(code)
    current = time_step(at)
    codes = _totp(secret)
    found: int | None = None
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(codes.generate_otp(step).encode(), code.encode()):
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """Google Authenticator's Key-Uri-Format: ``otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER``."""
    if ":" in issuer or ":" in account:
        raise InvalidInput("neither the issuer nor the account name may contain a colon")
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_png(uri: str) -> bytes:
    buffer = io.BytesIO()
    segno.make(uri, error="m", micro=False).save(buffer, kind="png", scale=6, border=4)
    return buffer.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class Enrolment:
    """What a user needs to add the account to an authenticator app. Shown once; never logged."""

    secret: str
    otpauth_url: str
    qr_png: bytes

    @property
    def qr_data_url(self) -> str:
        return png_data_url(self.qr_png)

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return "Enrolment(secret=<hidden>)"
