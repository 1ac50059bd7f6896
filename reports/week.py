"""ISO weeks, as the reports name them: ``2026-W47`` runs Monday 00:00 UTC to the next Monday 00:00 UTC."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from twofa.errors import InvalidInput

_WEEK = re.compile(r"(\d{4})-W(\d{2})")


@dataclass(frozen=True, order=True)
class IsoWeek:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        match = _WEEK.fullmatch(text.strip())
        if not match:
            raise InvalidInput(f"not an ISO week: {text!r} (expected e.g. 2026-W47)")
        year, week = int(match[1]), int(match[2])
        try:
            datetime.fromisocalendar(year, week, 1)
        except ValueError:
            raise InvalidInput(f"{text!r}: {year} has no week {week}") from None
        return cls(year, week)

    @classmethod
    def containing(cls, at: datetime) -> IsoWeek:
        year, week, _ = at.astimezone(UTC).isocalendar()
        return cls(year, week)

    @classmethod
    def last_complete(cls, now: datetime) -> IsoWeek:
        """The week that ended most recently (on a Monday, the week just ended)."""
        return cls.containing(now - timedelta(days=7))

    @property
    def start(self) -> datetime:
        return datetime.fromisocalendar(self.year, self.week, 1).replace(tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=7)

    def minus(self, weeks: int) -> IsoWeek:
        return IsoWeek.containing(self.start - timedelta(weeks=weeks))

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"
