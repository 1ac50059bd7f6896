"""Request limits per client IP and per account: fixed windows counted in Redis (shared by every API process) or,
without Redis, in this process.

``hit`` is for code in a worker thread (the endpoints); ``ahit`` for the event loop (the per-request dependency),
which must not wait on a blocking Redis call."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
import redis.asyncio


class Limiter(Protocol):
    def hit(self, key: str, limit: int, window: int) -> int | None:
        """Count one request; the seconds to wait when ``limit`` per ``window`` seconds is exceeded, else None."""
        ...

    async def ahit(self, key: str, limit: int, window: int) -> int | None:
        """``hit`` for the event loop."""
        ...

    async def aclose(self) -> None:
        """Release connections (the application's shutdown)."""
        ...


def _wait(count: int, limit: int, bucket: int, window: int, now: float) -> int | None:
    """None within the limit, else the whole seconds until the window ends (at least 1)."""
    return None if count <= limit else int((bucket + 1) * window - now) + 1


class MemoryLimiter:
    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._now = now

    def hit(self, key: str, limit: int, window: int) -> int | None:
        now = self._now()
        bucket = int(now // window)
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= bucket}
            count = self._counts.get((key, bucket), 0) + 1
            self._counts[(key, bucket)] = count
        return _wait(count, limit, bucket, window, now)

    async def ahit(self, key: str, limit: int, window: int) -> int | None:
        return self.hit(key, limit, window)  # a dictionary update under a lock: nothing to wait for

    async def aclose(self) -> None:
        pass


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "twofa:rl:") -> None:
        self.client = redis.Redis.from_url(url)
        self.aclient = redis.asyncio.Redis.from_url(url)  # connects on first use, in the serving event loop
        self.prefix = prefix

    def _name(self, key: str, window: int) -> tuple[str, int, float]:
        now = time.time()
        bucket = int(now // window)
        return f"{self.prefix}{key}:{bucket}", bucket, now

    def hit(self, key: str, limit: int, window: int) -> int | None:
        name, bucket, now = self._name(key, window)
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        return _wait(int(pipe.execute()[0]), limit, bucket, window, now)

    async def ahit(self, key: str, limit: int, window: int) -> int | None:
        name, bucket, now = self._name(key, window)
        async with self.aclient.pipeline() as pipe:
            pipe.incr(name)
            pipe.expire(name, window + 1)
            count = int((await pipe.execute())[0])
        return _wait(count, limit, bucket, window, now)

    async def aclose(self) -> None:
        await self.aclient.aclose()
        self.client.close()


def account_key(email: str) -> str:
    # Keyed on a hash, so the limiter's store holds no address.
    return "acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def challenge_key(token: str) -> str:
    # Keyed on a hash: the token is a secret, and the limiter's store (Redis) must not hold it.
    return "chal:" + hashlib.sha256(token.encode()).hexdigest()[:32]
