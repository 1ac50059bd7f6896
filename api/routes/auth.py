"""Signing in and out: ``/auth/login``, ``/auth/2fa/login``, ``/auth/2fa/email-otp``, ``/auth/logout``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Depends

from api import devices
from api.context import Ctx, get_ctx
from api.errors import ApiError, ErrorResponse
from api.routing import Router
from api.schemas import Accepted, Done, EmailOtpRequest, LoginRequest, LoginResponse, SecondFactorRequest, SessionOut
from twofa import enrolment, logins, manage, sessions
from twofa.errors import TwoFactorNotEnabled
from twofa.sessions import IssuedSession

router = Router(tags=["sign-in"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


def _session(issued: IssuedSession) -> SessionOut:
    return SessionOut(
        token=issued.token,
        session_id=issued.session_id,
        scope=issued.scope,
        twofa_verified=issued.twofa_verified,
    )


def _logged_in(done: logins.LoggedIn) -> LoginResponse:
    return LoginResponse(
        status="enrolment_required" if done.enrolment_required else "ok", session=_session(done.session)
    )


@router.post(
    "/auth/login",
    response_model=LoginResponse,
    response_model_exclude_none=True,
    response_model_by_alias=True,
    responses=devices.RESPONSES,
    openapi_extra=devices.OPENAPI_EXTRA,
)
def login(body: LoginRequest, ctx: CtxDep) -> LoginResponse:
    """Email and password. Answers a session, or that a second factor is needed (with a short-lived challenge and
    the methods available), or a session that may only set up 2FA (an organisation's deadline has passed).
    Unknown emails and wrong passwords get the same answer."""
    ctx.limit_auth(body.email)
    with ctx.unit() as s:
        result = logins.login_with_password(s, body.email, body.password, ctx.client, gate=ctx.gate, clock=ctx.clock)
    ctx.signed_in(body.email)
    if isinstance(result, logins.SecondFactorRequired):
        return LoginResponse(
            status="2fa_required",
            challenge=result.challenge,
            methods=result.methods,
            expires_at=result.expires_at,
            email_code_sent=result.email_code_sent,
        )
    return _logged_in(result)


@router.post(
    "/auth/2fa/login",
    response_model=LoginResponse,
    response_model_exclude_none=True,
    response_model_by_alias=True,
    responses={429: {"model": ErrorResponse, "description": "second factor locked after wrong codes"}},
)
def second_factor_login(body: SecondFactorRequest, ctx: CtxDep) -> LoginResponse:
    """Finish a login with a TOTP code, an email code or a backup code."""
    ctx.limit_auth(challenge=body.challenge)
    with ctx.unit() as s:
        done = logins.complete_login(
            s, body.challenge, body.code, ctx.client, gate=ctx.gate, method=body.method, clock=ctx.clock
        )
    return _logged_in(done)


@router.post("/auth/2fa/email-otp", status_code=202, response_model=Accepted)
def email_otp(ctx: CtxDep, body: Annotated[EmailOtpRequest | None, Body()] = None) -> Accepted:
    """Queue an email code: with ``challenge``, for that login (a resend); signed in without 2FA, with the
    password, to start email 2FA; signed in with email 2FA (no body needed), to confirm a change such as a disable
    or a backup-code regeneration."""
    body = body or EmailOtpRequest()
    ctx.limit_auth(challenge=body.challenge)
    with ctx.unit() as s:
        if body.challenge:
            logins.resend_login_code(s, body.challenge, ctx.clock)
            return Accepted()
        principal = ctx.principal(s, enrol_scope=True)
        if principal.user.twofa_method == "email":
            manage.request_confirmation_code(s, principal.user, ctx.clock)
        elif principal.user.twofa_method is None:
            if body.password is None:
                raise ApiError(422, "invalid_request", "password: needed to start email codes")
            enrolment.start_email(s, principal.user, body.password, ctx.clock)
        else:
            raise TwoFactorNotEnabled("email codes are not this account's second factor")
    return Accepted()


@router.post("/auth/logout", response_model=Done)
def logout(ctx: CtxDep) -> Done:
    """End the calling session."""
    with ctx.unit() as s:
        principal = ctx.principal(s, enrol_scope=True)
        if principal.session_id is not None:
            sessions.revoke(s, principal.user.id, principal.session_id, ctx.clock)
    return Done()
