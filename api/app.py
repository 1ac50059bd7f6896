"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from api import errors
from api.ratelimit import Limiter
from api.request_bounds import RequestBounds
from api.routes import account, auth, orgs, twofa_routes, weekly
from api.routing import close_slots
from twofa.clock import SYSTEM_CLOCK, Clock
from twofa.db import session_factory
from twofa.errors import InvalidInput
from twofa.logins import EnrolmentGate
from twofa.settings import get_settings, require_secret_key

PREFIX = "/api/v1"


def create_app(
    *,
    gate: EnrolmentGate,
    factory: sessionmaker[Session] | None = None,
    clock: Clock = SYSTEM_CLOCK,
    limiter: Limiter | None = None,
) -> FastAPI:
    """The API. ``gate``: whether a user may only set up 2FA (``policies.gate.enrolment_required``), required so that
    no server signs people in without the organisations' deadlines."""
    settings = get_settings()
    try:
        require_secret_key(settings)
    except InvalidInput as exc:  # one line, not a traceback, however the app is started (a bare uvicorn included)
        raise SystemExit(f"error: {exc.message}") from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            try:
                await app.state.limiter.aclose()
            finally:
                await close_slots()

    app = FastAPI(
        lifespan=lifespan,
        title="Wevion two-factor authentication",
        version="1",
        description="Sign-in with a second factor, 2FA set-up and management, API keys, and org 2FA policies.",
        # Every error has the same body: {"error": {"code", "message"}}; the codes are listed in twofa/errors.py.
        responses={
            401: {"model": errors.ErrorResponse, "description": "not signed in, or a wrong password or code"},
            403: {"model": errors.ErrorResponse, "description": "not allowed (e.g. 2FA set-up required first)"},
            404: {"model": errors.ErrorResponse, "description": "no such thing, or not yours"},
            409: {"model": errors.ErrorResponse, "description": "the account's state forbids it"},
            413: {"model": errors.ErrorResponse, "description": "request body over 64 KiB"},
            422: {"model": errors.ErrorResponse, "description": "malformed body or values"},
            429: {"model": errors.ErrorResponse, "description": "rate limited or second factor locked"},
        },
    )
    app.state.factory = factory or session_factory()
    app.state.clock = clock
    app.state.gate = gate
    app.state.settings = settings
    app.state.limiter = limiter or Limiter(settings.ratelimit_url)
    errors.install(app)
    app.add_middleware(RequestBounds)

    for module in (auth, twofa_routes, account, orgs, weekly):
        app.include_router(module.router, prefix=PREFIX)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
