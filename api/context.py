"""Per-request context: the database, the clock, who is calling, and the rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from api.errors import ApiError
from api.ratelimit import Limiter, account_key, challenge_key
from twofa import api_keys, audit, sessions
from twofa.clock import Clock
from twofa.db import transaction
from twofa.errors import DomainError, InvalidApiKey, InvalidSession
from twofa.models import User
from twofa.sessions import Client
from twofa.settings import Settings


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: int | None  # None when calling with an API key
    api_key_id: int | None
    scope: str


@dataclass
class Ctx:
    factory: sessionmaker[Session]
    clock: Clock
    settings: Settings
    limiter: Limiter
    request: Request

    @property
    def client(self) -> Client:
        host = self.request.client.host if self.request.client else None
        return Client(ip=host, user_agent=self.request.headers.get("user-agent", "")[:512] or None)

    @property
    def token(self) -> str | None:
        header = self.request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None

    @contextmanager
    def unit(self) -> Iterator[Session]:
        """One transaction; its audit rows name this request's client (and its credential, once checked)."""
        actor = audit.Actor(audit.Credential.ANONYMOUS, client_ip=self.client.ip)
        with audit.acting_as(actor), transaction(self.factory) as session:
            yield session

    def limit(self, key: str, limit: int, window: int = 60) -> None:
        _refuse_after(self.limiter.hit(key, limit, window))

    async def alimit(self, key: str, limit: int, window: int = 60) -> None:
        """``limit`` on the event loop."""
        _refuse_after(await self.limiter.ahit(key, limit, window))

    def limit_auth(self, email: str | None = None, challenge: str | None = None) -> None:
        """The stricter limits of the endpoints that check passwords and codes: per IP, and per account.

        The second step of a sign-in names its account only through the challenge, which the database must be read
        to resolve; it is limited per challenge instead. That bounds the account too: a challenge belongs to one
        account, and only a password sign-in, limited per account, makes one."""
        self.limit(f"ip:{self.client.ip}:auth", self.settings.ratelimit_auth_per_ip)
        if email:
            self.limit(account_key(email), self.settings.ratelimit_auth_per_account)
        if challenge:
            self.limit(challenge_key(challenge), self.settings.ratelimit_auth_per_account)

    def principal(self, session: Session, *, api_key: bool = False, enrol_scope: bool = False) -> Principal:
        """Who is calling: a session token, or (where ``api_key``) an API key. A session limited to enrolment is
        accepted only where ``enrol_scope``."""
        token = self.token
        if token is None:
            raise ApiError(401, "unauthenticated", "send 'Authorization: Bearer <session token or API key>'")
        try:
            if token.startswith(api_keys.KEY_PREFIX + "_"):
                if not api_key:
                    raise ApiError(403, "session_required", "this needs a signed-in session, not an API key")
                key, user = api_keys.authenticate_key(session, token, self.clock)
                audit.authenticated(audit.Credential.API_KEY, key.id)
                return Principal(user=user, session_id=None, api_key_id=key.id, scope="full")
            row, owner = sessions.authenticate(session, token, self.clock)
            audit.authenticated(audit.Credential.SESSION, row.id)
        except (InvalidApiKey, InvalidSession) as exc:
            raise ApiError(401, exc.code, exc.message) from None
        if row.scope != "full" and not enrol_scope:
            raise ApiError(403, "enrolment_required", "set up two-factor authentication first")
        self.limit(f"user:{owner.id}", self.settings.ratelimit_per_ip)
        return Principal(user=owner, session_id=row.id, api_key_id=None, scope=row.scope)


def _refuse_after(wait: int | None) -> None:
    if wait is not None:
        raise ApiError(429, "rate_limited", "too many requests; slow down", retry_after=wait)


__all__ = ["Ctx", "DomainError", "Principal"]


async def get_ctx(request: Request) -> Ctx:
    """The FastAPI dependency: a context per request, with the overall per-IP limit applied. A coroutine, so that it
    runs on the event loop rather than in a trip to the thread pool (``api.routing``)."""
    state = request.app.state
    ctx = Ctx(state.factory, state.clock, state.settings, state.limiter, request)
    await ctx.alimit(f"ip:{ctx.client.ip}", state.settings.ratelimit_per_ip)
    return ctx
