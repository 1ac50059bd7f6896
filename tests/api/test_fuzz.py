"""Schemathesis against the OpenAPI document of a live server on PostgreSQL: no 5xx across at least 1,000 generated
requests. Its negative phase sends what the document refuses: NUL characters in every string field (``pattern``),
path ids beyond the id columns (``maximum``), strings over their bounds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.schemas import NO_NUL
from tests.api.conftest import Server
from tests.api.test_help_article import sign_in
from tests.helpers import make_user


def test_no_server_errors(
    server: Server, factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.limiter, "hit", lambda *_: None)  # let every generated request through
    monkeypatch.setattr(server.limiter, "spent", lambda *_: None)
    make_user(factory, "owner@acme.io", role="owner", clock=server.clock)
    token = sign_in(server)["session"]["token"]
    hostile_requests_are_refused(server, token)
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


def hostile_requests_are_refused(server: Server, token: str) -> None:
    """Every operation of the document, sent what PostgreSQL cannot take or what is too large: a NUL in every string
    field (422), ids beyond the id columns (404), a body over 64 KiB (413)."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    sent = 0
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                concrete = path.replace("{slug}", "acme")
                if "_id}" in path:
                    for big in (2**31, 2**63, 2**64):
                        r = c.request(method, re.sub(r"\{\w+_id\}", str(big), path))
                        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), (method, path, r.text)
                        sent += 1
                    concrete = re.sub(r"\{\w+_id\}", "1", path)
                schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                if schema is None:
                    continue
                ref = next(
                    s["$ref"] for s in (schema, *schema.get("anyOf", [])) if "$ref" in s
                )  # a body may be optional
                properties = schemas[ref.rsplit("/", 1)[-1]]["properties"]
                for name, field in properties.items():
                    strings = [f for f in (field, *field.get("anyOf", [])) if f.get("type") == "string"]
                    if strings:
                        assert "enum" in strings[0] or strings[0].get("pattern") == NO_NUL, (path, name)
                        body = {name: "ok\x00" if name != "email" else "a\x00@acme.io"}
                        r = c.request(method, concrete, json=body)
                        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), (path, name)
                        sent += 1
                r = c.request(method, concrete, content=b"{" + b" " * (64 * 1024) + b"}")
                assert (r.status_code, r.json()["error"]["code"]) == (413, "body_too_large"), (path, r.text)
                sent += 1
    assert sent >= 25, sent
