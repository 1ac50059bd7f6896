"""Schemathesis against the OpenAPI document of a live server: no 5xx across at least 1,000 generated requests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.api.conftest import Server
from tests.api.test_help_article import sign_in
from tests.helpers import make_user


def test_no_server_errors(
    server: Server, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.limiter, "hit", lambda *_: None)  # let every generated request through
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    token = sign_in(server)["session"]["token"]
    events = tmp_path / "events.ndjson"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "60",
            "--seed",
            "1",
            "--generation-deterministic",
            "-H",
            f"Authorization: Bearer {token}",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(events),
            "--continue-on-failure",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    requests = 0
    for line in events.read_text().splitlines():
        event = json.loads(line)
        for value in event.values():
            if isinstance(value, dict) and "recorder" in value:
                requests += len(value["recorder"].get("interactions", {}))
    print(f"schemathesis sent {requests} requests")
    assert requests >= 1000, done.stdout[-2000:]
