"""The API's router: sync endpoints run in a worker thread, and everything around them on the event loop.

The core is synchronous (SQLAlchemy sessions on psycopg), so an endpoint must leave the event loop while it talks to
the database. FastAPI does that for a ``def`` endpoint, but then also validates its return value against the
response model in a second trip to the thread pool, and runs every ``def`` dependency in a trip of its own. A trip
costs about 0.4 ms of CPU on a 2-vCPU host (futures, wake-ups, GIL hand-overs), as much as a whole ``/healthz``
request. ``Router`` wraps each ``def`` endpoint in a coroutine that makes exactly one trip: FastAPI sees a coroutine,
so the response model is applied on the event loop (cheap, no I/O), and our one dependency, ``get_ctx``, is a
coroutine too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool


def in_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` as a coroutine that runs it in the thread pool. ``functools.wraps`` keeps its signature and
    annotations, from which FastAPI reads the parameters."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run


class Router(APIRouter):
    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = in_thread(endpoint)
        super().add_api_route(path, endpoint, **kwargs)
