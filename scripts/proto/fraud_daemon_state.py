"""A prototype, not chargingd's engine: the default set's authorize rules evaluated on
per-account state a daemon keeps in memory, and the call's fact packed for a per-account
log in Redis (docs/fraud-cost.md "Sixteenth round"). Measured by
scripts/bench_fraud_daemon_state.py; tests/scripts/test_fraud_daemon_state.py checks
that each rule fires at its default threshold and not below it (so the figure is of
working rules). Thresholds are the default set's: 120 calls / 60 s per account, 60 per
identity, 20 calls / 10 min to one range (the number less its last 3 digits), 30
distinct numbers / 5 min, a country not called today, 30 live calls.

``evaluate`` returns a bitmask: 1 velocity per account, 2 per identity, 4 same range,
8 distinct numbers, 16 a new country, 32 concurrent."""

from __future__ import annotations

import struct
import zlib
from typing import Final

_FACT: Final = struct.Struct("<qIII2s")


class Window:
    """Calls in a sliding window of fixed buckets (as fraud.lua's)."""

    def __init__(self, window_ms: int, buckets: int) -> None:
        self.width = window_ms // buckets
        self.n = buckets
        self.ids: list[int] = []
        self.counts: list[int] = []
        self.total = 0

    def add(self, now_ms: int) -> int:
        b = now_ms // self.width
        low = b - self.n + 1
        ids = self.ids
        if ids and ids[0] < low:
            counts = self.counts
            while ids and ids[0] < low:
                self.total -= counts[0]
                del ids[0]
                del counts[0]
        if ids and ids[-1] == b:
            self.counts[-1] += 1
        else:
            ids.append(b)
            self.counts.append(1)
        self.total += 1
        return self.total


class AccountState:
    def __init__(self) -> None:
        self.version = 0
        self.velocity = Window(60_000, 10)
        self.by_identity: dict[str, Window] = {}
        self.by_range: dict[str, Window] = {}
        self.numbers: dict[int, int] = {}
        self.countries: dict[str, int] = {}


def _distinct(nums: dict[int, int], h: int, now_ms: int) -> int:
    """The distinct numbers called in the last 5 minutes, this one added (counted only
    past the threshold; the older ones dropped once there are twice as many)."""
    nums[h] = now_ms
    if len(nums) <= 30:
        return len(nums)
    old = now_ms - 300_000
    n = 0
    for t in nums.values():
        if t > old:
            n += 1
    if len(nums) > 60:
        for k in [k for k, t in nums.items() if t <= old]:
            del nums[k]
    return n


def evaluate(
    st: AccountState, now_ms: int, identity: str, number: str, country: str, live: int
) -> tuple[int, bytes]:
    """Bitmask of rules over their thresholds, and the call's fact for Redis's log."""
    fired = 0
    if st.velocity.add(now_ms) > 120:
        fired |= 1
    w = st.by_identity.get(identity)
    if w is None:
        w = st.by_identity[identity] = Window(60_000, 10)
    if w.add(now_ms) > 60:
        fired |= 2
    rng = number[:-3]
    g = st.by_range.get(rng)
    if g is None:
        g = st.by_range[rng] = Window(600_000, 10)
    if g.add(now_ms) > 20:
        fired |= 4
    h = zlib.crc32(number.encode())
    if _distinct(st.numbers, h, now_ms) > 30:
        fired |= 8
    day = now_ms // 86_400_000
    seen = st.countries.get(country)
    if seen is None:
        fired |= 16
    if seen != day:
        st.countries[country] = day
    if live >= 30:
        fired |= 32
    st.version += 1
    fact = _FACT.pack(
        now_ms, zlib.crc32(identity.encode()), h, zlib.crc32(rng.encode()), country.encode()[:2]
    )
    return fired, fact
