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
    otherwise hold up the requests in flight."""
    from api.app import create_app
    from policies.gate import enrolment_required
    from twofa.heap import freeze_startup_objects
    from web.app import install as install_pages
    from workers.dispatch import install

    install()
    app = create_app(gate=enrolment_required)
    install_pages(app)
    freeze_startup_objects()
    return app


def serve(
    host: str = typer.Option("127.0.0.1", metavar="ADDRESS", help="Address to listen on."),
    port: int = typer.Option(8000, metavar="PORT", help="Port to listen on."),
    workers: int = typer.Option(
        1, min=1, metavar="N", help="Server processes (each with its own event loop and pools)."
    ),
    access_log: bool = typer.Option(True, help="Log every request (leave it to the proxy in front, if it logs)."),
    log_level: LogLevel = typer.Option(
        LogLevel.info, case_sensitive=False, metavar="LEVEL", help="critical, error, warning, info or debug."
    ),
    forwarded_allow_ips: str | None = typer.Option(
        None,
        envvar="TWOFA_FORWARDED_ALLOW_IPS",
        metavar="ADDRESSES",
        help="Proxies (addresses or networks, comma-separated) whose X-Forwarded-For names the client. "
        "Default: none; the peer is the client.",
    ),
) -> None:
    """Run the HTTP API and the pages (uvicorn). Emails are handed to the Celery workers after each commit."""
    import os

    from api.server import ServerConfig, run_server
    from cli.errors import fail
    from twofa.settings import get_settings, parse_networks, require_service_settings

    if forwarded_allow_ips is not None:
        try:
            parse_networks(forwarded_allow_ips)
        except ValueError as exc:
            raise fail(f"--forwarded-allow-ips: {exc}") from None
        os.environ["TWOFA_FORWARDED_ALLOW_IPS"] = forwarded_allow_ips  # read by each server process's settings
        get_settings.cache_clear()
    require_service_settings()  # fail here, with one line, rather than in every server process
    config = ServerConfig(
        "cli.serve:make_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The application reads X-Forwarded-For itself, from the proxies it trusts only (api.context): uvicorn's
        # own handling trusts 127.0.0.1 by default and takes any text for an address.
        proxy_headers=False,
        access_log=access_log,
        log_level=log_level.value,
    )
    run_server(config)
