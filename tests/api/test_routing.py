"""``api.routing.Router``: a ``def`` endpoint runs in a worker thread, with FastAPI's parameters, response model and
OpenAPI as for any endpoint."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from api.routing import Router, close_slots, in_thread
from tests.harness.services import free_port, wait_for


@contextmanager
def serving(*routers: Router) -> Iterator[str]:
    app = FastAPI()
    for router in routers:
        app.include_router(router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, what="uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Body(BaseModel):
    name: str


class Answer(BaseModel):
    name: str
    thread: str
    note: str | None = None


def test_sync_endpoint_runs_off_the_event_loop_with_its_response_model() -> None:
    router = Router()
    loop_threads: list[str] = []

    @router.post("/echo/{n}", response_model=Answer, response_model_exclude_none=True)
    def echo(n: int, body: Body) -> Answer:
        return Answer(name=body.name * n, thread=threading.current_thread().name)

    @router.get("/loop")
    async def on_loop() -> dict[str, str]:
        loop_threads.append(threading.current_thread().name)
        return {}

    with serving(router) as url, httpx.Client(base_url=url) as client:
        client.get("/loop")
        answer = client.post("/echo/2", json={"name": "ab"})
        malformed = client.post("/echo/x", json={"name": "ab"})
        schema = client.get("/openapi.json").json()
    assert answer.status_code == 200
    assert answer.json()["name"] == "abab" and "note" not in answer.json()  # the decorator's options still apply
    assert answer.json()["thread"] != loop_threads[0]  # not the event loop's thread
    assert malformed.status_code == 422
    operation = schema["paths"]["/echo/{n}"]["post"]
    assert operation["parameters"][0]["name"] == "n"
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Body")
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Answer")


def test_sync_endpoints_share_the_configured_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    """At most ``TWOFA_API_CONCURRENCY`` requests run a limited router's endpoints at once, across its endpoints;
    a ``limited=False`` router does not wait for those slots."""
    monkeypatch.setenv("TWOFA_API_CONCURRENCY", "2")
    lock = threading.Lock()
    running = {"limited": 0, "free": 0}
    peak = {"limited": 0, "free": 0}

    def busy(kind: str) -> dict[str, str]:
        with lock:
            running[kind] += 1
            peak[kind] = max(peak[kind], running[kind])
        time.sleep(0.2)
        with lock:
            running[kind] -= 1
        return {}

    limited, free = Router(), Router(limited=False)

    @limited.get("/a")
    def a() -> dict[str, str]:
        return busy("limited")

    @limited.get("/b")
    def b() -> dict[str, str]:
        return busy("limited")

    @free.get("/slow-read")
    def slow_read() -> dict[str, str]:
        return busy("free")

    with serving(limited, free) as url:

        def get(path: str) -> int:
            with httpx.Client(base_url=url, timeout=30) as client:
                return client.get(path).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(get, ["/a", "/b"] * 3 + ["/slow-read"] * 6))
    assert codes == [200] * 12
    assert peak["limited"] == 2  # six requests over two endpoints, two at a time
    assert peak["free"] > 2  # the slow reads did not queue behind them


def test_slot_threads_carry_the_callers_context_and_end_with_the_application(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWOFA_API_CONCURRENCY", "3")
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

    def endpoint(n: int) -> tuple[int, str, threading.Thread]:
        time.sleep(0.01)
        return n, request_id.get(), threading.current_thread()

    run = in_thread(endpoint)

    async def requests() -> list[tuple[int, str, threading.Thread]]:
        async def one(n: int) -> tuple[int, str, threading.Thread]:
            request_id.set(f"request-{n}")
            answer: tuple[int, str, threading.Thread] = await run(n)
            return answer

        answers = await asyncio.gather(*(one(n) for n in range(8)))
        await close_slots()
        return answers

    answers = asyncio.run(requests())
    assert [(n, rid) for n, rid, _ in answers] == [(n, f"request-{n}") for n in range(8)]
    threads = {thread for _, _, thread in answers}
    assert len(threads) == 3 and all(t.name.startswith("twofa-api") for t in threads)  # the slots, all in use
    assert not any(t.is_alive() for t in threads)  # ended at shutdown
