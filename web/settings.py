"""``/settings/personal/security``: the 2FA badge, setting it up, backup codes, disabling, sessions, login
history and API keys. Every change calls the same core function as the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Form, Path
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.routing import Router
from policies import notices
from policies.evaluate import asked_of
from policies.members import MANAGERS
from twofa import api_keys, enrolment, login_history, manage, sessions, totp
from twofa.errors import DomainError, TooManyAttempts
from twofa.models import Membership, Organization, User, UserSession
from web.pages import Web, get_web

router = Router(include_in_schema=False)
WebDep = Annotated[Web, Depends(get_web)]
Field = Annotated[str, Form(max_length=1024)]
PAGE = "/settings/personal/security"
NOTICES = {
    "enabled": "Two-factor authentication is on.",
    "disabled": "Two-factor authentication is off.",
    "code_sent": "We emailed you a code. It is valid for a few minutes.",
    "signed_out": "That session is signed out.",
    "signed_out_others": "Every other session is signed out.",
    "key_revoked": "The API key is revoked.",
}


def managed_orgs(s: Session, user: User) -> list[tuple[str, str]]:
    """(slug, name) of the organisations whose security page the user may open."""
    rows = s.execute(
        select(Organization.slug, Organization.name)
        .join(Membership, Membership.org_id == Organization.id)
        .where(Membership.user_id == user.id, Membership.role.in_(MANAGERS))
        .order_by(Organization.name)
    ).all()
    return [(slug, name) for slug, name in rows]


def _page(web: Web, s: Session, row: UserSession, user: User, status: int = 200, **extra: Any) -> Response:
    notice = NOTICES.get(web.request.query_params.get("done", ""))
    return web.render(
        "security.html",
        status,
        account=user.email,
        status_=manage.status(s, user),
        policy=asked_of(s, user.id, web.ctx.clock.now()),
        sessions=sessions.list_active(s, user.id, web.ctx.clock),
        current_session=row.id,
        history=login_history.history(s, user.id, 20),
        keys=[k for k in api_keys.list_keys(s, user.id) if k.revoked_at is None],
        cooldown=web.ctx.settings.email_otp_resend_cooldown,
        notice=notice,
        managed=managed_orgs(s, user),
        **extra,
    )


@router.get(PAGE)
def security_page(web: WebDep) -> Response:
    with web.ctx.unit() as s:
        row, user = web.signed_in(s)
        return _page(web, s, row, user)


def _act(
    web: Web,
    csrf: str,
    action: Callable[[Session, UserSession, User], Response],
    *,
    enrol_ok: bool = False,
    auth_limit: bool = False,
) -> Response:
    """Run one change in a unit of work; a refusal shows the page again with the reason, writing nothing."""
    web.check_csrf(csrf)
    if auth_limit:
        web.limit_auth()
    error: DomainError | None = None
    try:
        with web.ctx.unit() as s:
            row, user = web.signed_in(s, enrol_ok=enrol_ok)
            return action(s, row, user)
    except DomainError as exc:
        web.ctx.failed(exc)
        error = exc
    message = error.message
    if isinstance(error, TooManyAttempts) and error.retry_after:
        message = f"{message} (try again in {error.retry_after} seconds)"
    with web.ctx.unit() as s:
        row, user = web.signed_in(s, enrol_ok=enrol_ok)
        if row.scope != "full":
            return web.render("enrol.html", error.status, account=user.email, overdue=[], error=message)
        return _page(web, s, row, user, error.status, error=message)


def _codes(
    web: Web, user: User, codes: list[str], finish: str = PAGE + "?done=enabled", *, again: bool = False
) -> Response:
    """The backup codes, shown this once. A session that could only set up 2FA signs in again to finish."""
    today = web.ctx.clock.now().strftime("%Y-%m-%d")
    return web.render(
        "backup_codes.html", account=user.email, codes=codes, today=today, finish=finish, sign_in_again=again
    )


@router.post(PAGE + "/totp/setup")
def totp_setup(web: WebDep, csrf: Field = "", password: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        started = enrolment.start_totp(s, user, password, code.strip() or None, clock=web.ctx.clock)
        secret = started.secret
        return web.render(
            "setup_totp.html",
            account=user.email,
            qr=totp.png_data_url(started.qr_png),
            secret=secret,
            grouped=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            otpauth_url=started.otpauth_url,
        )

    return _act(web, csrf, action, enrol_ok=True, auth_limit=True)


@router.post(PAGE + "/totp/verify")
def totp_verify(web: WebDep, csrf: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        codes = enrolment.confirm_totp(s, user, code.strip(), current_session=row.id, clock=web.ctx.clock)
        return _codes(web, user, codes, again=row.scope != "full")

    return _act(web, csrf, action, enrol_ok=True, auth_limit=True)


@router.post(PAGE + "/email/setup")
def email_setup(web: WebDep, csrf: Field = "", password: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        if user.twofa_method is not None:
            # Switching from an app to email codes: the app is turned off with the password and a current code
            # (the API's disable), then the mailbox is proved as for a first set-up.
            manage.disable(s, user, password, code.strip(), current_session=row.id, clock=web.ctx.clock)
            notices.member_disabled(s, user.id, web.ctx.clock)  # off until the mailbox is proved
        enrolment.start_email(s, user, password, web.ctx.clock)
        return web.render("setup_email.html", account=user.email, cooldown=web.ctx.settings.email_otp_resend_cooldown)

    return _act(web, csrf, action, enrol_ok=True, auth_limit=True)


@router.post(PAGE + "/email/verify")
def email_verify(web: WebDep, csrf: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        codes = enrolment.confirm_email(s, user, code.strip(), current_session=row.id, clock=web.ctx.clock)
        return _codes(web, user, codes, again=row.scope != "full")

    return _act(web, csrf, action, enrol_ok=True, auth_limit=True)


@router.post(PAGE + "/email/send-code")
def email_send_code(web: WebDep, csrf: Field = "") -> Response:
    """For email users: a code that confirms a disable, a regeneration or a move to an app."""

    def action(s: Session, row: UserSession, user: User) -> Response:
        manage.request_confirmation_code(s, user, web.ctx.clock)
        return web.redirect(PAGE + "?done=code_sent")

    return _act(web, csrf, action, auth_limit=True)


@router.post(PAGE + "/backup-codes")
def regenerate(web: WebDep, csrf: Field = "", password: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        codes = manage.regenerate_backup_codes(s, user, password, code.strip(), web.ctx.clock)
        return _codes(web, user, codes, PAGE)

    return _act(web, csrf, action, auth_limit=True)


@router.post(PAGE + "/disable")
def disable(web: WebDep, csrf: Field = "", password: Field = "", code: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        manage.disable(s, user, password, code.strip(), current_session=row.id, clock=web.ctx.clock)
        notices.member_disabled(s, user.id, web.ctx.clock)  # the owners and admins, where the policy requires 2FA
        return web.redirect(PAGE + "?done=disabled")

    return _act(web, csrf, action, auth_limit=True)


@router.post(PAGE + "/sessions/{session_id}/sign-out")
def sign_out_one(web: WebDep, session_id: Annotated[int, Path(ge=1, le=2**62)], csrf: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        sessions.revoke(s, user.id, session_id, web.ctx.clock)
        return web.redirect("/login?signed_out=1" if session_id == row.id else PAGE + "?done=signed_out")

    return _act(web, csrf, action)


@router.post(PAGE + "/sessions/sign-out-others")
def sign_out_others(web: WebDep, csrf: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        sessions.revoke_others(s, user.id, row.id, clock=web.ctx.clock)
        return web.redirect(PAGE + "?done=signed_out_others")

    return _act(web, csrf, action)


@router.post(PAGE + "/api-keys")
def create_key(web: WebDep, csrf: Field = "", name: Annotated[str, Form(max_length=100)] = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        if not name.strip():
            return _page(web, s, row, user, 422, error="Give the key a name.")
        created = api_keys.create(s, user, name.strip(), web.ctx.clock)
        return web.render("api_key.html", name=created.row.name, key=created.key)

    return _act(web, csrf, action)


@router.post(PAGE + "/api-keys/{key_id}/revoke")
def revoke_key(web: WebDep, key_id: Annotated[int, Path(ge=1, le=2**62)], csrf: Field = "") -> Response:
    def action(s: Session, row: UserSession, user: User) -> Response:
        api_keys.revoke(s, user.id, key_id, web.ctx.clock)
        return web.redirect(PAGE + "?done=key_revoked")

    return _act(web, csrf, action)
