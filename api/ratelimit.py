"""Request and failure limits on the ``limits`` library: moving windows, counted in Redis (shared by every API process)
when ``TWOFA_RATELIMIT_URL`` is set, else in this process.

The sync methods are for code in a worker thread (the endpoints); the ``a``-methods for the event loop (the
per-request dependency, the error handlers), which must not wait on a blocking Redis call. With Redis unreachable
the limits fail open: a sign-in must not depend on the limiter's store. The outage is logged once, when it starts, and
once more when it ends; meanwhile Redis is tried again at most once a second, so that requests do not each pay for a
refused connection. The second-factor lockout lives in the database and holds throughout.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio.retry
import redis.backoff
import redis.retry
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_OUTAGE = 1.0  # seconds between tries of an unreachable store
REDIS_TIMEOUT = 0.5  # seconds: a hung Redis must not hold up a sign-in for long


@dataclass(frozen=True)
class Limit:
    """At most ``amount`` hits of ``key`` in any ``seconds`` (a moving window)."""

    key: str
    amount: int
    seconds: int = 60

    @property
    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.amount, self.seconds)


class Limiter:
    def __init__(self, url: str | None = None, prefix: str = "twofa:rl") -> None:
        self._async: AsyncMovingWindow | None = None
        self._async_storage: AsyncRedisStorage | None = None
        if url is None:
            self._sync = MovingWindowRateLimiter(MemoryStorage())
        else:
            # No retries inside redis-py (its default backs off for seconds): a refused connection fails at once.
            sync_options: dict[str, Any] = {
                "socket_connect_timeout": REDIS_TIMEOUT,
                "socket_timeout": REDIS_TIMEOUT,
                "retry": redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            }
            async_options = sync_options | {"retry": redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)}
            self._sync = MovingWindowRateLimiter(
                RedisStorage(url, key_prefix=prefix, wrap_exceptions=True, **sync_options)
            )
            self._async_storage = AsyncRedisStorage(
                "async+" + url, key_prefix=prefix, wrap_exceptions=True, implementation="redispy", **async_options
            )
            self._async = AsyncMovingWindow(self._async_storage)
        self._lock = threading.Lock()
        self._outage = False
        self._retry_at = 0.0

    # -- the outage: fail open, log once --

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_AFTER_OUTAGE
            first, self._outage = not self._outage, True
        if first:
            log.warning(
                "rate-limit store unreachable (%s): request limits are off until it answers; "
                "the second-factor lockout still holds",
                type(exc.__cause__ or exc).__name__,
            )

    def _answered(self) -> None:
        if self._outage:
            with self._lock:
                back, self._outage = self._outage, False
            if back:
                log.warning("rate-limit store answers again: request limits are back on")

    def _skip(self) -> bool:
        return self._outage and time.monotonic() < self._retry_at

    def _guard(self, call: Callable[[], T], default: T) -> T:
        if self._skip():
            return default
        try:
            result = call()
        except StorageError as exc:
            self._failed(exc)
            return default
        self._answered()
        return result

    async def _aguard(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        if self._skip():
            return default
        try:
            result = await call()
        except StorageError as exc:
            self._failed(exc)
            return default
        self._answered()
        return result

    # -- in a worker thread --

    def hit(self, limit: Limit) -> int | None:
        """Count one hit; None within the limit, else the seconds to wait."""
        if self._guard(lambda: self._sync.hit(limit.item, limit.key), True):
            return None
        return self._wait(limit)

    def spent(self, *limits: Limit) -> int | None:
        """Whether any of ``limits`` is used up (without counting): the seconds to wait, or None."""
        for limit in limits:
            if not self._guard(functools.partial(self._sync.test, limit.item, limit.key), True):
                return self._wait(limit)
        return None

    def charge(self, *limits: Limit) -> None:
        """Count one failure against each of ``limits``."""
        for limit in limits:
            self._guard(functools.partial(self._sync.hit, limit.item, limit.key), True)

    def clear(self, *limits: Limit) -> None:
        for limit in limits:
            self._guard(functools.partial(self._sync.clear, limit.item, limit.key), None)

    def _wait(self, limit: Limit) -> int:
        stats = self._guard(lambda: self._sync.get_window_stats(limit.item, limit.key), None)
        return _seconds_until(stats.reset_time if stats else time.time() + limit.seconds)

    # -- on the event loop --

    async def ahit(self, limit: Limit) -> int | None:
        if self._async is None:  # in memory: nothing to wait for
            return self.hit(limit)
        aio = self._async
        if await self._aguard(lambda: aio.hit(limit.item, limit.key), True):
            return None
        stats = await self._aguard(lambda: aio.get_window_stats(limit.item, limit.key), None)
        return _seconds_until(stats.reset_time if stats else time.time() + limit.seconds)

    async def acharge(self, *limits: Limit) -> None:
        if self._async is None:
            self.charge(*limits)
            return
        aio = self._async
        for limit in limits:
            await self._aguard(functools.partial(aio.hit, limit.item, limit.key), True)

    async def aclose(self) -> None:
        """Release connections (the application's shutdown)."""
        if self._async_storage is not None:
            bridge: Any = self._async_storage.bridge
            client = bridge.storage
            await client.aclose()
        sync_storage: Any = self._sync.storage
        if isinstance(sync_storage, RedisStorage):
            sync_storage.storage.close()


def _seconds_until(at: float) -> int:
    return max(1, math.ceil(at - time.time()))


def digest(kind: str, value: str) -> str:
    # Keyed on a hash, so the limiter's store (Redis) holds no address and no token.
    return f"{kind}:" + hashlib.sha256(value.encode()).hexdigest()[:32]


def account_key(email: str) -> str:
    return digest("acct", email.strip().lower())


def challenge_key(token: str) -> str:
    return digest("chal", token)
