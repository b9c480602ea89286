"""Monitoring on a Redis Cluster: tests/monitoring/test_monitoring_e2e.py's known
traffic, unchanged, through a daemon with two RADIUS processes whose [redis] lists the
cluster's nodes (the KPI buckets, the groups and the alert stream each in their own
slot): the exact KPIs and counters on /metrics and `ctl stats`, the KPI alert; and
the live gauges a Prometheus scrape reads from every master (live calls per gateway,
money held for them by accounts on three masters)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_daemon import ClusterDaemon, cluster_redis
from monitoring.test_monitoring_e2e import (  # the same flows, with this module's daemon
    scrape,
    test_known_traffic_gives_exact_kpis_and_counters,
    value,
)
from monitoring_harness import MONITORING, TARIFF_2, KnownCall, authorize, ctl_json, wait_for
from radius_e2e_harness import MICROS_PER_S, write_setup
from redis_cluster import Cluster

from chargingd.ledger.keys import acct_key
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

__all__ = ["test_known_traffic_gives_exact_kpis_and_counters"]


@pytest.fixture
def daemon(cluster: Cluster, tmp_path: Path) -> Iterator[ClusterDaemon]:
    cluster.flush()
    setup = write_setup(tmp_path, workers=2, extra=MONITORING, redis=cluster_redis(cluster))
    (tmp_path / "tariff.toml").write_text(TARIFF_2)
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        status = found.wait_ready()
        assert status["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        found.kill()
        print(f"---- daemon log ----\n{found.log()}")  # shown only when the test fails


ON_THREE_MASTERS = ("bob", "alice", "carol")


async def test_live_gauges_count_calls_and_holds_on_every_master(daemon: ClusterDaemon) -> None:
    masters = {daemon.cluster.master_of(acct_key(a)).port for a in ON_THREE_MASTERS}
    assert len(masters) == 3
    for account in ON_THREE_MASTERS:
        daemon.create_account(account, "100.00")
    calls = [KnownCall(f"live-{a}-{i}", a) for a in ON_THREE_MASTERS for i in range(2)]
    calls.append(KnownCall("live-b", "bob", nas="127.0.0.2"))
    socks = []
    try:
        for call in calls:
            sock, accepted = await authorize(daemon, call)
            socks.append(sock)
            assert accepted, call
            start = call.accounting(rc.STATUS_START, 0, 0)
            answer = await sock.ask(start, daemon.setup.acct_port, timeout_s=5.0)
            assert answer.code == rc.ACCOUNTING_RESPONSE
        held = 0
        for account in ON_THREE_MASTERS:
            got = daemon.call("account.get", {"id": account})
            held += int(got["reserved"].replace(".", "")) * 10_000
        assert held >= len(calls) * MICROS_PER_S  # each call holds its first grant

        def live() -> bool:
            s = scrape(daemon)
            return (
                value(s, "chargingd_active_calls") == len(calls)
                and value(s, "chargingd_gateway_active_calls", gateway="127.0.0.1") == 6
                and value(s, "chargingd_gateway_active_calls", gateway="127.0.0.2") == 1
                and value(s, "chargingd_reserved_money", currency="EUR") == held / 1e6
            )

        wait_for(live, "the live gauges of 7 calls on three masters")
        stats = ctl_json(daemon, "stats")
        assert stats["active_calls"] == len(calls)
        listed = daemon.call("session.list", {})["sessions"]
        assert sorted(s["session_id"] for s in listed) == sorted(c.session_id for c in calls)
    finally:
        for sock in socks:
            sock.close()
