"""The host's processes summed: what /metrics and server.status show for this daemon.

Each process reports cumulative counters (monitoring/meters.py). The host's value of
a counter is the sum over the processes running now plus the last values of those
that exited ("retired"), so a worker restart never makes a counter go backwards and
each request is counted once, by the process that served it. Gauges (queue depth)
are summed over the running processes only. Only this host's processes are here: a
Prometheus scraping several hosts sums them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LabelKey = tuple[str, tuple[str, ...]]  # (metric name, label values)


class HistogramSum:
    __slots__ = ("count", "counts", "sum_ns")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum_ns = 0
        self.count = 0

    def add(self, counts: list[int], sum_ns: int, count: int) -> None:
        if len(counts) != len(self.counts):
            return  # another version's buckets: not mixed
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.sum_ns += sum_ns
        self.count += count


class HostView:
    """Latest report per running process, retired totals, and the local process."""

    def __init__(self, local: Callable[[], dict[str, Any]]) -> None:
        self._local = local  # this process's report, taken fresh when asked
        self.reports: dict[int, dict[str, Any]] = {}  # pid -> latest report
        self._retired_counters: dict[LabelKey, float] = {}
        self._retired_hist: dict[LabelKey, HistogramSum] = {}
        self.retired_processes = 0

    def update(self, pid: int, report: dict[str, Any]) -> None:
        self.reports[pid] = report

    def retire(self, pid: int) -> None:
        """The process exited: keep its last counters in the host's totals."""
        report = self.reports.pop(pid, None)
        if report is None:
            return
        self.retired_processes += 1
        meters = report.get("meters", {})
        _add_counters(self._retired_counters, meters.get("counters", []))
        _add_histograms(self._retired_hist, meters.get("histograms", []))

    def serving(self, pid: int) -> bool:
        return bool(self.reports.get(pid, {}).get("serving"))

    def all_reports(self) -> list[dict[str, Any]]:
        """The local process first, then the workers by pid."""
        return [self._local(), *(self.reports[pid] for pid in sorted(self.reports))]

    def totals(
        self,
    ) -> tuple[dict[LabelKey, float], dict[LabelKey, float], dict[LabelKey, HistogramSum]]:
        """(counters, gauges, histograms) summed over the host."""
        counters = dict(self._retired_counters)
        hist: dict[LabelKey, HistogramSum] = {}
        for key, h in self._retired_hist.items():
            hist[key] = HistogramSum(len(h.counts))
            hist[key].add(h.counts, h.sum_ns, h.count)
        gauges: dict[LabelKey, float] = {}
        for report in self.all_reports():
            meters = report.get("meters", {})
            _add_counters(counters, meters.get("counters", []))
            _add_counters(gauges, meters.get("gauges", []))
            _add_histograms(hist, meters.get("histograms", []))
        return counters, gauges, hist


def _add_counters(into: dict[LabelKey, float], samples: list[Any]) -> None:
    for name, labels, value in samples:
        key = (name, tuple(labels))
        into[key] = into.get(key, 0) + value


def _add_histograms(into: dict[LabelKey, HistogramSum], samples: list[Any]) -> None:
    for name, labels, counts, sum_ns, count in samples:
        key = (name, tuple(labels))
        h = into.get(key)
        if h is None:
            h = into[key] = HistogramSum(len(counts))
        h.add(counts, sum_ns, count)
