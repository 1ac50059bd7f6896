"""What keeps the pages safe: the cookies, the CSRF token and the response headers.

The session token lives only in an ``HttpOnly`` cookie, never in a page or its script. Every form carries a token
that is a keyed hash of a random per-browser cookie and the session cookie (a signed double submit, bound to the
session): a page of another site can neither read the cookies nor make the hash. ``SameSite=Strict`` keeps the
cookies off cross-site requests as well."""

from __future__ import annotations

import base64

from fastapi import Request
from fastapi.responses import Response

from api.context import over_https
from twofa import crypto
from twofa.settings import get_settings

SESSION_COOKIE = "twofa_session"
CSRF_COOKIE = "twofa_csrf"
CHALLENGE_COOKIE = "twofa_login"  # the sign-in's second step: its method and challenge token
CHALLENGE_MAX_AGE = 600

# No inline script or style; images from this origin or the QR code's data URL; nothing may frame the pages.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def secure(request: Request) -> bool:
    return over_https(request, get_settings().trusted_proxies)


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", secure=secure(request), httponly=True, samesite="strict"
    )


def drop_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", secure=secure(request), httponly=True, samesite="strict")


def csrf_token(csrf_cookie: str, session_cookie: str | None) -> str:
    digest = crypto.keyed_hash("csrf-form", f"{csrf_cookie}:{session_cookie or ''}")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    expected = csrf_token(cookie, request.cookies.get(SESSION_COOKIE))
    return crypto.same(expected.encode(), submitted.encode())


def harden(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response
