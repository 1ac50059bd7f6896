"""Adding the pages to the application that serves the API (the composition root calls ``install``)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from web import orgs, settings, signin
from web.pages import Redirect, WebError, environment
from web.security import harden

STATIC = __file__.rsplit("/", 1)[0] + "/static"


class Static(StaticFiles):
    """Static files with the pages' headers (``nosniff`` above all: a script is served only as a script)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        harden(response)
        response.headers["Cache-Control"] = "no-cache"
        return response


def install(app: FastAPI) -> None:
    for module in (signin, settings, orgs):
        app.include_router(module.router)
    app.mount("/static", Static(directory=STATIC), name="static")

    @app.exception_handler(WebError)
    async def _refused(_: Request, exc: WebError) -> Response:
        html = environment().get_template("error.html").render(status=exc.status, message=exc.message)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return harden(HTMLResponse(html, status_code=exc.status, headers=headers))

    @app.exception_handler(Redirect)
    async def _redirect(_: Request, exc: Redirect) -> Response:
        return harden(RedirectResponse(exc.to, status_code=303))
