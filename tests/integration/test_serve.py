"""``twofa serve --workers 2`` as its own process: two server processes on one port, on the real database, and
answers on a keep-alive connection without waiting for delayed ACKs (uvicorn's own multi-process listener left
Nagle's algorithm on: each answer took about 44 ms)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.services import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def served(worker_env: dict[str, str], tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env={**worker_env, "TWOFA_RATELIMIT_AUTH_PER_IP": "1000", "TWOFA_RATELIMIT_AUTH_PER_ACCOUNT": "1000"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        return (tmp_path / "serve.log").read_text().count("Application startup complete") == 2

    try:
        wait_for(up, 60, interval=0.1, what="two server processes")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_two_server_processes_answer_keep_alive_requests_at_once(served: int) -> None:
    body = json.dumps({"email": "nobody@example.com", "password": "not-the-password"})
    timings = []
    with contextlib.closing(http.client.HTTPConnection("127.0.0.1", served, timeout=10)) as connection:
        for _ in range(15):
            started = time.perf_counter()
            connection.request("POST", "/api/v1/auth/login", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            payload = json.loads(answer.read())
            timings.append(time.perf_counter() - started)
            assert answer.status == 401, payload
            assert payload["error"]["code"] == "invalid_credentials"
    # With Nagle's algorithm on, every answer after the first waits ~40 ms for the client's delayed ACK.
    assert statistics.median(timings[1:]) < 0.030, timings
