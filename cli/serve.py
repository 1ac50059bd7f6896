"""``twofa serve``: the HTTP API."""

from __future__ import annotations

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port."),
    workers: int = typer.Option(1, min=1, help="Server processes."),
) -> None:
    """Run the HTTP API (uvicorn). Emails are handed to the Celery workers after each commit."""
    import uvicorn

    from workers.dispatch import install

    install()
    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, workers=workers, proxy_headers=True)
