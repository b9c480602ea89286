"""The main process's monitoring: host sums, KPI feeder, cluster sampler, answers.

One object per daemon (``chargingd.app`` builds it after the frontends): it runs the
main process's report loop (KPI counts to Redis), the KPI feeder (CDRs to the
windows) and the sampler, and answers /metrics, the dashboard's summary and
``ctl stats`` from what they hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from chargingd.alerts import Alerts, Incident
from chargingd.billing.cdr import CdrStatus
from chargingd.core.clock import ClockMs, wall_ms
from chargingd.core.config import Config
from chargingd.core.loops import run_every
from chargingd.core.redisconn import RedisClient
from chargingd.invoicing.usage import group_of
from chargingd.ledger import Ledger
from chargingd.monitoring.exposition import Values, kpi_values, render
from chargingd.monitoring.feeder import KpiFeeder
from chargingd.monitoring.host import HistogramSum, HostView, LabelKey
from chargingd.monitoring.kpialerts import KpiAlerts
from chargingd.monitoring.meters import ProcessMeters
from chargingd.monitoring.outcomes import OUTCOMES
from chargingd.monitoring.reporter import ProcessReporter
from chargingd.monitoring.sampler import ClusterSampler
from chargingd.monitoring.windows import RESOLUTIONS, KpiStore
from chargingd.sessions.ccapi import RefusalCode
from chargingd.sessions.service import ACCOUNTING_DOWN, AUTHORIZE_DOWN

log = logging.getLogger("chargingd.monitoring")

STOP_S = 5.0
LIVE_MAX_AGE_S = 0.5  # the page's active-call count is at most this old
INCIDENTS_SINCE_MS = 24 * 3600 * 1000  # the incidents /metrics and the page count
PAGE_ALERTS = 8
# Where a frontend's request can find Redis unreachable (sources.outage_samples' label)
REDIS_ERROR_PLACES = tuple(
    kind.removeprefix("redis unreachable at ").replace(" ", "_")
    for kind in (AUTHORIZE_DOWN, ACCOUNTING_DOWN)
)
AUTHORIZE_RESULTS = ("accepted", "refused", "fail_open", "error")


class Monitor:
    """A daemon component (``start``/``stop``) and the source of every figure shown."""

    name = "monitoring"

    def __init__(
        self,
        cfg: Config,
        redis: RedisClient,
        ledger: Ledger,
        meters: ProcessMeters,
        *,
        status: Callable[[], dict[str, Any]],
        alerts: Alerts | None = None,
        clock_ms: ClockMs = wall_ms,
    ) -> None:
        """``alerts``: the process's alert stream (KPI alert rules raise there; its
        incidents are counted and shown)."""
        mc = cfg.monitoring
        self.cfg = cfg
        self.enabled = mc.enabled
        self.store = KpiStore(redis, max_groups=mc.max_groups, clock_ms=clock_ms)
        self.reporter = ProcessReporter(
            meters,
            status=status,
            store=self.store if mc.enabled else None,
            interval_s=mc.report_interval_s,
            clock_ms=clock_ms,
        )
        self.reporter.serving = True
        self.host = HostView(self.reporter.report)
        groups = cfg.invoicing.destination_groups
        self.feeder = KpiFeeder(  # runs when enabled
            redis,
            self.store,
            group=mc.kpi_group,
            destination_group=lambda destination: group_of(destination, groups),
        )
        self.sampler = ClusterSampler(
            redis,
            ledger,
            self.store,
            min_samples=mc.min_samples,
            exporter_group=cfg.export.group,
            dead_letter_stream=cfg.export.dead_letter_stream,
            kpis=mc.enabled,
        )
        self.alerts = alerts
        # Judged (in refresh) only with [monitoring] enabled: the windows are empty else.
        self.kpi_alerts = KpiAlerts(mc.alerts, self.store, alerts) if alerts is not None else None
        self.incidents: list[Incident] = []
        self.sample_interval_s = mc.sample_interval_s
        self.clock_ms = clock_ms
        self._sampled_s = 0.0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._stop.clear()
        interval = self.sample_interval_s
        self._tasks = [
            asyncio.create_task(self.reporter.run(self._stop), name="metrics-report"),
            asyncio.create_task(
                run_every(self._stop, interval, self.refresh, log=log, what="monitoring sample"),
                name="monitoring-sample",
            ),
        ]
        if self.enabled:
            self._tasks.append(asyncio.create_task(self.feeder.run(self._stop), name="kpi-feeder"))

    async def stop(self) -> None:
        self._stop.set()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=STOP_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        try:
            await self.reporter.flush_kpis()  # the last second's authorize counts
        except Exception as exc:  # Redis gone at shutdown: said, not fatal
            log.warning("last KPI counts not written: %s", exc)

    async def refresh(self) -> None:
        """Read the cluster gauges and the KPI windows again; judge the alert rules."""
        await self.sampler.sample()
        self._sampled_s = time.monotonic()
        await self.sampler.windows()
        if self.kpi_alerts is not None and self.enabled:
            await self.kpi_alerts.evaluate()
        if self.alerts is not None:
            since_ms = self.clock_ms() - INCIDENTS_SINCE_MS
            self.incidents = await self.alerts.incidents(since_ms=since_ms, limit=1000)

    async def _live(self) -> None:
        if time.monotonic() - self._sampled_s > LIVE_MAX_AGE_S:
            await self.sampler.sample()
            self._sampled_s = time.monotonic()

    # -- /metrics -----------------------------------------------------------------------
    def values(self) -> tuple[Values, Values, dict[LabelKey, HistogramSum]]:
        """Everything /metrics shows, from what is held now (no I/O)."""
        counters, gauges, histograms = self.host.totals()
        roles: dict[str, int] = {}
        for report in self.host.all_reports():
            roles[report.get("role", "?")] = roles.get(report.get("role", "?"), 0) + 1
        for role, n in roles.items():
            gauges[("chargingd_processes", (role,))] = n
        gauges.update(self.sampler.gauges())
        self._alert_values(counters, gauges)
        gauges.update(kpi_values(self.sampler.cached_windows()))
        feeder = self.feeder
        if self.enabled:
            for outcome, n in feeder.outcomes.items():
                counters[("chargingd_calls_total", (outcome,))] = n
            for status, n in feeder.statuses.items():
                counters[("chargingd_calls_ended_total", (status,))] = n
            counters[("chargingd_call_talk_seconds_total", ())] = feeder.talk_s
            counters[("chargingd_kpi_undecodable_cdrs_total", ())] = feeder.undecodable
        self._known_zeros(counters)
        return counters, gauges, histograms

    def _known_zeros(self, counters: Values) -> None:
        """The counters operators alert on, at 0 for every label value they can take
        until its first event: rate() and increase() need a sample before the jump, so
        a series that appears only with the first Redis error, fail-open decision,
        refusal reason or credit cut would hide that first event from an alert."""
        protocols = [
            name
            for name, on in (
                ("radius", self.cfg.radius.enabled),
                ("diameter", self.cfg.diameter.enabled),
            )
            if on
        ]
        if protocols:
            for where in REDIS_ERROR_PLACES:
                counters.setdefault(("chargingd_redis_errors_total", (where,)), 0)
        if not self.enabled:  # no metering: these are never counted
            return
        for protocol in protocols:
            for result in AUTHORIZE_RESULTS:
                counters.setdefault(
                    ("chargingd_requests_total", (protocol, "authorize", result)), 0
                )
        for reason in RefusalCode:
            counters.setdefault(("chargingd_refusals_total", (reason.value,)), 0)
        for outcome in OUTCOMES:
            counters.setdefault(("chargingd_calls_total", (outcome,)), 0)
        for status in CdrStatus:
            counters.setdefault(("chargingd_calls_ended_total", (status.value,)), 0)

    def _alert_values(self, counters: Values, gauges: Values) -> None:
        if self.alerts is None:
            return
        for result, n in self.alerts.counters().items():
            if isinstance(n, int):
                counters[("chargingd_alerts_raised_total", (result,))] = n
        for incident in self.incidents:
            key = ("chargingd_alert_incidents", (incident.kind, incident.severity.value,
                                                 incident.state))  # fmt: skip
            gauges[key] = gauges.get(key, 0) + 1

    async def metrics_text(self) -> bytes:
        await self._live()
        await self.sampler.windows()  # cached: re-read only when older than their age
        return render(self.values)

    # -- the dashboard and ctl ---------------------------------------------------------
    async def summary(self) -> dict[str, Any]:
        """What the dashboard shows: live figures, every window, the last hour's series."""
        await self._live()
        live = self.sampler.live
        series = await self.sampler.series()
        return {
            "generated_ms": self.clock_ms(),
            "kpis": self.enabled,
            "min_samples": self.cfg.monitoring.min_samples,
            "active_calls": live["active_calls"],
            "gateways_active": live["gateways"],
            "reserved": live["reserved"],
            "exporter": self.sampler.exporter,
            "orphans": live.get("orphans", 0),
            "legs": live.get("legs", 0),
            "calls_per_s": await self.sampler.calls_per_s(),
            "series": series,
            "windows": await self.sampler.windows(),
            "processes": len(self.host.all_reports()),
            "alerts": [
                {
                    "kind": i.kind,
                    "key": i.key,
                    "severity": i.severity.value,
                    "summary": i.summary,
                    "first_ms": i.first_ms,
                    "last_ms": i.last_ms,
                    "count": i.count,
                    "state": i.state,
                }
                for i in self.incidents[:PAGE_ALERTS]
            ],
        }

    async def stats(self, *, by: str = "", window: str = "") -> dict[str, Any]:
        """``ctl stats``: figures read now; ``by`` a dimension, ``window`` one window."""
        await self.sampler.sample()
        windows = {}
        for res in RESOLUTIONS:
            if window and res.name != window:
                continue
            figures = await self.sampler.window(res.name, fresh=True)
            windows[res.name] = {
                dim: groups for dim, groups in figures.items() if dim == "all" or dim == by
            }
        return {
            "generated_ms": self.clock_ms(),
            "kpis": self.enabled,
            "min_samples": self.cfg.monitoring.min_samples,
            "active_calls": self.sampler.live["active_calls"],
            "gateways_active": self.sampler.live["gateways"],
            "by": by or "all",
            "windows": windows,
        }
