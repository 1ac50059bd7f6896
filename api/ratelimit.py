"""Request limits per client IP and per account: fixed windows counted in Redis (shared by every API process) or,
without Redis, in this process."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis


class Limiter(Protocol):
    def hit(self, key: str, limit: int, window: int) -> int | None:
        """Count one request; the seconds to wait when ``limit`` per ``window`` seconds is exceeded, else None."""
        ...


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
        return None if count <= limit else int((bucket + 1) * window - now) + 1


class RedisLimiter:
    def __init__(self, url: str, prefix: str = "twofa:rl:") -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def hit(self, key: str, limit: int, window: int) -> int | None:
        now = time.time()
        bucket = int(now // window)
        name = f"{self.prefix}{key}:{bucket}"
        pipe = self.client.pipeline()
        pipe.incr(name)
        pipe.expire(name, window + 1)
        count = int(pipe.execute()[0])
        return None if count <= limit else int((bucket + 1) * window - now) + 1


def account_key(email: str) -> str:
    # Keyed on a hash, so the limiter's store holds no address.
    return "acct:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
