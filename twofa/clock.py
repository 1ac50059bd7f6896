"""An injectable clock: production reads the system time, tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that stands still until told to move."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs a timezone-aware datetime")
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self._at

    def advance(self, **kwargs: float) -> datetime:
        self._at += timedelta(**kwargs)
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)


SYSTEM_CLOCK: Clock = SystemClock()
