"""Time periods (CGRateS Timings): when a rate applies, in the tariff's time zone.

A period matches a local date by years, months, month days, ISO weekdays
(1 = Monday .. 7 = Sunday; CGRateS input 0 also means Sunday) and explicit dates
(holidays); an empty set means "any". Within a matching day it covers
[start_s, end_s) seconds after local midnight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

SECONDS_PER_DAY = 86_400
ANY = "*any"


def normalize_weekday(day: int) -> int:
    """Map a CGRateS/Go weekday (0 or 7 = Sunday, 1 = Monday) to ISO (7 = Sunday)."""
    if not 0 <= day <= 7:
        raise ValueError(f"weekday {day} is not 0..7")
    return 7 if day == 0 else day


def parse_time_of_day(text: str) -> int:
    """Parse "HH:MM" or "HH:MM:SS" (also "24:00") into seconds after midnight."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"time of day {text!r} is not HH:MM[:SS]")
    hours, minutes = int(parts[0]), int(parts[1])
    seconds = int(parts[2]) if len(parts) == 3 else 0
    if minutes > 59 or seconds > 59:
        raise ValueError(f"time of day {text!r} is out of range")
    total = hours * 3600 + minutes * 60 + seconds
    if total > SECONDS_PER_DAY:
        raise ValueError(f"time of day {text!r} is after 24:00")
    return total


@dataclass(frozen=True)
class TimePeriod:
    """A named set of local times (CGRateS TPTiming); empty sets mean any."""

    id: str
    years: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    month_days: frozenset[int] = frozenset()
    week_days: frozenset[int] = frozenset()  # ISO: 1 = Monday .. 7 = Sunday
    dates: frozenset[date] = frozenset()  # explicit dates (holidays)
    start_s: int = 0  # seconds after local midnight, inclusive
    end_s: int = SECONDS_PER_DAY  # exclusive
    _always: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.start_s < self.end_s <= SECONDS_PER_DAY:
            raise ValueError(f"period {self.id}: start must be before end, within one day")
        if any(not 1 <= d <= 7 for d in self.week_days):
            raise ValueError(f"period {self.id}: week days are 1 (Monday) .. 7 (Sunday)")
        if any(not 1 <= m <= 12 for m in self.months):
            raise ValueError(f"period {self.id}: months are 1..12")
        if any(not 1 <= d <= 31 for d in self.month_days):
            raise ValueError(f"period {self.id}: month days are 1..31")
        always = not (self.years or self.months or self.month_days or self.week_days)
        always = always and not self.dates and self.start_s == 0
        object.__setattr__(self, "_always", always and self.end_s == SECONDS_PER_DAY)

    @property
    def always(self) -> bool:
        """True when the period covers every instant (CGRateS *any)."""
        return self._always

    def matches_day(self, day: date) -> bool:
        """Whether the period applies at some time of this local date."""
        if self.years and day.year not in self.years:
            return False
        if self.months and day.month not in self.months:
            return False
        if self.month_days and day.day not in self.month_days:
            return False
        if self.week_days and day.isoweekday() not in self.week_days:
            return False
        return not self.dates or day in self.dates

    def covers(self, day: date, second_of_day: int) -> bool:
        """Whether the period applies at this local date and second after midnight."""
        return self.start_s <= second_of_day < self.end_s and self.matches_day(day)


ANY_PERIOD = TimePeriod(ANY)
