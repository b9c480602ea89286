"""Each process's reporting loop: its counters to the main process, its authorize
outcomes to the shared KPI windows, once per ``report_interval_s``.

A report is ``{"pid", "role", "serving", "at_ms", "status", "meters"}``: ``status``
is what ``server.status`` shows for the process (RADIUS ports and counters),
``meters`` the cumulative snapshot (monitoring/meters.py). The per-gateway counts
of authorizations and refusals since the last pass go to Redis in one pipeline;
if Redis is away they go with the next pass, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from chargingd.core.clock import ClockMs, wall_ms
from chargingd.core.loops import run_every
from chargingd.monitoring.meters import ProcessMeters
from chargingd.monitoring.windows import ALL, Increments, KpiStore

log = logging.getLogger("chargingd.monitoring")

Report = dict[str, Any]


class ProcessReporter:
    """Builds this process's report; hands it to ``sink`` and flushes KPI counts."""

    def __init__(
        self,
        meters: ProcessMeters,
        *,
        status: Callable[[], dict[str, Any]],
        store: KpiStore | None,
        sink: Callable[[Report], None] | None = None,
        interval_s: float = 1.0,
        clock_ms: ClockMs = wall_ms,
    ) -> None:
        self.meters = meters
        self.status = status
        self.store = store
        self.sink = sink
        self.interval_s = interval_s
        self.clock_ms = clock_ms
        self.serving = False

    def report(self) -> Report:
        return {
            "pid": os.getpid(),
            "role": self.meters.role,
            "serving": self.serving,
            "at_ms": self.clock_ms(),
            "status": self.status(),
            "meters": self.meters.snapshot(),
        }

    def send(self) -> None:
        if self.sink is not None:
            self.sink(self.report())

    async def flush_kpis(self) -> int:
        """Add the authorize outcomes counted since the last flush to the windows; if
        the write fails they stay unflushed and go with the next pass."""
        if self.store is None:
            return 0
        deltas, totals = self.meters.kpi_deltas()
        if deltas:
            increments = Increments()
            now_ms = self.clock_ms()
            for (gateway, outcome), n in deltas.items():
                groups = [ALL, await self.store.group("gateway", gateway)]
                increments.add(now_ms, groups, {outcome: n})
            await self.store.write(increments)
        self.meters.kpi_flushed(totals)
        return sum(deltas.values())

    async def one_pass(self) -> None:
        self.send()
        await self.flush_kpis()

    async def run(self, stop: asyncio.Event) -> None:
        await run_every(stop, self.interval_s, self.one_pass, log=log, what="metrics report")
