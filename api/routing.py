"""The API's router: sync endpoints run in a worker thread, a few at a time, and everything around them on the
event loop.

The core is synchronous (SQLAlchemy sessions on psycopg), so an endpoint must leave the event loop while it talks to
the database. FastAPI does that for a ``def`` endpoint, but then also validates its return value against the
response model in a second trip to the thread pool, and runs every ``def`` dependency in a trip of its own. A trip
(futures, wake-ups, GIL hand-overs) costs as much CPU as a whole ``/healthz`` request. ``Router`` wraps each ``def``
endpoint in a coroutine that makes exactly one trip: FastAPI sees a coroutine, so the response model is applied on
the event loop (cheap, no I/O), and our one dependency, ``get_ctx``, is a coroutine too.

The trips of a server process share ``TWOFA_API_CONCURRENCY`` slots: the threads of one executor per event loop
(anyio's own pool allows 40 threads). Each holds a database connection, and threads beyond a few only take turns at
the GIL, each turn a context switch. Requests beyond the slots wait in the executor's queue, where a free thread
takes the next one itself (anyio's ``CapacityLimiter`` would wake every waiting request through the event
loop). A request cancelled while it waits for a slot never runs; one cancelled while it runs finishes its unit of
work in its thread. Code in a slot thread cannot call back into the loop with ``anyio.from_thread`` (none does). A
router for slow reads (``limited=False``) uses anyio's pool instead, so that it cannot take the sign-in slots.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter
from sqlalchemy.exc import DBAPIError

from twofa.settings import get_settings

log = logging.getLogger(__name__)

# Per event loop: tests run several servers, each on its own loop.
_SLOTS: RunVar[ThreadPoolExecutor | None] = RunVar("twofa_api_slots", default=None)


def _slots() -> ThreadPoolExecutor:
    slots = _SLOTS.get()
    if slots is None:
        slots = ThreadPoolExecutor(get_settings().api_concurrency, thread_name_prefix="twofa-api")
        _SLOTS.set(slots)
    return slots


async def close_slots() -> None:
    """End this event loop's slot threads at the application's shutdown, once the work they still run has ended
    (waited for off the event loop)."""
    slots = _SLOTS.get()
    _SLOTS.set(None)
    if slots is not None:
        await anyio.to_thread.run_sync(slots.shutdown)


def in_thread(endpoint: Callable[..., Any], *, limited: bool = True) -> Callable[..., Any]:
    """``endpoint`` as a coroutine that runs it in a worker thread (in one of the API's slots when ``limited``),
    with the caller's context variables. ``functools.wraps`` keeps its signature and annotations, from which FastAPI
    reads the parameters."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        call = functools.partial(_again_after_disconnect, functools.partial(endpoint, *args, **kwargs))
        if not limited:
            return await anyio.to_thread.run_sync(call)
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(_slots(), context.run, call)

    return run


# The server ended the session itself (a shutdown or restart, SQLSTATE class 57P): it aborts the transaction of a
# session it terminates, so a COMMIT answered with this was not carried out.
_SERVER_ENDED_SESSION = ("57P01", "57P02", "57P03")


def _again_after_disconnect(call: Callable[[], Any]) -> Any:
    """``call()``, run once more when the database connection died under it before its transaction committed (a
    server restart ends the transactions in flight): the request then runs again, on a new connection (``twofa.db``
    waits for the server to be back). That is certain when a statement failed (``statement`` set: COMMIT was never
    sent), and when the server answered COMMIT by ending the session; a connection simply lost at COMMIT leaves the
    outcome unknown and is not retried. A commit that landed just before a termination would make the run a second
    attempt: a code is then refused as used (4xx), never accepted twice."""
    try:
        return call()
    except DBAPIError as exc:
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if not exc.connection_invalidated or (exc.statement is None and sqlstate not in _SERVER_ENDED_SESSION):
            raise
    log.warning("the database ended the connection before the commit; running the request again")
    return call()


class Router(APIRouter):
    def __init__(self, *args: Any, limited: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limited = limited

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            endpoint = in_thread(endpoint, limited=self.limited)
        super().add_api_route(path, endpoint, **kwargs)
