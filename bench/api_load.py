"""The closed-loop HTTP load generator of ``bench/bench_api.py``, run as its own process.

``concurrency`` keep-alive connections, each sending its next request as soon as the previous answer is read, for
``duration`` seconds (or until the users run out). HTTP/1.1 is spoken directly by asyncio protocols: a generic
client (httpx) costs several times more CPU per request than the server's trivial endpoint, and would measure
itself. For ``login`` every request takes the next unused user and computes that user's current TOTP code right
before it is sent (``twofa.totp.code_at`` at the system time).

    python bench/api_load.py '{"mode": "trivial", "port": 8000, "concurrency": 16, "duration": 5}'

Prints one JSON object: request count, 200s, errors by status, latencies (ms), elapsed time and this process's CPU.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twofa.totp import code_at

LOGIN_PATH = "/api/v1/auth/2fa/login"
TRIVIAL_PATH = "/healthz"


@dataclass
class Users:
    """(challenge token, base32 secret) pairs, handed out once each."""

    pairs: list[tuple[str, str]]
    taken: int = 0

    def take(self) -> tuple[str, str] | None:
        if self.taken >= len(self.pairs):
            return None
        pair = self.pairs[self.taken]
        self.taken += 1
        return pair


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:300])


def _load_users(path: str, offset: int, limit: int) -> Users:
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="ascii") as fh:
        for i, line in enumerate(fh):
            if i < offset:
                continue
            if len(pairs) >= limit:
                break
            token, secret = line.split()
            pairs.append((token, secret))
    return Users(pairs)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, reads its answer, sends the next one from the callback (no task
    or future per request: the generator's own cost per request stays a small fraction of the server's)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.sent_at:
                self.run.tally.error(f"connection lost mid-request: {exc!r}")
            self.done.set_result(None)

    def send_next(self) -> None:
        assert self.transport is not None
        request = self.run.next_request()
        if request is None:
            self.sent_at = 0.0
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length, close = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                self.run.tally.error("chunked responses are not supported by this generator")
        if len(self.buffer) < end + 4 + length:
            return
        tally = self.run.tally
        tally.latencies_ms.append((time.perf_counter() - self.sent_at) * 1000.0)
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        tally.statuses[status] += 1
        if status == 200 and (self.run.users is None or b'"status":"ok"' in body):
            tally.ok += 1
        else:
            tally.error(f"{status} {body.decode(errors='replace')}")
        if close:
            tally.error("the server closed the connection")
            self.sent_at = 0.0
            assert self.transport is not None
            self.transport.close()
            return
        self.send_next()


class _Run:
    def __init__(self, cfg: dict[str, Any], users: Users | None) -> None:
        host, port = cfg.get("host", "127.0.0.1"), int(cfg["port"])
        authority = f"{host}:{port}".encode()
        self.trivial = (
            b"GET " + TRIVIAL_PATH.encode() + b" HTTP/1.1\r\nHost: " + authority + b"\r\nUser-Agent: bench-api\r\n\r\n"
        )
        self.login_head = (
            b"POST " + LOGIN_PATH.encode() + b" HTTP/1.1\r\nHost: " + authority + b"\r\nUser-Agent: bench-api\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
        )
        self.users = users
        self.tally = Tally()
        self.stop_at = float("inf")

    def next_request(self) -> bytes | None:
        if time.perf_counter() >= self.stop_at:
            return None
        if self.users is None:
            return self.trivial
        pair = self.users.take()
        if pair is None:
            return None
        token, secret = pair
        body = json.dumps({"challenge": token, "code": code_at(secret, datetime.now(UTC))}).encode()
        return self.login_head + str(len(body)).encode() + b"\r\n\r\n" + body


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    users = None
    if cfg["mode"] == "login":
        users = _load_users(cfg["users_file"], int(cfg["offset"]), int(cfg["limit"]))
    elif cfg["mode"] != "trivial":
        raise ValueError(f"unknown mode {cfg['mode']!r}")
    state = _Run(cfg, users)
    loop = asyncio.get_running_loop()
    host, port = cfg.get("host", "127.0.0.1"), int(cfg["port"])
    connections: list[_Connection] = []
    for _ in range(int(cfg["concurrency"])):  # every connection opens before the clock starts
        _, protocol = await loop.create_connection(lambda: _Connection(state), host, port)
        connections.append(protocol)
    cpu0, t0 = time.process_time(), time.perf_counter()
    state.stop_at = t0 + float(cfg["duration"])
    for connection in connections:
        connection.send_next()
    await asyncio.gather(*(c.done for c in connections))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    tally = state.tally
    return {
        "mode": cfg["mode"],
        "requests": len(tally.latencies_ms),
        "ok": tally.ok,
        "errors": tally.errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "error_samples": tally.error_samples,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "users_taken": users.taken if users is not None else 0,
        "latencies_ms": [round(x, 3) for x in tally.latencies_ms],
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(cfg))))


if __name__ == "__main__":
    main()
