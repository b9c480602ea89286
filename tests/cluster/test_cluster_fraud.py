"""The fraud rules in force on a Redis Cluster (the step-by-step session path, the
rules' values and the account's block in the account's own slot, the alerts and the
events stream in theirs): tests/fraud/test_daemon_e2e.py's hijacked account, unchanged,
against a daemon with two RADIUS processes whose [redis] lists the cluster's nodes.
The account is blocked after the configured count of risky calls, its live calls are
cut (Disconnect-Request) and end as `killed` CDRs, one alert, one webhook POST, the
normal account untouched; unblocked, it calls again. Then `ctl fraud state`, `ctl fraud
alerts` and `ctl fraud rules` show the unblock, the resolved incident and the rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_daemon import ClusterDaemon, cluster_redis
from fraud.test_daemon_e2e import (
    SCENARIO_RULES,
    TARIFF,
    UK,
    _hijack_blocked,
    fraud_toml,
    gateway_listening,
    place,
    stop,
)
from monitoring_harness import ctl_json
from radius_e2e_harness import Call, write_setup
from radius_peer import wait_until
from redis_cluster import Cluster
from webhook_receiver import Receiver, webhook_receiver

from chargingd.ledger.keys import acct_key
from chargingd.radius import codec as rc

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


# The rules counted from the CDRs (the fraud-events consumer of the CDR stream): each
# CDR's counts in its account's slot, the alerts in theirs.
EVENT_RULES = """
[[fraud.rules]]
name = "spend"
kind = "spend"
max_amount = "0.50"
window_s = 3600
action = "refuse"

[[fraud.rules]]
name = "short"
kind = "short_calls"
max_duration_s = 5
max_calls = 3
window_s = 600
"""
ON_THREE_MASTERS = ("bob", "alice", "carol")


@pytest.fixture
def events_daemon(cluster: Cluster, tmp_path: Path, hook: Receiver) -> Iterator[ClusterDaemon]:
    cluster.flush()
    top = fraud_toml(EVENT_RULES, webhook=hook.url)
    setup = write_setup(tmp_path, top=top, tariff_text=TARIFF, redis=cluster_redis(cluster))
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        assert found.wait_ready()["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        print(f"---- daemon log ----\n{found.log()}")  # shown when the test fails
        found.kill()


async def test_event_rules_count_cdrs_of_accounts_on_every_master(
    events_daemon: ClusterDaemon, hook: Receiver
) -> None:
    """bob and alice spend 0.60 each (two 30 s calls): their next call is refused by
    the spend rule; carol makes four 2 s calls: the short-calls alert. One incident
    each, shown by `ctl fraud alerts`; `ctl fraud state` says what is held."""
    daemon = events_daemon
    assert len({daemon.cluster.master_of(acct_key(a)).port for a in ON_THREE_MASTERS}) == 3
    for account in ON_THREE_MASTERS:
        daemon.create_account(account, "100.00")
    ended = {"bob": (30, 30), "alice": (30, 30), "carol": (2, 2, 2, 2)}
    n = 0
    for account, usages in ended.items():
        for usage_s in usages:
            n += 1
            call = Call(f"ev-{account}-{n}", account, called=UK)
            assert (await place(daemon, call)).code == rc.ACCESS_ACCEPT
            await stop(daemon, call, usage_s)

    async def refused(account: str) -> bool:
        nonlocal n
        n += 1
        answer = await place(daemon, Call(f"ev-{account}-{n}", account, called=UK), start=False)
        return answer.code == rc.ACCESS_REJECT

    for account in ("bob", "alice"):
        for _ in range(100):  # the consumer counts the CDRs moments after the Stop
            if await refused(account):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{account}'s spend never refused a call")
    assert not await refused("carol")  # carol spent 0.08: only alerted

    def incidents() -> dict[str, dict[str, Any]]:
        found = ctl_json(daemon, "fraud", "alerts")["incidents"]
        return {i["incident"]: i for i in found}

    expected = {"fraud.spend:bob", "fraud.spend:alice", "fraud.short:carol"}
    await wait_until(lambda: set(incidents()) == expected, timeout_s=10)
    assert incidents()["fraud.short:carol"]["details"]["count"] == 4
    await hook.wait_for(3)
    for account in ("bob", "alice"):
        state = ctl_json(daemon, "fraud", "state", account)["state"]
        assert "deny:spend" in state, state
    assert "Traceback" not in daemon.log()
