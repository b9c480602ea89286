"""The fraud rules in force on a Redis Cluster (the step-by-step session path, the
rules' values and the account's block in the account's own slot, the alerts and the
events stream in theirs): tests/fraud/test_daemon_e2e.py's hijacked account, unchanged,
against a daemon with two RADIUS processes whose [redis] lists the cluster's nodes.
The account is blocked after the configured count of risky calls, its live calls are
cut (Disconnect-Request) and end as `killed` CDRs, one alert, one webhook POST, the
normal account untouched; unblocked, it calls again. Then `ctl fraud state`, `ctl fraud
alerts` and `ctl fraud rules` show the unblock, the resolved incident and the rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cluster_daemon import ClusterDaemon, cluster_redis
from monitoring_harness import ctl_json
from fraud.test_daemon_e2e import (
    SCENARIO_RULES,
    TARIFF,
    _hijack_blocked,
    fraud_toml,
    gateway_listening,
)
from radius_e2e_harness import write_setup
from redis_cluster import Cluster
from webhook_receiver import Receiver, webhook_receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def daemon(cluster: Cluster, tmp_path: Path, hook: Receiver) -> Iterator[ClusterDaemon]:
    top = fraud_toml(SCENARIO_RULES, webhook=hook.url)
    setup = write_setup(
        tmp_path, top=top, tariff_text=TARIFF, workers=2, redis=cluster_redis(cluster)
    )
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        status = found.wait_ready()
        assert status["redis"]["url"].startswith("cluster:")
        found.create_account("hijack", "100.00")
        found.create_account("normal", "100.00")
        yield found
    finally:
        print(f"---- daemon log ----\n{found.log()}")  # shown when the test fails
        found.kill()


async def test_hijacked_account_blocked_and_cut_on_the_cluster(
    daemon: ClusterDaemon, hook: Receiver
) -> None:
    async with gateway_listening(daemon) as gateway:
        await _hijack_blocked(daemon, gateway, hook)
    # The operator's fraud commands on the cluster (docs/fraud.md "Operator commands").
    state = ctl_json(daemon, "fraud", "state", "hijack")
    assert state["id"] == "hijack" and state["state"]["unblocked_by"].startswith("admin:")
    (incident,) = ctl_json(daemon, "fraud", "alerts")["incidents"]
    assert incident["incident"] == "fraud.risky-destinations:hijack"
    assert incident["state"] == "resolved"  # the unblock resolved it
    rules = ctl_json(daemon, "fraud", "rules", "--account", "hijack")
    assert "risky-destinations" in [r["name"] for r in rules["rules"]]
    assert "Traceback" not in daemon.log()
