"""Bounds on what a request may carry, checked before any route sees it: a body over ``MAX_BODY_BYTES`` is refused
with 413 while it is read, so that no more of it is taken in (uvicorn itself reads any length); a NUL character in
the path or the query (which no PostgreSQL text value can hold) gets 404 or 422."""

from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024  # the largest body of this API (a policy) is well under 1 KiB


class RequestBounds:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _answer(send, 404, "not_found", "no such thing")
            return
        if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            await _answer(send, 422, "invalid_request", "query: NUL characters are not allowed")
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await _answer(send, 413, "body_too_large", f"the request body is over {self.max_body} bytes", close=True)
            return
        taken = 0

        async def bounded() -> Message:
            nonlocal taken
            message = await receive()
            if message["type"] == "http.request":
                taken += len(message.get("body", b""))
                if taken > self.max_body:
                    # FastAPI hands an HTTPException raised while it reads the body on to the error handlers.
                    raise HTTPException(413, f"the request body is over {self.max_body} bytes")
            return message

        await self.app(scope, bounded, send)


async def _answer(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the unread body would otherwise be taken for the next request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
