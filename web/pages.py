"""The per-request plumbing of the pages: the API's request context and limits, the signed-in person, CSRF
checks, and rendering with the security headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session

from api.context import Ctx
from api.errors import ApiError
from twofa import crypto, sessions
from twofa.errors import InvalidSession
from twofa.models import User, UserSession
from twofa.settings import PROJECT_ROOT
from web import security


class WebError(Exception):
    """A page-level refusal (a missing CSRF token, a rate limit) shown as a plain error page."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


class Redirect(Exception):  # control flow to another page, not an error
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(PROJECT_ROOT / "templates" / "web")),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["when"] = _when
    env.filters["day"] = lambda v: v.strftime("%Y-%m-%d") if v else "-"
    return env


@dataclass
class Web:
    ctx: Ctx
    request: Request
    csrf_cookie: str
    new_csrf_cookie: bool

    @property
    def session_cookie(self) -> str | None:
        return self.request.cookies.get(security.SESSION_COOKIE)

    def limit(self, key: str, limit: int) -> None:
        try:
            self.ctx.limit(key, limit)
        except ApiError as exc:
            raise WebError(429, "Too many requests; wait a minute and try again.", exc.retry_after) from None

    def limit_auth(self, email: str | None = None, challenge: str | None = None) -> None:
        try:
            self.ctx.limit_auth(email, challenge)
        except ApiError as exc:
            raise WebError(429, "Too many attempts; wait a minute and try again.", exc.retry_after) from None

    def check_csrf(self, submitted: str) -> None:
        if not security.csrf_ok(self.request, submitted):
            raise WebError(403, "This form has expired or did not come from this site. Reload the page and try again.")

    def signed_in(self, s: Session, *, enrol_ok: bool = False) -> tuple[UserSession, User]:
        """The session the cookie names; to the sign-in page without one, and to the enrol-only page when the
        session may only set up 2FA."""
        token = self.session_cookie
        if not token:
            raise Redirect("/login")
        try:
            row, user = sessions.authenticate(s, token, self.ctx.clock)
        except InvalidSession:
            raise Redirect("/login") from None
        if row.scope != "full" and not enrol_ok:
            raise Redirect("/login/enrol")
        self.limit(f"user:{user.id}", self.ctx.settings.ratelimit_per_ip)
        return row, user

    def finish(self, response: Response) -> Response:
        security.harden(response)
        if self.new_csrf_cookie:
            security.set_cookie(response, self.request, security.CSRF_COOKIE, self.csrf_cookie)
        return response

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        # A page rendered after a sign-in in this same request would sign with the new cookie; pages are only
        # rendered for the session the request carried.
        context.setdefault("csrf", security.csrf_token(self.csrf_cookie, self.session_cookie))
        context.setdefault("issuer", self.ctx.settings.issuer)
        html = environment().get_template(template).render(**context)
        return self.finish(HTMLResponse(html, status_code=status))

    def redirect(self, to: str) -> Response:
        return self.finish(RedirectResponse(to, status_code=303))


async def get_web(request: Request) -> Web:
    """The pages' dependency: the API's context (with its per-IP limit) and this browser's CSRF cookie."""
    state = request.app.state
    ctx = Ctx(state.factory, state.clock, state.settings, state.limiter, request)
    try:
        await ctx.alimit(f"ip:{ctx.client.ip}", state.settings.ratelimit_per_ip)
    except ApiError as exc:
        raise WebError(429, "Too many requests; wait a minute and try again.", exc.retry_after) from None
    cookie = request.cookies.get(security.CSRF_COOKIE)
    fresh = not cookie or len(cookie) > 100
    return Web(ctx, request, crypto.new_token() if fresh else str(cookie), fresh)
