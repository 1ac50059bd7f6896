"""The pages' CSRF token: bound to this browser's cookie and to its session, refused otherwise; and the layout
rule that the pages use the API's plumbing, never its routes."""

from __future__ import annotations

import ast
from pathlib import Path

from starlette.requests import Request

from web import security

ROOT = Path(__file__).resolve().parents[2]


def request(cookies: dict[str, str]) -> Request:
    header = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [(b"cookie", header)]})


def test_a_token_is_good_for_its_own_cookie_and_session_only() -> None:
    token = security.csrf_token("browser-a", "session-1")
    signed_in = {security.CSRF_COOKIE: "browser-a", security.SESSION_COOKIE: "session-1"}
    assert security.csrf_ok(request(signed_in), token)
    assert not security.csrf_ok(request(signed_in), "")
    assert not security.csrf_ok(request(signed_in), token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not security.csrf_ok(request({**signed_in, security.CSRF_COOKIE: "browser-b"}), token)
    assert not security.csrf_ok(request({**signed_in, security.SESSION_COOKIE: "session-2"}), token)
    # A token from the sign-in page (no session yet) is no good once signed in, and none is good without the cookie.
    assert not security.csrf_ok(request(signed_in), security.csrf_token("browser-a", None))
    assert not security.csrf_ok(request({security.SESSION_COOKIE: "session-1"}), token)


def imported(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


def test_the_pages_use_the_apis_plumbing_never_its_routes() -> None:
    used = imported("web")
    assert not {m for m in used if m.startswith(("api.routes", "api.app", "cli", "workers"))}
    for package in ("twofa", "api", "policies", "reports", "workers"):
        assert not {m for m in imported(package) if m == "web" or m.startswith("web.")}, package
