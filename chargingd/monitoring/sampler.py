"""Cluster-wide figures read from Redis on a timer, cached for /metrics, ctl and the page.

Active calls (the gateways' last-seen shards of live sessions), live calls per gateway, money
held by currency (the ledger), exporter lag, dead letters, orphans and legs' reports, and
the KPI windows. Every daemon reads the same Redis, so these are the same on every host.
A reader that asks for ``fresh`` figures (``ctl stats``) gets them read now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from chargingd.billing.cdr import CDR_STREAM
from chargingd.billing.exporter import group_backlog
from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.core.redisconn import RedisClient
from chargingd.ledger import Ledger
from chargingd.monitoring.kpi import window_figures
from chargingd.monitoring.windows import ALL, BY_NAME, RESOLUTIONS, KpiStore, groups_key
from chargingd.sessions.shards import SHARDS_KEY, count_per_gateway, parse_shards
from chargingd.sessions.store import GATEWAYS, LEGS, ORPHANS

log = logging.getLogger("chargingd.monitoring")

# How long a window's figures are reused before being read again (seconds).
KPI_MAX_AGE_S = {"5m": 1.0, "1h": 5.0, "24h": 30.0}
SERIES_WINDOW = "1h"  # the page's charts: one point per minute for the last hour


class ClusterSampler:
    """Reads the cluster figures; ``gauges()`` and ``kpis()`` give the latest ones."""

    def __init__(
        self,
        redis: RedisClient,
        ledger: Ledger,
        store: KpiStore,
        *,
        min_samples: int,
        exporter_group: str,
        dead_letter_stream: str,
        kpis: bool,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis: Any = redis
        self.ledger = ledger
        self.store = store
        self.min_samples = min_samples
        self.exporter_group = exporter_group
        self.dead_letter_stream = dead_letter_stream
        self.kpis_enabled = kpis
        self.clock_s = clock_s
        self.live: dict[str, Any] = {"active_calls": 0, "gateways": {}, "reserved": {}}
        self.exporter: dict[str, Any] = {}
        self._windows: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = asyncio.Lock()

    # -- live figures -----------------------------------------------------------------
    async def sample(self) -> None:
        """Read active calls, per-gateway calls, held money and the exporter's backlog."""
        async with self._lock:
            pipe = self.redis.pipeline(transaction=False)
            pipe.smembers(GATEWAYS)
            pipe.smembers(groups_key("gateway"))
            pipe.xlen(ORPHANS)
            pipe.xlen(LEGS)
            pipe.get(SHARDS_KEY)
            live_raw, gateways_raw, orphans, legs, shards_raw = await pipe.execute()
            shards = parse_shards(shards_raw)
            live_gateways = {_name(g) for g in live_raw}
            # Every gateway with live calls, and those the KPIs know (0 when idle).
            gateways = sorted(live_gateways | {_name(g) for g in gateways_raw})
            # One script per gateway over its shards (sessions/shards.py).
            sizes = await count_per_gateway(self.redis, gateways, shards, self.ledger.batcher)
            per_gateway = dict(zip(gateways, sizes, strict=True))
            active = sum(int(n) for g, n in per_gateway.items() if g in live_gateways)
            reserved = await self.ledger.reserved_by_currency()
            self.live = {
                "active_calls": int(active),
                "gateways": {g: int(n) for g, n in per_gateway.items()},
                "reserved": {
                    c: format_amount(m, minor_unit(c)) for c, m in sorted(reserved.items())
                },
                "reserved_micros": reserved,
                "orphans": int(orphans),
                "legs": int(legs),
            }
            self.exporter = await self._exporter()

    async def _exporter(self) -> dict[str, Any]:
        """Backlog of the exporter's group and the dead-letter stream's length."""
        backlog = await group_backlog(self.redis, CDR_STREAM, self.exporter_group, time.time())
        dead_letters = int(await self.redis.xlen(self.dead_letter_stream))
        out = {"running": backlog is not None, "dead_letters": dead_letters}
        backlog = backlog or {"pending": 0, "undelivered": 0, "behind_s": 0.0}
        return out | {
            "lag_s": backlog["behind_s"],
            "pending": backlog["pending"],
            "undelivered": backlog["undelivered"],
        }

    def gauges(self) -> dict[tuple[str, tuple[str, ...]], float]:
        """The cluster gauges of the last sample, as metric values."""
        live, exporter = self.live, self.exporter
        out: dict[tuple[str, tuple[str, ...]], float] = {
            ("chargingd_active_calls", ()): live["active_calls"],
            ("chargingd_orphan_accounting", ()): live.get("orphans", 0),
            ("chargingd_leg_accounting", ()): live.get("legs", 0),
        }
        for gateway, n in live["gateways"].items():
            out[("chargingd_gateway_active_calls", (gateway,))] = n
        for currency, micros in live.get("reserved_micros", {}).items():
            out[("chargingd_reserved_money", (currency,))] = micros / 1_000_000
        if exporter:
            out[("chargingd_exporter_lag_seconds", ())] = exporter["lag_s"]
            out[("chargingd_exporter_dead_letters", ())] = exporter["dead_letters"]
            for state in ("pending", "undelivered"):
                out[("chargingd_exporter_backlog_cdrs", (state,))] = exporter[state]
        return out

    # -- KPI windows ------------------------------------------------------------------
    async def window(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """{dimension: {group: figures}} of one window, cached for KPI_MAX_AGE_S."""
        if not self.kpis_enabled:
            return {}
        cached = self._windows.get(name)
        now = self.clock_s()
        if cached is not None and not fresh and now - cached[0] < KPI_MAX_AGE_S[name]:
            return cached[1]
        sums = await self.store.read(BY_NAME[name])
        figures = window_figures(sums, self.min_samples)
        self._windows[name] = (now, figures)
        return figures

    async def windows(self, *, fresh: bool = False) -> dict[str, Any]:
        return {r.name: await self.window(r.name, fresh=fresh) for r in RESOLUTIONS}

    def cached_windows(self) -> dict[str, Any]:
        """The last figures read of every window (for a scrape: no Redis in collect())."""
        return {name: figures for name, (_, figures) in self._windows.items()}

    async def calls_per_s(self) -> float:
        """Calls started (authorized or refused) per second over the last full 10 s."""
        if not self.kpis_enabled:
            return 0.0
        res = BY_NAME["5m"]
        started = 0
        for metric in ("authorized", "refused"):
            started += (await self.store.series(res, metric, ALL, last=2))[0]
        return round(started / res.bucket_s, 2)

    async def series(self) -> dict[str, list[int]]:
        """Per-minute totals of the last hour: attempts, answered, authorized, refused."""
        if not self.kpis_enabled:
            return {}
        res = BY_NAME[SERIES_WINDOW]
        return {
            metric: await self.store.series(res, metric, ALL)
            for metric in ("attempts", "answered", "authorized", "refused")
        }


def _name(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
