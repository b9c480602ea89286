"""The one wall clock: integer milliseconds since the Unix epoch.

Ledger timestamps, session records, lease expiries and published stats all read this
clock (or one passed in its place, in tests); nothing else calls time.time_ns().
"""

from __future__ import annotations

import time
from collections.abc import Callable

ClockMs = Callable[[], int]


def wall_ms() -> int:
    """Wall-clock milliseconds (session timestamps and leases are wall-clock)."""
    return time.time_ns() // 1_000_000
