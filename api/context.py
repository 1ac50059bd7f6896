"""Per-request context: the database, the clock, who is calling, from where, and the rate limits."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Request, Response
from sqlalchemy.orm import Session, sessionmaker

from api import devices
from api.errors import ApiError, is_failure
from api.ratelimit import Limit, Limiter, account_key, challenge_key, digest
from twofa import api_keys, audit, sessions
from twofa.clock import Clock
from twofa.db import transaction
from twofa.errors import DomainError, InvalidApiKey, InvalidSession
from twofa.logins import EnrolmentGate
from twofa.models import User
from twofa.sessions import Client
from twofa.settings import IPNetwork, Settings


@dataclass(frozen=True)
class Principal:
    user: User
    session_id: int | None  # None when calling with an API key
    api_key_id: int | None
    scope: str
    verified: bool = False  # a session that passed a second factor


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(value: str | None) -> IPAddress | None:
    """``value`` as an address; None when it is not one (or carries an IPv6 zone, which no client address has)."""
    try:
        ip = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return None
        return ip.ipv4_mapped or ip
    return ip


def over_https(request: Request, trusted: tuple[IPNetwork, ...]) -> bool:
    """Whether the client reached us over HTTPS: the request's own scheme, or ``X-Forwarded-Proto`` from a trusted
    proxy (the TLS terminator in front)."""
    if request.url.scheme == "https":
        return True
    peer = _address(request.client.host if request.client else None)
    forwarded = request.headers.get("x-forwarded-proto", "").strip().lower()
    return forwarded == "https" and peer is not None and any(peer in net for net in trusted)


def client_address(peer: str | None, forwarded: str | None, trusted: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The client: the peer, or, when the peer is a trusted proxy, the nearest address of ``X-Forwarded-For`` that is
    not itself a trusted proxy. An entry that does not parse stands for nothing: the peer's address is taken."""
    peer_ip = _address(peer)
    if peer_ip is None or not forwarded or not any(peer_ip in net for net in trusted):
        return peer_ip
    hop: IPAddress | None = peer_ip
    for entry in reversed(forwarded.split(",")):
        hop = _address(entry)
        if hop is None:
            return peer_ip
        if not any(hop in net for net in trusted):
            return hop
    return hop  # every hop a trusted proxy: the farthest


def limit_key(ip: IPAddress | None) -> str:
    """What the per-address limits count: an IPv4 address, or an IPv6 client's /64 (one subscriber's network)."""
    if ip is None:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Ctx:
    factory: sessionmaker[Session]
    clock: Clock
    settings: Settings
    limiter: Limiter
    request: Request
    response: Response | None = None  # where headers and cookies for the answer go
    _budgets: list[Limit] = field(default_factory=list)  # what a failure of this request is charged to

    @functools.cached_property
    def _ip(self) -> IPAddress | None:
        peer = self.request.client.host if self.request.client else None
        forwarded = ",".join(self.request.headers.getlist("x-forwarded-for")) or None
        return client_address(peer, forwarded, self.settings.trusted_proxies)

    @property
    def client(self) -> Client:
        ip = self._ip
        return Client(
            ip=str(ip) if ip is not None else None,
            user_agent=self.request.headers.get("user-agent", "")[:512] or None,
        )

    @property
    def where(self) -> str:
        """The client's key in the per-address limits."""
        return limit_key(self._ip)

    @property
    def gate(self) -> EnrolmentGate:
        gate: EnrolmentGate = self.request.app.state.gate
        return gate

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
        """Count one request against ``limit`` per ``window`` seconds of ``key``; 429 beyond it."""
        _refuse_after(self.limiter.hit(Limit(key, limit, window)))

    async def alimit(self, key: str, limit: int, window: int = 60) -> None:
        """``limit`` on the event loop."""
        _refuse_after(await self.limiter.ahit(Limit(key, limit, window)))

    def limit_auth(self, email: str | None = None, challenge: str | None = None) -> None:
        """The failure budgets of the endpoints that check passwords and codes: refuse (429) once one is spent, and
        charge this request to them if it fails (``api.errors`` does, on a wrong password, code or challenge).

        Failures, not requests, are counted: per client address, and per account and address (a sign-in's second
        step: per challenge, which stands for one account and one client), so that a stranger's failures slow the
        stranger. The account-wide budget (``ratelimit_account_failures`` consecutive failures) refuses only clients
        without the account's device token."""
        s = self.settings
        budgets = [Limit(f"fail:ip:{self.where}", s.ratelimit_auth_per_ip)]
        if email:
            budgets.append(self._pair_budget(email))
            if not devices.valid(self._device_token(), email, self.clock.now()):
                budgets.append(self._account_budget(email))
        if challenge:
            budgets.append(Limit("fail:" + challenge_key(challenge), s.ratelimit_auth_per_account))
        _refuse_after(self.limiter.spent(*budgets))
        self._budgets = budgets
        self.request.state.charge_failure = functools.partial(self.limiter.acharge, *budgets)

    def failed(self, exc: DomainError) -> None:
        """Charge a failure caught by the caller (the pages show it, where the API's error handler answers it) to the
        budgets of ``limit_auth``: once, and only for a guess (``api.errors.is_failure``)."""
        if self._budgets and is_failure(exc):
            self.limiter.charge(*self._budgets)
        self._budgets = []
        self.request.state.charge_failure = None

    def signed_in(self, email: str) -> None:
        """A correct password for ``email``: the account's consecutive failures start again from zero, and the client
        gets the account's device token (header and cookie)."""
        self.limiter.clear(self._account_budget(email), self._pair_budget(email))
        self.request.state.charge_failure = None
        if self.response is None:
            return
        days = self.settings.device_token_days
        token = devices.issue(email, self.clock.now(), days)
        self.response.headers[devices.HEADER] = token
        self.response.set_cookie(
            devices.COOKIE,
            token,
            max_age=days * 86400,
            httponly=True,
            samesite="strict",
            secure=over_https(self.request, self.settings.trusted_proxies),
        )

    def _pair_budget(self, email: str) -> Limit:
        key = digest("fail:acct-ip", f"{email.strip().lower()}|{self.where}")
        return Limit(key, self.settings.ratelimit_auth_per_account)

    def _account_budget(self, email: str) -> Limit:
        return Limit("fail:" + account_key(email), self.settings.ratelimit_account_failures, 86400)

    def _device_token(self) -> str | None:
        return self.request.headers.get(devices.HEADER) or self.request.cookies.get(devices.COOKIE)

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
        return Principal(user=owner, session_id=row.id, api_key_id=None, scope=row.scope, verified=row.twofa_verified)


def _refuse_after(wait: int | None) -> None:
    if wait is not None:
        raise ApiError(429, "rate_limited", "too many requests; slow down", retry_after=wait)


__all__ = ["Ctx", "DomainError", "Principal"]


async def get_ctx(request: Request, response: Response) -> Ctx:
    """The FastAPI dependency: a context per request, with the overall per-address limit applied. A coroutine, so
    that it runs on the event loop rather than in a trip to the thread pool (``api.routing``). Headers and cookies
    set on ``response`` reach the answer."""
    state = request.app.state
    ctx = Ctx(state.factory, state.clock, state.settings, state.limiter, request, response)
    await ctx.alimit(f"ip:{ctx.where}", state.settings.ratelimit_per_ip)
    return ctx
