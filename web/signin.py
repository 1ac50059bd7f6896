"""The sign-in pages: email and password, then the second factor, and the enrol-only page."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form
from fastapi.responses import Response

from api.routing import Router
from policies.evaluate import evaluate
from policies.verdicts import Overdue
from twofa import logins, sessions
from twofa.errors import ChallengeInvalid, DomainError, InvalidSession, TooManyAttempts
from web import security
from web.pages import Web, get_web

router = Router(include_in_schema=False)
WebDep = Annotated[Web, Depends(get_web)]
Field = Annotated[str, Form(max_length=1024)]
HOME = "/settings/personal/security"


def _signed_in(web: Web, done: logins.LoggedIn) -> Response:
    response = web.redirect("/login/enrol" if done.enrolment_required else HOME)
    security.set_cookie(response, web.request, security.SESSION_COOKIE, done.session.token)
    security.drop_cookie(response, web.request, security.CHALLENGE_COOKIE)
    return response


@router.get("/")
def home(web: WebDep) -> Response:
    return web.redirect(HOME if web.session_cookie else "/login")


@router.get("/login")
def login_page(web: WebDep) -> Response:
    query = web.request.query_params
    notice = "You are signed out." if query.get("signed_out") else None
    if query.get("enrolled"):
        notice = "Two-factor authentication is on. Sign in again with it."
    error = "That sign-in took too long; start again." if query.get("expired") else None
    return web.render("login.html", notice=notice, error=error)


@router.post("/login")
def login(web: WebDep, csrf: Field = "", email: Field = "", password: Field = "") -> Response:
    web.check_csrf(csrf)
    if not email or not password:
        return web.render("login.html", 422, error="Enter your email address and password.", email=email)
    web.limit_auth(email)
    try:
        with web.ctx.unit() as s:
            result = logins.login_with_password(
                s, email, password, web.ctx.client, gate=web.ctx.gate, clock=web.ctx.clock
            )
    except DomainError as exc:
        web.ctx.failed(exc)
        return web.render("login.html", exc.status, error=exc.message, email=email)
    web.ctx.signed_in(email)
    if isinstance(result, logins.LoggedIn):
        return _signed_in(web, result)
    sent = "" if result.methods[0] != "email" else "?sent=1" if result.email_code_sent else "?sent=0"
    response = web.redirect("/login/2fa" + sent)
    value = f"{result.methods[0]}.{result.challenge}"
    security.set_cookie(response, web.request, security.CHALLENGE_COOKIE, value, security.CHALLENGE_MAX_AGE)
    return response


def _challenge(web: Web) -> tuple[str, str] | None:
    method, _, token = web.request.cookies.get(security.CHALLENGE_COOKIE, "").partition(".")
    return (method, token) if method in ("totp", "email") and token else None


def _prompt(web: Web, status: int = 200, **context: object) -> Response:
    found = _challenge(web)
    if found is None:
        return web.redirect("/login")
    backup = web.request.query_params.get("backup") == "1" or context.pop("backup", False)
    return web.render(
        "login_2fa.html",
        status,
        method=found[0],
        backup=backup,
        cooldown=web.ctx.settings.email_otp_resend_cooldown,
        sent=web.request.query_params.get("sent"),
        **context,
    )


@router.get("/login/2fa")
def second_factor_page(web: WebDep) -> Response:
    return _prompt(web)


@router.post("/login/2fa")
def second_factor(web: WebDep, csrf: Field = "", code: Field = "", kind: Field = "") -> Response:
    web.check_csrf(csrf)
    found = _challenge(web)
    if found is None:
        return web.redirect("/login")
    backup = kind == "backup_code"
    if not code.strip():
        return _prompt(web, 422, error="Enter the code.", backup=backup)
    web.limit_auth(challenge=found[1])
    method = "backup_code" if backup else found[0]
    try:
        with web.ctx.unit() as s:
            done = logins.complete_login(
                s, found[1], code.strip(), web.ctx.client, gate=web.ctx.gate, method=method, clock=web.ctx.clock
            )
    except ChallengeInvalid as exc:
        web.ctx.failed(exc)
        response = web.redirect("/login?expired=1")
        security.drop_cookie(response, web.request, security.CHALLENGE_COOKIE)
        return response
    except DomainError as exc:
        web.ctx.failed(exc)
        return _prompt(web, exc.status, error=exc.message, backup=backup)
    return _signed_in(web, done)


@router.post("/login/2fa/resend")
def resend(web: WebDep, csrf: Field = "") -> Response:
    web.check_csrf(csrf)
    found = _challenge(web)
    if found is None:
        return web.redirect("/login")
    web.limit_auth(challenge=found[1])
    try:
        with web.ctx.unit() as s:
            logins.resend_login_code(s, found[1], web.ctx.clock)
    except TooManyAttempts as exc:
        return _prompt(web, exc.status, error=f"A code was sent moments ago; ask again in {exc.retry_after} seconds.")
    except DomainError as exc:
        return _prompt(web, exc.status, error=exc.message)
    return web.redirect("/login/2fa?sent=1")


@router.get("/login/enrol")
def enrol_only(web: WebDep) -> Response:
    """A session that may only set up 2FA: the organisation's deadline has passed."""
    with web.ctx.unit() as s:
        _, user = web.signed_in(s, enrol_ok=True)
        overdue = [v for v in evaluate(s, web.ctx.clock.now(), user_id=user.id) if isinstance(v.verdict, Overdue)]
        email = user.email
    return web.render("enrol.html", account=email, overdue=overdue)


@router.post("/logout")
def logout(web: WebDep, csrf: Field = "", then: Field = "") -> Response:
    web.check_csrf(csrf)
    token = web.session_cookie
    if token:
        try:
            with web.ctx.unit() as s:
                row, user = sessions.authenticate(s, token, web.ctx.clock)
                sessions.revoke(s, user.id, row.id, web.ctx.clock)
        except InvalidSession:
            pass
    response = web.redirect("/login?enrolled=1" if then == "enrolled" else "/login?signed_out=1")
    security.drop_cookie(response, web.request, security.SESSION_COOKIE)
    return response
