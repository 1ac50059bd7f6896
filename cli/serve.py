"""``twofa serve``: the HTTP API and the pages."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # every ``twofa`` command loads this module; the web stack loads only to serve
    from fastapi import FastAPI


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def make_app() -> FastAPI:
    """The application as each server process builds it: the API and the pages, with emails handed to the Celery
    workers after each commit. (The API package itself knows no queue; this edge connects the two.) What the process
    has made by then is frozen out of the garbage collector's reach (``twofa.heap``): a full collection would
    otherwise hold up the requests in flight for about 100 ms."""
    from api.app import create_app
    from twofa.heap import freeze_startup_objects
    from twofa.settings import require_secret_key
    from web.app import install as install_pages
    from workers.dispatch import install

    require_secret_key()
    install()
    app = create_app()
    install_pages(app)
    freeze_startup_objects()
    return app


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port."),
    workers: int = typer.Option(1, min=1, help="Server processes (each with its own event loop and pools)."),
    access_log: bool = typer.Option(True, help="Log every request (leave it to the proxy in front, if it logs)."),
    log_level: LogLevel = typer.Option(LogLevel.info, case_sensitive=False, help="The server's log level."),
) -> None:
    """Run the HTTP API and the pages (uvicorn). Emails are handed to the Celery workers after each commit."""
    from api.server import ServerConfig, run_server
    from twofa.settings import require_secret_key

    require_secret_key()  # fail here, with one line, rather than in every server process
    config = ServerConfig(
        "cli.serve:make_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        access_log=access_log,
        log_level=log_level.value,
    )
    run_server(config)
