"""In-process meters, the metered ccapi wrapper and the host's sums over processes."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chargingd.monitoring.exposition import render
from chargingd.monitoring.host import HostView
from chargingd.monitoring.metered import MeteredCredit
from chargingd.monitoring.meters import LATENCY_BUCKETS_S, Histogram, ProcessMeters
from chargingd.sessions.ccapi import (
    Authorized,
    CallInfo,
    GrantState,
    RefusalCode,
    Refused,
    UsageKind,
    UsageReport,
)


def test_histogram_buckets_follow_le() -> None:
    h = Histogram()
    h.observe_ns(500_000)  # exactly 0.5 ms: the 0.0005 bucket (le)
    h.observe_ns(500_001)
    h.observe_ns(10_000_000_000)  # 10 s: +Inf
    assert h.counts[0] == 1 and h.counts[1] == 1 and h.counts[-1] == 1
    assert len(h.counts) == len(LATENCY_BUCKETS_S) + 1
    assert h.count == 3 and h.sum_ns == 10_001_000_001


class Answers:
    """A CreditControl that answers what it is told (the decisions are not under test)."""

    def __init__(self) -> None:
        self.answers: list[Authorized | Refused] = []
        self.accounted: list[UsageReport] = []

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        return self.answers.pop(0)

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        return self.answers.pop(0)

    async def account(self, report: UsageReport) -> None:
        if report.usage_s < 0:
            raise ValueError("bad")
        self.accounted.append(report)

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        return None

    async def grant_state(self, session_id: str) -> GrantState | None:
        return None

    async def closed_usage(self, session_id: str) -> int | None:
        return None


CALL = CallInfo("s1", "alice", "+4930111", "+4420", "10.0.0.1", "gw")


async def test_metered_credit_counts_each_outcome() -> None:
    inner = Answers()
    meters = ProcessMeters("main")
    credit = MeteredCredit(inner, meters, "radius")
    inner.answers = [
        Authorized("alice", 60, 60, 1, "EUR"),
        Refused(RefusalCode.INSUFFICIENT_CREDIT, "no money"),
        Authorized("", 300, 60, 0, ""),  # sessions' fail-open grant
    ]
    for _ in range(3):
        await credit.authorize(CALL)
    await credit.account(UsageReport(CALL, UsageKind.STOP, 10, 0))
    with pytest.raises(ValueError):
        await credit.account(UsageReport(CALL, UsageKind.STOP, -1, 0))
    snapshot = {(name, tuple(labels)): n for name, labels, n in meters.snapshot()["counters"]}
    assert snapshot == {
        ("chargingd_requests_total", ("radius", "authorize", "accepted")): 1,
        ("chargingd_requests_total", ("radius", "authorize", "refused")): 1,
        ("chargingd_requests_total", ("radius", "authorize", "fail_open")): 1,
        ("chargingd_requests_total", ("radius", "stop", "ok")): 1,
        ("chargingd_requests_total", ("radius", "stop", "error")): 1,
        ("chargingd_refusals_total", ("insufficient_credit",)): 1,
    }
    assert meters.latency[("radius", "authorize")].count == 3
    assert meters.latency[("radius", "accounting")].count == 1  # errors are not timed
    deltas, totals = meters.kpi_deltas()
    assert deltas == {("10.0.0.1", "authorized"): 2, ("10.0.0.1", "refused"): 1}
    assert meters.kpi_deltas()[0] == deltas  # not flushed yet: the same again
    meters.kpi_flushed(totals)
    assert meters.kpi_deltas()[0] == {}
    inner.answers = [Refused(RefusalCode.SUSPENDED, "suspended")]
    await credit.authorize(CALL)
    assert meters.kpi_deltas()[0] == {("10.0.0.1", "refused"): 1}


def test_gateways_beyond_the_bound_count_as_other() -> None:
    meters = ProcessMeters("main")
    for i in range(5000):
        meters.authorize_done("radius", f"10.0.{i // 256}.{i % 256}", "accepted")
    assert len(meters.authorizations) == 4097
    assert meters.authorizations[("radius", "other", "accepted", "")] == 5000 - 4096


def report(meters: ProcessMeters, pid: int) -> dict[str, object]:
    return {"pid": pid, "role": meters.role, "status": {}, "at_ms": 0, "meters": meters.snapshot()}


def test_host_sums_processes_and_keeps_a_dead_workers_counts() -> None:
    main, worker = ProcessMeters("main"), ProcessMeters("worker")
    host = HostView(lambda: report(main, 1))
    main.authorize_done("radius", "10.0.0.1", "accepted")
    for _ in range(3):
        worker.authorize_done("radius", "10.0.0.1", "accepted")
    worker.histogram("radius", "authorize").observe_ns(1_000_000)
    worker.add_source(lambda: [("chargingd_radius_queue_depth", ("auth",), 7)], gauges=True)
    host.update(2, report(worker, 2))
    counters, gauges, hist = host.totals()
    key = ("chargingd_requests_total", ("radius", "authorize", "accepted"))
    assert counters[key] == 4
    assert gauges[("chargingd_radius_queue_depth", ("auth",))] == 7
    host.retire(2)  # the worker died: its requests still count, its queue does not
    counters, gauges, hist = host.totals()
    assert counters[key] == 4 and gauges == {}
    assert hist[("chargingd_request_duration_seconds", ("radius", "authorize"))].count == 1
    # Its replacement starts from zero: the host's total goes on from 4.
    fresh = ProcessMeters("worker")
    fresh.authorize_done("radius", "10.0.0.2", "accepted")
    host.update(3, report(fresh, 3))
    assert host.totals()[0][key] == 5


def test_exposition_is_valid_prometheus_text() -> None:
    main = ProcessMeters("main")
    main.authorize_done("radius", "10.0.0.1", "accepted")
    main.histogram("radius", "authorize").observe_ns(1_500_000)
    host = HostView(lambda: report(main, 1))
    text = render(host.totals).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["chargingd_requests"]
    assert requests.type == "counter"
    assert [s.value for s in requests.samples if s.name.endswith("_total")] == [1.0]
    hist = families["chargingd_request_duration_seconds"]
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["0.001"] == 0 and buckets["0.002"] == 1 and buckets["+Inf"] == 1
