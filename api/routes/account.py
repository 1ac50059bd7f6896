"""The caller's account: login history, sessions, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from api.context import Ctx, get_ctx
from api.routing import Router
from api.schemas import ApiKeyCreated, ApiKeyInfo, ApiKeyRequest, Done, HistoryEntry, PathId, SessionInfo
from twofa import api_keys, sessions
from twofa.login_history import history
from twofa.models import ApiKey

router = Router(tags=["account"])
CtxDep = Annotated[Ctx, Depends(get_ctx)]


@router.get("/auth/login-history", response_model=list[HistoryEntry], response_model_by_alias=True)
def login_history(ctx: CtxDep, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[HistoryEntry]:
    """The caller's most recent sign-in attempts, newest first, each with ``2fa_verified``."""
    with ctx.unit() as s:
        user = ctx.principal(s, api_key=True).user
        rows = history(s, user.id, limit)
        return [
            HistoryEntry(
                at=r.at,
                ip=r.ip,
                user_agent=r.user_agent,
                outcome=r.outcome,
                method=r.method,
                twofa_verified=r.twofa_verified,
            )
            for r in rows
        ]


@router.get("/auth/sessions", response_model=list[SessionInfo], response_model_by_alias=True)
def list_sessions(ctx: CtxDep) -> list[SessionInfo]:
    """The caller's active sessions."""
    with ctx.unit() as s:
        principal = ctx.principal(s)
        return [
            SessionInfo(
                id=r.id,
                created_at=r.created_at,
                last_seen_at=r.last_seen_at,
                expires_at=r.expires_at,
                ip=r.ip,
                user_agent=r.user_agent,
                twofa_verified=r.twofa_verified,
                current=r.id == principal.session_id,
            )
            for r in sessions.list_active(s, principal.user.id, ctx.clock)
        ]


@router.delete("/auth/sessions/{session_id}", response_model=Done)
def revoke_session(session_id: PathId, ctx: CtxDep) -> Done:
    """Sign out one of the caller's sessions."""
    with ctx.unit() as s:
        sessions.revoke(s, ctx.principal(s).user.id, session_id, ctx.clock)
    return Done()


@router.post("/auth/sessions/revoke-others", response_model=Done)
def revoke_other_sessions(ctx: CtxDep) -> Done:
    """Sign out everywhere else: every session of the caller but this one ends."""
    with ctx.unit() as s:
        principal = ctx.principal(s)
        sessions.revoke_others(s, principal.user.id, principal.session_id, clock=ctx.clock)
    return Done()


def _key(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked_at is not None,
    )


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=201)
def create_key(body: ApiKeyRequest, ctx: CtxDep) -> ApiKeyCreated:
    """A new API key, shown this once. Keys authenticate scripts whatever the account's 2FA state."""
    with ctx.unit() as s:
        created = api_keys.create(s, ctx.principal(s).user, body.name, ctx.clock)
        return ApiKeyCreated(**_key(created.row).model_dump(), key=created.key)


@router.get("/api-keys", response_model=list[ApiKeyInfo])
def list_keys(ctx: CtxDep) -> list[ApiKeyInfo]:
    """The caller's API keys (never the keys themselves: only their public prefix)."""
    with ctx.unit() as s:
        return [_key(r) for r in api_keys.list_keys(s, ctx.principal(s, api_key=True).user.id)]


@router.delete("/api-keys/{key_id}", response_model=Done)
def revoke_key(key_id: PathId, ctx: CtxDep) -> Done:
    """Revoke one of the caller's API keys; it stops working at once."""
    with ctx.unit() as s:
        api_keys.revoke(s, ctx.principal(s, api_key=True).user.id, key_id, ctx.clock)
    return Done()
