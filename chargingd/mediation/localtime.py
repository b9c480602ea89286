"""A switch's local times -> UTC epoch ms, the repeated hour of a fall-back night included.

On the night clocks go back, one local hour happens twice (Europe/Berlin: 02:00-02:59
first in CEST, UTC+2, then in CET, UTC+1). A switch writing local times without an
offset writes both the same way, so a call from 02:50 (first) to 02:10 (second) looks
like it ended before it started, and one from 01:50 to 02:10 (second) looks 20 minutes
long when it lasted 80. Each such time has two readings (PEP 495 ``fold``); the row's
own evidence picks them:

1. the readings must keep start <= answer <= end;
2. among those, the one whose talk time (end - answer) is closest to the switch's
   billsec, and whose whole time (end - start) is closest to its duration, wins;
3. with no evidence left to tell them apart, the earlier reading (fold 0, the first
   occurrence) is taken: the documented default.

Offsets are looked up once per local hour (a zone's offset changes on the hour in
every zone chargingd's users run switches in; a zone changing on the half hour is read
at the hour's offset).
"""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import datetime, timedelta

from chargingd.mediation.records import RawTime

_EPOCH = datetime(1970, 1, 1)
_UTC_ZONES = ("UTC", "Etc/UTC", "GMT", "Etc/GMT")


def _ms(delta: timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


class LocalClock:
    """Reads naive local times of one IANA zone (cached per local hour)."""

    def __init__(self, zone: str) -> None:
        self.zone = zoneinfo.ZoneInfo(zone)
        self._utc = zone in _UTC_ZONES
        self._offsets: dict[tuple[int, int, int, int], tuple[timedelta, timedelta]] = {}

    def offsets(self, local: datetime) -> tuple[timedelta, timedelta]:
        """(UTC offset of the first reading, of the second); equal outside a repeated hour."""
        key = (local.year, local.month, local.day, local.hour)
        found = self._offsets.get(key)
        if found is None:
            if self._utc:
                found = (timedelta(0), timedelta(0))
            else:
                hour = local.replace(minute=0, second=0, microsecond=0, tzinfo=self.zone)
                first = hour.replace(fold=0).utcoffset() or timedelta(0)
                second = hour.replace(fold=1).utcoffset() or timedelta(0)
                found = (first, second)
            if len(self._offsets) > 100_000:
                self._offsets.clear()
            self._offsets[key] = found
        return found

    def readings(self, value: RawTime) -> tuple[int, ...]:
        """The epoch ms a raw time can mean: () unset, one, or two in a repeated hour."""
        if value is None:
            return ()
        if isinstance(value, int):
            return (value,)
        if value.tzinfo is not None:
            return (_aware_ms(value),)
        first, second = self.offsets(value)
        base = value - _EPOCH
        if first == second:
            return (_ms(base - first),)
        return (_ms(base - first), _ms(base - second))

    def resolve(
        self,
        start: RawTime,
        answer: RawTime,
        end: RawTime,
        *,
        talk_s: int | None = None,
        total_s: int | None = None,
    ) -> tuple[int, int, int]:
        """(start, answer, end) in epoch ms (0 = unset), read as the module docstring says."""
        options = [self.readings(t) or (0,) for t in (start, answer, end)]
        if all(len(o) == 1 for o in options):
            return options[0][0], options[1][0], options[2][0]
        best: tuple[int, int, int] | None = None
        best_score = -1
        for s, a, e in itertools.product(*options):  # fold 0 first: the default on a tie
            score = _misfit(s, a, e, talk_s, total_s)
            if score is not None and (best is None or score < best_score):
                best, best_score = (s, a, e), score
        if best is None:  # no reading keeps the order: the first ones, rejected later
            return options[0][0], options[1][0], options[2][0]
        return best


def _aware_ms(value: datetime) -> int:
    offset = value.utcoffset() or timedelta(0)
    # Subtract the offset from the timedelta, not the datetime: 0001-01-01T00:00+01:00
    # (a damaged field) is before datetime.min in UTC (OverflowError, the run lost).
    return _ms(value.replace(tzinfo=None) - _EPOCH - offset)


def _misfit(s: int, a: int, e: int, talk_s: int | None, total_s: int | None) -> int | None:
    """How far a reading is from the row's own figures (ms); None: out of order."""
    if e and s and e < s:
        return None
    if a and ((s and a < s) or (e and e < a)):
        return None
    score = 0
    if talk_s is not None and a and e:
        score += abs((e - a) - talk_s * 1000)
    if total_s is not None and s and e:
        score += abs((e - s) - total_s * 1000)
    return score
