"""``twofa serve`` as its own process, with one and with two server processes on one port, on the real database:
answers on a keep-alive connection without waiting for delayed ACKs (uvicorn's own multi-process listener left
Nagle's algorithm on: each answer took about 44 ms), and a clean exit on SIGINT."""

from __future__ import annotations

import contextlib
import http.client
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.services import api_server

pytestmark = pytest.mark.integration


@pytest.fixture(params=[1, 2], ids=["one-process", "two-processes"])
def served(worker_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    with api_server(worker_env, tmp_path / "serve.log", workers=request.param) as port:
        yield port


def test_answers_on_a_keep_alive_connection_come_at_once(served: int) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "not-the-password"})
    timings = []
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", served, timeout=10)) as connection:
        connection.request("POST", "/api/v1/auth/login", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        payload = json.loads(answer.read())
        assert answer.status == 401 and payload["error"]["code"] == "invalid_credentials", payload
        for _ in range(15):
            started = time.perf_counter()
            connection.request("GET", "/healthz")
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read()) == {"status": "ok"}
            timings.append(time.perf_counter() - started)
    # With Nagle's algorithm on, every answer after the first waits ~40 ms for the client's delayed ACK; /healthz
    # takes about a millisecond.
    assert statistics.median(timings) < 0.020, timings
