"""Adding the pages to the application that serves the API (the composition root calls ``install``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Scope

from web import orgs, settings, signin
from web.pages import Redirect, WebError, environment
from web.security import harden

API_PATHS = ("/api/", "/docs", "/redoc", "/openapi.json", "/healthz")
STATIC = __file__.rsplit("/", 1)[0] + "/static"


class Static(StaticFiles):
    """Static files with the pages' headers (``nosniff`` above all: a script is served only as a script)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        harden(response)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _page(status: int, message: str, retry_after: int | None = None) -> Response:
    html = environment().get_template("error.html").render(status=status, message=message)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return harden(HTMLResponse(html, status_code=status, headers=headers))


MESSAGES = {
    404: "There is no such page.",
    405: "That page does not take this kind of request.",
    422: "Something in the form is too long or not valid; go back and check it.",
}


def _for_pages(app: FastAPI, kind: type[Exception]) -> None:
    """Errors on the pages' paths as a page, with the status (and the log line) the API's handler gives them; on
    the API's paths, the API's answer (JSON)."""
    api_handler: Callable[[Request, Any], Awaitable[Response]] = app.exception_handlers[kind]  # type: ignore[assignment]

    async def handle(request: Request, exc: Exception) -> Response:
        answer = await api_handler(request, exc)
        if request.url.path.startswith(API_PATHS):
            return answer
        return _page(answer.status_code, MESSAGES.get(answer.status_code, "Something went wrong on our side."))

    app.add_exception_handler(kind, handle)


def install(app: FastAPI) -> None:
    for module in (signin, settings, orgs):
        app.include_router(module.router)
    app.mount("/static", Static(directory=STATIC), name="static")

    @app.exception_handler(WebError)
    async def _refused(_: Request, exc: WebError) -> Response:
        return _page(exc.status, exc.message, exc.retry_after)

    for kind in (RequestValidationError, HTTPException, Exception):
        _for_pages(app, kind)

    @app.exception_handler(Redirect)
    async def _redirect(_: Request, exc: Redirect) -> Response:
        return harden(RedirectResponse(exc.to, status_code=303))
