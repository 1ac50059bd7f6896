"""ISO weeks, as the reports name them: ``2026-W47`` runs from Monday 00:00 UTC to the end of Sunday (UTC)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from twofa.errors import InvalidInput

_WEEK = re.compile(r"(\d{4})-W(\d{2})")


class WeekNotBegun(InvalidInput):
    """A report of a week that has not begun."""

    code = "week_not_begun"


class WeekNotOver(InvalidInput):
    """A week's report is mailed once, after the week ends."""

    code = "week_not_over"


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
        """The next Monday 00:00 UTC: the first instant after the week."""
        return self.start + timedelta(days=7)

    @property
    def first_day(self) -> date:
        return self.start.date()

    @property
    def last_day(self) -> date:
        """The week's Sunday."""
        return self.first_day + timedelta(days=6)

    def require_begun(self, now: datetime) -> None:
        if now < self.start:
            current = IsoWeek.containing(now)
            raise WeekNotBegun(
                f"week {self} has not begun: it starts on Monday {self.first_day.day} {self.first_day:%B %Y}"
                f" (this is week {current})"
            )

    def require_over(self, now: datetime) -> None:
        self.require_begun(now)
        if now < self.end:
            raise WeekNotOver(
                f"week {self} is not over until the end of Sunday {self.last_day.day} {self.last_day:%B %Y} (UTC);"
                " its report is built and mailed after that"
            )

    def minus(self, weeks: int) -> IsoWeek:
        return IsoWeek.containing(self.start - timedelta(weeks=weeks))

    def __str__(self) -> str:
        return f"{self.year}-W{self.week:02d}"
