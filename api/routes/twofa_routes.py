"""Setting up and managing 2FA: ``/auth/2fa/setup|verify|verify-email-otp|disable|backup-codes|status``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from api.context import Ctx, get_ctx
from api.routing import Router
from api.schemas import (
    BackupCodesResponse,
    CodeRequest,
    DisableRequest,
    Done,
    RegenerateRequest,
    SetupRequest,
    SetupResponse,
    StatusResponse,
)
from policies import notices
from policies.evaluate import asked_of
from twofa import enrolment, manage

router = Router(tags=["two-factor authentication"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.post("/auth/2fa/setup", response_model=SetupResponse)
def setup(body: SetupRequest, ctx: CtxDep) -> SetupResponse:
    """Start enrolling an authenticator app, with the password (and, to replace email codes, a current code): the
    key URI, its QR code (PNG data URL) and the secret. Calling it again before verifying replaces the pending
    secret."""
    ctx.limit_auth()
    with ctx.unit() as s:
        user = ctx.principal(s, enrol_scope=True).user
        started = enrolment.start_totp(s, user, body.password, body.code, ctx.clock)
    return SetupResponse(otpauth_url=started.otpauth_url, qr_code=started.qr_data_url, secret=started.secret)


@router.post("/auth/2fa/verify", response_model=BackupCodesResponse)
def verify(body: CodeRequest, ctx: CtxDep) -> BackupCodesResponse:
    """Confirm the app with a current code: 2FA is on; the 10 backup codes are returned this once."""
    ctx.limit_auth()
    with ctx.unit() as s:
        principal = ctx.principal(s, enrol_scope=True)
        codes = enrolment.confirm_totp(
            s, principal.user, body.code, current_session=principal.session_id, clock=ctx.clock
        )
    return BackupCodesResponse(backup_codes=codes)


@router.post("/auth/2fa/verify-email-otp", response_model=BackupCodesResponse)
def verify_email_otp(body: CodeRequest, ctx: CtxDep) -> BackupCodesResponse:
    """Confirm email codes as the second factor with the code just mailed; returns the backup codes once."""
    ctx.limit_auth()
    with ctx.unit() as s:
        principal = ctx.principal(s, enrol_scope=True)
        codes = enrolment.confirm_email(
            s, principal.user, body.code, current_session=principal.session_id, clock=ctx.clock
        )
    return BackupCodesResponse(backup_codes=codes)


@router.post("/auth/2fa/disable", response_model=Done)
def disable(body: DisableRequest, ctx: CtxDep) -> Done:
    """Turn 2FA off with the password and a current code (or a backup code); every other session ends."""
    ctx.limit_auth()
    with ctx.unit() as s:
        principal = ctx.principal(s)
        manage.disable(
            s, principal.user, body.password, body.code, current_session=principal.session_id, clock=ctx.clock
        )
        notices.member_disabled(s, principal.user.id, ctx.clock)  # the owners and admins, where the policy requires 2FA
    return Done()


@router.post("/auth/2fa/backup-codes", response_model=BackupCodesResponse)
def regenerate(body: RegenerateRequest, ctx: CtxDep) -> BackupCodesResponse:
    """A new set of 10 backup codes, confirmed with the password and a current app or email code; the old set stops
    working."""
    ctx.limit_auth()
    with ctx.unit() as s:
        codes = manage.regenerate_backup_codes(s, ctx.principal(s).user, body.password, body.code, ctx.clock)
    return BackupCodesResponse(backup_codes=codes)


@router.get("/auth/2fa/status", response_model=StatusResponse)
def status(ctx: CtxDep) -> StatusResponse:
    """Whether 2FA is on and how, whether SSO manages it, backup codes left, and what the policy asks."""
    with ctx.unit() as s:
        user = ctx.principal(s, api_key=True, enrol_scope=True).user
        st = manage.status(s, user)
        asked = asked_of(s, user.id, ctx.clock.now())
    return StatusResponse(
        enabled=st.enabled,
        method=st.method,
        managed_by_sso=st.managed_by_sso,
        backup_codes_left=st.backup_codes_left,
        required_by_policy=asked.required,
        deadline=asked.deadline,
        policy_status=asked.status,
    )
