"""Sliding KPI windows in Redis: every daemon adds to the same buckets.

Keys (the one place they are built):
  kpi:RES:INDEX      hash  "DIM\\x1fGROUP\\x1fMETRIC" -> integer, one bucket of RES
  kpi:groups:DIM     set   gateway / destination group names admitted (max_groups)

A window is the sum of its buckets: 5m = the last 30 buckets of 10 s, 1h = 60 of
1 min, 24h = 96 of 15 min, the newest one still filling (so a window covers its
length to within one bucket). Buckets expire on their own one bucket after they
leave their window. Values are integers: sums of milli-units for MOS, jitter and
loss (``*_sum`` fields), counts elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from chargingd.core.redisconn import RedisClient

SEP = "\x1f"
ALL = ("all", "all")  # the dimension and group of the totals
OTHER = "other"
GROUPS_TTL_S = 8 * 86400
READ_CHUNK = 8  # buckets summed between two turns of the event loop


@dataclass(frozen=True)
class Resolution:
    name: str
    window_s: int
    bucket_s: int

    @property
    def buckets(self) -> int:
        return self.window_s // self.bucket_s

    def index(self, at_ms: int) -> int:
        return at_ms // (self.bucket_s * 1000)

    def key(self, index: int) -> str:
        return f"kpi:{self.name}:{index}"

    @property
    def ttl_s(self) -> int:
        return self.window_s + 2 * self.bucket_s


RESOLUTIONS = (
    Resolution("5m", 300, 10),
    Resolution("1h", 3600, 60),
    Resolution("24h", 86400, 900),
)
BY_NAME = {r.name: r for r in RESOLUTIONS}


def resolution_for(window_s: int) -> tuple[Resolution, int]:
    """The finest resolution that covers ``window_s`` in whole buckets, and how many
    (15 min: 15 buckets of 1 min). ValueError when no resolution fits."""
    for res in RESOLUTIONS:
        if window_s <= res.window_s and window_s % res.bucket_s == 0 and window_s > 0:
            return res, window_s // res.bucket_s
    raise ValueError(
        f"window {window_s} s: a multiple of 10 s up to 300 s, of 60 s up to 3600 s, "
        "or of 900 s up to 86400 s"
    )


Group = tuple[str, str]  # (dimension, group name)
Sums = dict[Group, dict[str, int]]


def groups_key(dimension: str) -> str:
    return f"kpi:groups:{dimension}"


class Increments:
    """HINCRBY amounts gathered for one write: (key, field) -> n."""

    def __init__(self) -> None:
        self.amounts: dict[tuple[str, str], int] = {}

    def add(self, at_ms: int, groups: Iterable[Group], metrics: dict[str, int]) -> None:
        """Add ``metrics`` to every group's bucket of every resolution at ``at_ms``."""
        amounts = self.amounts
        for res in RESOLUTIONS:
            key = res.key(res.index(at_ms))
            for dimension, group in groups:
                prefix = f"{dimension}{SEP}{group}{SEP}"
                for metric, n in metrics.items():
                    if n:
                        field = (key, prefix + metric)
                        amounts[field] = amounts.get(field, 0) + n

    def __bool__(self) -> bool:
        return bool(self.amounts)

    def commands(self) -> list[tuple[Any, ...]]:
        """HINCRBY per field, then one EXPIRE per bucket key."""
        out: list[tuple[Any, ...]] = [
            ("HINCRBY", key, field, n) for (key, field), n in self.amounts.items()
        ]
        ttls = {res.name: res.ttl_s for res in RESOLUTIONS}
        for key in {key for key, _ in self.amounts}:
            out.append(("EXPIRE", key, ttls[key.split(":", 2)[1]]))
        return out


class KpiStore:
    """Writes increments and reads windows; names beyond ``max_groups`` become "other"."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        max_groups: int,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.redis: Any = redis
        self.max_groups = max_groups
        self.clock_ms = clock_ms
        lua = resources.files("chargingd.monitoring").joinpath("lua")
        self._admit = redis.register_script(lua.joinpath("kpi_group.lua").read_text())
        self._names: dict[Group, str] = {}

    @property
    def transactional(self) -> bool:
        """A single Redis: increments and the stream's XACK commit in one MULTI."""
        return isinstance(self.redis, Redis)

    async def group(self, dimension: str, name: str) -> Group:
        """The group a name is counted under (itself, or "other" past the cap)."""
        name = name or "unknown"
        known = self._names.get((dimension, name))
        if known is None:
            admitted = await self._admit(
                keys=[groups_key(dimension)], args=[name, self.max_groups, GROUPS_TTL_S]
            )
            known = name if admitted else OTHER
            if len(self._names) >= 10 * self.max_groups + 100:
                self._names.clear()
            self._names[(dimension, name)] = known
        return dimension, known

    async def write(self, increments: Increments, *extra: tuple[Any, ...]) -> None:
        """Apply the increments (and ``extra`` commands) in one round trip; atomically
        (MULTI/EXEC) on a single Redis."""
        pipe = self.redis.pipeline(transaction=self.transactional)
        for command in increments.commands():
            pipe.execute_command(*command)
        for command in extra:
            pipe.execute_command(*command)
        await pipe.execute()

    async def read(self, res: Resolution, now_ms: int | None = None, *, buckets: int = 0) -> Sums:
        """The sums of every group over the window of ``res`` ending now (or over its
        last ``buckets`` buckets)."""
        last = res.index(self.clock_ms() if now_ms is None else now_ms)
        pipe = self.redis.pipeline(transaction=False)
        for index in range(last - (buckets or res.buckets) + 1, last + 1):
            pipe.hgetall(res.key(index))
        sums: Sums = {}
        for done, bucket in enumerate(await pipe.execute(), 1):
            if done % READ_CHUNK == 0:  # the loop gets a turn (a 24 h read is 96 buckets)
                await asyncio.sleep(0)
            for raw_field, raw_value in bucket.items():
                field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
                dimension, group, metric = field.split(SEP, 2)
                metrics = sums.setdefault((dimension, group), {})
                metrics[metric] = metrics.get(metric, 0) + int(raw_value)
        return sums

    async def series(
        self, res: Resolution, metric: str, group: Group = ALL, *, last: int = 0
    ) -> list[int]:
        """One metric of one group per bucket of the window (or its ``last`` buckets),
        oldest first, the newest still filling (charts, rates)."""
        newest = res.index(self.clock_ms())
        count = last or res.buckets
        field = f"{group[0]}{SEP}{group[1]}{SEP}{metric}"
        pipe = self.redis.pipeline(transaction=False)
        for index in range(newest - count + 1, newest + 1):
            pipe.hget(res.key(index), field)
        return [int(v or 0) for v in await pipe.execute()]
