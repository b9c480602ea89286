"""Durations as CGRateS writes them (Go's time.ParseDuration), in integer nanoseconds.

"90s", "2m10s", "1h0m21s", "2048ns", "1.5s", "300ms"; a bare integer is nanoseconds.
Parsing is exact (Decimal), never float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

NS_PER_S = 1_000_000_000


def seconds_to_ns(seconds: int) -> int:
    """Whole seconds of usage as the nanoseconds rating takes."""
    return seconds * NS_PER_S


def billed_seconds(billed_ns: int) -> int:
    """Billed time in whole seconds, rounded up (what a CDR's billed_s records)."""
    return -(-billed_ns // NS_PER_S)


def whole_seconds(ns: int) -> int:
    """Nanoseconds as whole seconds, rounded down (usage that is fully paid for)."""
    return ns // NS_PER_S


_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """A text that is not a Go-style duration."""


def parse_duration(text: str | int) -> int:
    """Parse a Go duration ("1m30s", "1.5s") or a bare integer of nanoseconds into ns.

    Negative durations are refused: a call never lasts less than nothing.
    """
    if isinstance(text, bool):
        raise DurationError(f"not a duration: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise DurationError(f"negative duration: {text}")
        return text
    raw = text.strip()
    if raw.isdigit():
        return int(raw)
    if raw in ("0", "+0"):
        return 0
    body = raw[1:] if raw.startswith("+") else raw
    if body.startswith("-"):
        raise DurationError(f"negative duration: {text!r}")
    pos = 0
    total = Decimal(0)
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise DurationError(f"not a duration: {text!r} (use e.g. 90s, 2m10s, 1.5s)")
        try:
            total += Decimal(match.group(1)) * _UNIT_NS[match.group(2)]
        except InvalidOperation:
            raise DurationError(f"not a duration: {text!r}") from None
        pos = match.end()
    if not body:
        raise DurationError(f"empty duration: {text!r}")
    if total != total.to_integral_value():
        raise DurationError(f"duration {text!r} is finer than a nanosecond")
    return int(total)


def format_duration(ns: int) -> str:
    """Render ns the way Go's Duration.String() does: "1h0m21s", "1.5s", "2.048µs", "0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < NS_PER_S:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000)):
            if ns >= size:
                return sign + _frac(ns, size) + unit
        return f"{sign}{ns}ns"
    hours, rest = divmod(ns, 3600 * NS_PER_S)
    minutes, rest = divmod(rest, 60 * NS_PER_S)
    text = _frac(rest, NS_PER_S) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _frac(value: int, size: int) -> str:
    whole, frac = divmod(value, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
