"""Device tokens (OWASP's device cookie): given to a client when it signs in to an account, so that the account-wide
failure limit, which a stranger can use up, never refuses that client.

A token is ``<expiry>.<nonce>.<mac>``: the MAC, keyed by ``TWOFA_SECRET_KEY`` (``twofa.crypto.keyed_hash``), binds
it to the account's email and its expiry; nothing is stored. It travels back as the ``twofa_device`` cookie or the
``X-Device-Token`` header. Rotating the first secret key retires every token (their clients fall under the
account-wide limit until they sign in again)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

from twofa import crypto

COOKIE = "twofa_device"
HEADER = "X-Device-Token"
_PURPOSE = "device token"

# For the OpenAPI document of the sign-in endpoint.
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "After a correct password: the device token, also set as the `twofa_device` cookie",
        "headers": {
            HEADER: {
                "description": "A device token for this account: send it back (this header, or the cookie) on later "
                "sign-ins, and failures of other clients never refuse this one",
                "schema": {"type": "string"},
            }
        },
    }
}
OPENAPI_EXTRA: dict[str, Any] = {
    "parameters": [
        {
            "name": HEADER,
            "in": "header",
            "required": False,
            "description": "The device token an earlier sign-in to this account gave (or the `twofa_device` cookie)",
            "schema": {"type": "string", "maxLength": 200},
        }
    ]
}


def _mac(email: str, payload: str) -> str:
    digest = crypto.keyed_hash(_PURPOSE, f"{email.strip().lower()}|{payload}")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(email: str, now: datetime, days: int) -> str:
    payload = f"{int((now + timedelta(days=days)).timestamp())}.{crypto.new_token(12)}"
    return f"{payload}.{_mac(email, payload)}"


def valid(token: str | None, email: str, now: datetime) -> bool:
    """Whether ``token`` is a live device token of the account ``email``."""
    if not token or len(token) > 200:
        return False
    payload, _, mac = token.rpartition(".")
    expiry, _, _nonce = payload.partition(".")
    if not expiry.isdigit() or int(expiry) <= now.timestamp():
        return False
    return crypto.same(mac.encode(), _mac(email, payload).encode())
