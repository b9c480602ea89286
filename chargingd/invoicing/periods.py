"""Billing periods: a month label and an account's billing day give a time window.

Period "2026-11" with billing day 15 runs from 2026-11-15 00:00 to 2026-12-15 00:00
in the configured time zone (day 1: the calendar month). Billing days stop at 28 so
every month has one. Pure: no I/O, the clock is passed in.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

_LABEL = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")


class PeriodError(ValueError):
    """A period label or window that cannot be used."""

    code = "bad_period"


@dataclass(frozen=True)
class Period:
    """One billing period of one billing day: [start, end) as aware datetimes."""

    label: str  # "2026-11"
    billing_day: int
    start: datetime
    end: datetime
    # Days a monthly amount is prorated by: 0 for the period's own days. A transition
    # period (the billing day changed: it starts where the last invoice ended) keeps
    # the days of the regular period of its label (transition()).
    month_days: int = 0

    @property
    def first_day(self) -> date:
        """The day the period starts: its start's nearest local midnight. A period
        starts at midnight, except a transition period after a change of the time zone
        (an hour before or after it: that hour is no day of a subscription)."""
        return (self.start + timedelta(hours=12)).date()

    @property
    def end_day(self) -> date:
        """The first day after the period (excluded)."""
        return self.end.date()

    @property
    def days(self) -> int:
        return (self.end_day - self.first_day).days

    @property
    def prorate_days(self) -> int:
        """The days of a month subscriptions are prorated by (the period's own, except
        in a transition period)."""
        return self.month_days or self.days

    def transition(self, start: datetime) -> Period:
        """This period starting at ``start`` instead (where the last document of the
        account ended, its billing day changed since), prorated as this period."""
        return replace(self, start=start.astimezone(self.start.tzinfo), month_days=self.days)

    def earlier(self, months: int) -> Period:
        """The period ``months`` before this one, same billing day and zone."""
        year, month = parse_label(self.label)
        index = year * 12 + (month - 1) - months
        label = f"{index // 12:04d}-{index % 12 + 1:02d}"
        return window(label, self.billing_day, str(self.start.tzinfo))


def parse_label(label: str) -> tuple[int, int]:
    """ "2026-11" -> (2026, 11); PeriodError otherwise."""
    match = _LABEL.fullmatch(label) if isinstance(label, str) else None
    if match is None:
        raise PeriodError(f"period must be YYYY-MM such as 2026-11, not {label!r}")
    return int(match.group(1)), int(match.group(2))


def window(label: str, billing_day: int, time_zone: str) -> Period:
    """The period ``label`` of an account billed on ``billing_day`` (1..28)."""
    year, month = parse_label(label)
    if not 1 <= billing_day <= 28:
        raise PeriodError(f"billing day must be 1..28, not {billing_day}")
    zone = zoneinfo.ZoneInfo(time_zone)
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    start = datetime(year, month, billing_day, tzinfo=zone)
    end = datetime(next_year, next_month, billing_day, tzinfo=zone)
    return Period(label, billing_day, start, end)


def check_closed(period: Period, now: datetime, settle_delay_s: int) -> None:
    """PeriodError unless the period ended at least ``settle_delay_s`` before ``now``."""
    ready = period.end + timedelta(seconds=settle_delay_s)
    if now < ready:
        raise PeriodError(
            f"period {period.label} (billing day {period.billing_day}) ends"
            f" {period.end.isoformat()}; it can be invoiced from {ready.isoformat()}"
            " ([invoicing] settle_delay_s)"
        )


def active_days(period: Period, starts_on: date, ends_on: date | None) -> int:
    """Days of the period a subscription runs (``ends_on`` is its last day, included)."""
    first = max(period.first_day, starts_on)
    last = period.end_day if ends_on is None else min(period.end_day, ends_on + timedelta(days=1))
    return max(0, (last - first).days)


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half away from zero, in integers (denominator > 0)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    sign = -1 if numerator < 0 else 1
    return sign * ((2 * abs(numerator) + denominator) // (2 * denominator))


def prorate(amount_micros: int, days: int, period_days: int) -> int:
    """A monthly amount for ``days`` of a ``period_days`` period (half up to the micro);
    more days than a period has (a transition period after the billing day moved later)
    bill more than a month."""
    if days == period_days:
        return amount_micros
    return round_half_up_div(amount_micros * days, period_days)


def previous_label(label: str) -> str:
    """ "2026-01" -> "2025-12"."""
    year, month = parse_label(label)
    return f"{year - 1:04d}-12" if month == 1 else f"{year:04d}-{month - 1:02d}"


def label_of(moment: datetime, time_zone: str) -> str:
    """The calendar month label of a moment in the zone (the default period)."""
    local = moment.astimezone(zoneinfo.ZoneInfo(time_zone))
    return f"{local.year:04d}-{local.month:02d}"


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
