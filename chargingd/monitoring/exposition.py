"""The Prometheus text exposition of /metrics (prometheus-client's own encoder).

One custom collector turns what the daemon already holds into metric families at
scrape time: the host's summed process counters (monitoring/host.py), the cluster
gauges and KPI windows sampled from Redis (monitoring/sampler.py) and the feeder's
counters. No prometheus-client metric object is touched on the request path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from chargingd.monitoring.catalog import FAMILIES
from chargingd.monitoring.host import HistogramSum, LabelKey
from chargingd.monitoring.meters import LATENCY_BUCKETS_S
from chargingd.monitoring.outcomes import OUTCOMES

Values = dict[LabelKey, float]
# (counters, gauges, histograms) of the moment of the scrape
Provider = Callable[[], tuple[Values, Values, dict[LabelKey, HistogramSum]]]

# KPI figure -> (metric, scale from the figure's unit to the metric's base unit)
_KPI_GAUGES = {
    "asr": ("chargingd_kpi_asr_ratio", 1.0),
    "ner": ("chargingd_kpi_ner_ratio", 1.0),
    "acd_s": ("chargingd_kpi_acd_seconds", 1.0),
    "aloc_s": ("chargingd_kpi_aloc_seconds", 1.0),
    "pdd_ms": ("chargingd_kpi_pdd_seconds", 0.001),
    "mos": ("chargingd_kpi_mos", 1.0),
    "jitter_ms": ("chargingd_kpi_jitter_seconds", 0.001),
    "loss_pct": ("chargingd_kpi_packet_loss_ratio", 0.01),
}


def kpi_values(windows: dict[str, Any]) -> Values:
    """Gauge values of the KPI windows ({window: {dimension: {group: figures}}})."""
    out: Values = {}
    for window, dimensions in windows.items():
        for dimension, groups in dimensions.items():
            for group, fig in groups.items():
                labels = (window, dimension, group)
                out[("chargingd_kpi_attempts", labels)] = fig["attempts"]
                out[("chargingd_kpi_refused", labels)] = fig["refused"]
                for name in OUTCOMES:
                    out[("chargingd_kpi_calls", (*labels, name))] = fig[name]
                for figure, (metric, scale) in _KPI_GAUGES.items():
                    if fig.get(figure) is not None:
                        out[(metric, labels)] = fig[figure] * scale
    return out


class DaemonCollector(Collector):
    """Every family of the catalogue that has values now."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def collect(self) -> Iterator[Metric]:
        counters, gauges, histograms = self.provider()
        for name, family in FAMILIES.items():
            if family.kind == "histogram":
                yield from self._histogram(name, histograms)
                continue
            values = counters if family.kind == "counter" else gauges
            samples = [(labels, v) for (n, labels), v in values.items() if n == name]
            if not samples:
                continue
            cls = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = cls(name, family.help, labels=list(family.labels))
            for labels, value in sorted(samples):
                metric.add_metric(list(labels), value)
            yield metric

    def _histogram(self, name: str, histograms: dict[LabelKey, HistogramSum]) -> Iterator[Metric]:
        family = FAMILIES[name]
        samples = sorted((labels, h) for (n, labels), h in histograms.items() if n == name)
        if not samples:
            return
        metric = HistogramMetricFamily(name, family.help, labels=list(family.labels))
        for labels, h in samples:
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), h.counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            metric.add_metric(list(labels), buckets, h.sum_ns / 1e9)
        yield metric


def render(provider: Provider) -> bytes:
    """The text exposition (format 0.0.4) of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(provider))
    return generate_latest(registry)
