"""Every error is JSON ``{"error": {"code", "message"}}`` with a stable code; never a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from twofa.errors import (
    BackupCodeUsed,
    ChallengeInvalid,
    CodeReused,
    DomainError,
    InvalidCode,
    InvalidCredentials,
    TooManyAttempts,
)

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ApiError(Exception):
    """An error raised by the HTTP layer itself (authentication, permissions, rate limits)."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def is_failure(exc: DomainError) -> bool:
    """A wrong password, code or challenge: a guess, charged to the failure budgets (``Ctx.limit_auth``). Malformed
    input and replays are not guesses."""
    guess = isinstance(exc, InvalidCredentials | InvalidCode | ChallengeInvalid)
    return guess and not isinstance(exc, CodeReused | BackupCodeUsed)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        charge = getattr(request.state, "charge_failure", None)
        if charge is not None and is_failure(exc):
            await charge()
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyAttempts) else None
        return error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("loc", ("",))[0] == "path" for e in exc.errors()):  # an id beyond any row's, a bad slug
            return error(404, "not_found", "no such thing")
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, "invalid_request", f"{where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error(500, "internal_error", "something went wrong on our side")
