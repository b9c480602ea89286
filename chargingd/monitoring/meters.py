"""In-process meters: plain integer counters and fixed-bucket histograms (the hot path).

Counting here is a dict increment (tens of nanoseconds); nothing touches Redis or
another process per request. Every ``report_interval_s`` the process takes a
``snapshot()`` (cumulative values since the process started) and hands it to the
main process (monitoring/channel.py), which sums the processes of the host
(monitoring/host.py).

Authorize outcomes are counted once, per (protocol, gateway, result, reason): the
request counters and the refusals by reason are sums of these at snapshot time, and
what changed per gateway since the last flush goes to the shared KPI windows in
Redis once per interval (``kpi_deltas`` / ``kpi_flushed``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

# Upper bounds (seconds) of the request latency histogram: the bar is p99 <= 2 ms.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_BOUNDS_NS = tuple(int(b * 1e9) for b in LATENCY_BUCKETS_S)

MAX_AUTHORIZE_KEYS = 4096  # distinct (protocol, gateway, result, reason): then "other"
OTHER = "other"

# A sample: (metric name, label values in the catalogue's order, value).
Sample = tuple[str, tuple[str, ...], float]
SampleSource = Callable[[], Iterable[Sample]]


class Histogram:
    """Counts per bucket (the last one is +Inf), sum and count; observe() in nanoseconds."""

    __slots__ = ("count", "counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS_NS) + 1)
        self.sum_ns = 0
        self.count = 0

    def observe_ns(self, value_ns: int) -> None:
        # Prometheus "le": a value equal to a bound belongs to that bucket.
        self.counts[bisect.bisect_left(_BOUNDS_NS, value_ns)] += 1
        self.sum_ns += value_ns
        self.count += 1


AuthKey = tuple[str, str, str, str]  # (protocol, gateway, result, reason)


class ProcessMeters:
    """The meters of one process; frontends' counters join through ``add_source``."""

    def __init__(self, role: str) -> None:
        self.role = role  # "main" or "worker"
        # (protocol, kind, result) -> count: accounting and other non-authorize requests
        self.requests: dict[tuple[str, str, str], int] = {}
        # Every authorize, once: (protocol, gateway, result, reason) -> count
        self.authorizations: dict[AuthKey, int] = {}
        self._flushed: dict[AuthKey, int] = {}  # what the KPI windows have of them
        # (protocol, kind) -> latency of the credit-control decision
        self.latency: dict[tuple[str, str], Histogram] = {}
        self._sources: list[SampleSource] = []
        self._gauge_sources: list[SampleSource] = []

    # -- the request path -------------------------------------------------------------
    def histogram(self, protocol: str, kind: str) -> Histogram:
        """The latency histogram of (protocol, kind), created once at wiring time."""
        return self.latency.setdefault((protocol, kind), Histogram())

    def count(self, key: tuple[str, str, str]) -> None:
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def authorize_done(self, protocol: str, gateway: str, result: str, reason: str = "") -> None:
        counts = self.authorizations
        key = (protocol, gateway, result, reason)
        n = counts.get(key)
        if n is None and len(counts) >= MAX_AUTHORIZE_KEYS:
            key = (protocol, OTHER, result, reason)
            n = counts.get(key)
        counts[key] = (n or 0) + 1

    # -- the KPI windows --------------------------------------------------------------
    def kpi_deltas(self) -> tuple[dict[tuple[str, str], int], dict[AuthKey, int]]:
        """Authorizations and refusals per gateway since the last ``kpi_flushed``, and
        the totals to pass to it once they are written."""
        current = dict(self.authorizations)
        deltas: dict[tuple[str, str], int] = {}
        for key, n in current.items():
            added = n - self._flushed.get(key, 0)
            _, gateway, result, _ = key
            if added and result != "error":
                outcome = "refused" if result == "refused" else "authorized"
                deltas[(gateway, outcome)] = deltas.get((gateway, outcome), 0) + added
        return deltas, current

    def kpi_flushed(self, totals: dict[AuthKey, int]) -> None:
        self._flushed = totals

    # -- read at snapshot time only ---------------------------------------------------
    def add_source(self, source: SampleSource, *, gauges: bool = False) -> None:
        """Counters (or gauges) read from a component when a snapshot is taken."""
        (self._gauge_sources if gauges else self._sources).append(source)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counters, histograms and current gauges, msgpack-able."""
        requests = dict(self.requests)
        refusals: dict[str, int] = {}
        for (protocol, _, result, reason), n in self.authorizations.items():
            key = (protocol, "authorize", result)
            requests[key] = requests.get(key, 0) + n
            if result == "refused":
                refusals[reason] = refusals.get(reason, 0) + n
        counters: list[list[Any]] = [
            ["chargingd_requests_total", list(key), value] for key, value in requests.items()
        ]
        counters += [["chargingd_refusals_total", [r], n] for r, n in refusals.items()]
        for source in self._sources:
            counters += [[name, list(labels), value] for name, labels, value in source()]
        gauges: list[list[Any]] = []
        for source in self._gauge_sources:
            gauges += [[name, list(labels), value] for name, labels, value in source()]
        histograms = [
            ["chargingd_request_duration_seconds", list(key), list(h.counts), h.sum_ns, h.count]
            for key, h in self.latency.items()
        ]
        return {"counters": counters, "gauges": gauges, "histograms": histograms}
