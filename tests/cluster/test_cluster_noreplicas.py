"""A master that refuses writes for want of replicas (NOREPLICAS), as docs/redis-cluster.md's
`min-replicas-to-write 1` makes every replica a failover promotes (it has no replica of
its own until the old master rejoins), with calls live through the real daemon.

The daemon answers as for Redis down, not with a traceback per request: an
Access-Request on that master's accounts is refused "charging unavailable", a Stop is
acknowledged and spooled (before: no answer, a traceback, the gateway retransmitting
into the same error), `chargingd ctl account topup` says Redis is unavailable. Once the
master takes writes again the spooled Stop is replayed: one CDR, the exact charge,
nothing left reserved.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import pytest
from cluster_daemon import ClusterDaemon, account_on, cluster_redis, running
from radius_e2e_harness import BIN, MICROS_PER_S, Call, GatewaySocket, Setup, write_setup
from redis_cluster import Cluster, Node

from chargingd.billing.cdr import CDR_STREAM
from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def daemon(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDaemon]:
    tmp = tmp_path_factory.mktemp("cluster-noreplicas")
    setup = write_setup(tmp, redis=cluster_redis(cluster), sessions="reaper_interval_s = 0.5")
    with running(cluster, setup, tmp / "daemon.log") as found:
        yield found


def _ctl(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "ctl", "--config", str(setup.config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _min_replicas(node: Node, count: int) -> None:
    with node.client() as c:
        c.config_set("min-replicas-to-write", count)


async def test_a_master_without_its_replicas_gives_clear_answers_and_recovers(
    daemon: ClusterDaemon, cluster: Cluster
) -> None:
    # Not the CDR stream's master: the Stop's close lease is on the account's master.
    victim = next(m for m in cluster.masters() if m is not cluster.master_of(CDR_STREAM))
    account = account_on(cluster, victim, "norep")
    daemon.create_account(account, "10.00")
    auth, acct = daemon.setup.auth_port, daemon.setup.acct_port
    sock = await GatewaySocket.open()
    call = Call("norep-1", account)
    try:
        assert (await sock.ask(call.access_request(), auth)).code == rc.ACCESS_ACCEPT
        await sock.ask(call.accounting(rc.STATUS_START, 0), acct)
        _min_replicas(victim, 2)  # it has one: every write is refused, NOREPLICAS
        began = time.monotonic()
        refused = await sock.ask(Call("norep-2", account).access_request(), auth)
        assert refused.code == rc.ACCESS_REJECT
        assert refused.text(rc.REPLY_MESSAGE) == "charging unavailable"
        stopped = await sock.ask(call.accounting(rc.STATUS_STOP, 42), acct, timeout_s=1.5)
        assert stopped.code == rc.ACCOUNTING_RESPONSE  # spooled, replayed later
        assert time.monotonic() - began < 2.5  # answered at once, no retransmission
        topup = await asyncio.to_thread(
            _ctl, daemon.setup, "account", "topup", account, "1.00", "--txn-id", "norep-t1"
        )
        assert topup.returncode == 1 and "unavailable" in topup.stderr.lower(), topup.stderr
    finally:
        _min_replicas(victim, 0)
        sock.close()

    deadline = time.monotonic() + 20
    while not (cdrs := [c for c in daemon.cdrs() if c.account_id == account]):
        assert time.monotonic() < deadline, "the spooled Stop was never replayed"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # a second CDR would have landed by now
    cdrs = [c for c in daemon.cdrs() if c.account_id == account]
    assert [(c.call_id, c.duration_s, c.cost_micros) for c in cdrs] == [
        ("norep-1", 42, 42 * MICROS_PER_S)
    ]
    acc = daemon.call("account.get", {"id": account})
    assert parse_amount(acc["balance"]) == parse_amount("10.00") - 42 * MICROS_PER_S, acc
    assert parse_amount(acc["reserved"]) == 0 and acc["live_sessions"] == 0, acc
    assert "Traceback" not in daemon.log()
    assert "NOREPLICAS" in daemon.log() or "NoReplicasError" in daemon.log()
