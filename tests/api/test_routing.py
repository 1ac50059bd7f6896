"""``api.routing.Router``: a ``def`` endpoint runs in a worker thread, with FastAPI's parameters, response model and
OpenAPI as for any endpoint."""

from __future__ import annotations

import threading

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from api.routing import Router
from tests.harness.services import free_port, wait_for


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

    app = FastAPI()
    app.include_router(router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, what="uvicorn to start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get("/loop")
            answer = client.post("/echo/2", json={"name": "ab"})
            malformed = client.post("/echo/x", json={"name": "ab"})
            schema = client.get("/openapi.json").json()
    finally:
        server.should_exit = True
        thread.join(10)
    assert answer.status_code == 200
    assert answer.json()["name"] == "abab" and "note" not in answer.json()  # the decorator's options still apply
    assert answer.json()["thread"] != loop_threads[0]  # not the event loop's thread
    assert malformed.status_code == 422
    operation = schema["paths"]["/echo/{n}"]["post"]
    assert operation["parameters"][0]["name"] == "n"
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Body")
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Answer")
