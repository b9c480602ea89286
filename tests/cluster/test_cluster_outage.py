"""A shard of the cluster unavailable for a few seconds (its master and its replica
both paused: no failover can help), with calls live through the real daemon.

While no node can serve the shard's slots (the others answer CLUSTERDOWN, Redis' default
cluster-require-full-coverage), the daemon answers as DESIGN says for Redis down: an
Access-Request is refused, accounting is acknowledged and spooled, `chargingd ctl`
says Redis is unavailable, each within a few command timeouts (not the ten retries
redis-py makes by default); every log line is a line, never a traceback. Once the
shard is back, the spooled Stop is replayed: the call has one CDR, its account paid
exactly its usage, nothing is left reserved, and new calls are accepted again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from cluster_daemon import ClusterDaemon, account_on, cluster_redis, running
from radius_e2e_harness import BIN, MICROS_PER_S, Call, GatewaySocket, Setup, write_setup
from redis_cluster import Cluster, Node

from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def daemon(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDaemon]:
    tmp = tmp_path_factory.mktemp("cluster-outage")
    setup = write_setup(
        tmp,
        redis=cluster_redis(cluster, "command_timeout_s = 0.5\nconnect_timeout_s = 0.5"),
        sessions="reaper_interval_s = 0.5",
    )
    with running(cluster, setup, tmp / "daemon.log") as found:
        yield found


def ctl(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "ctl", "--config", str(setup.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _cluster_state(node: Node) -> str:
    with node.client() as c:
        text = c.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)["cluster_state"]


async def _ask(sock: GatewaySocket, packet: bytes, port: int) -> rc.Packet:
    """Send, retransmitting the same bytes every second, until its answer."""
    for _ in range(30):
        sock.transport.sendto(packet, ("127.0.0.1", port))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(sock.proto.inbox.get(), left)
            except TimeoutError:
                break
            if data[1] == packet[1]:
                return rc.decode(data)
    raise AssertionError(f"no answer from 127.0.0.1:{port}")


async def test_a_shard_down_gives_clear_answers_and_recovers(
    daemon: ClusterDaemon, cluster: Cluster
) -> None:
    victim = cluster.master_of("{a:x}:acct")
    replica = cluster.replica_of(victim)
    healthy = next(m for m in cluster.masters() if m is not victim)
    account = account_on(cluster, victim, "down")
    daemon.create_account(account, "10.00")
    other = account_on(cluster, healthy, "up")
    daemon.create_account(other, "10.00")
    auth, acct = daemon.setup.auth_port, daemon.setup.acct_port
    sock = await GatewaySocket.open()
    call = Call("outage-1", account)
    paused = [victim, replica]
    try:
        assert (await _ask(sock, call.access_request(), auth)).code == rc.ACCESS_ACCEPT
        await _ask(sock, call.accounting(rc.STATUS_START, 0), acct)
        for node in paused:
            assert node.proc is not None
            os.kill(node.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 20
        while _cluster_state(healthy) != "fail":  # the others see the shard gone
            assert time.monotonic() < deadline, cluster.describe()
            await asyncio.sleep(0.1)

        refused = await _ask(sock, Call("outage-2", account).access_request(), auth)
        assert refused.code == rc.ACCESS_REJECT
        began = time.monotonic()
        stopped = await _ask(sock, call.accounting(rc.STATUS_STOP, 42), acct)
        stop_s = time.monotonic() - began
        assert stopped.code == rc.ACCOUNTING_RESPONSE  # spooled, replayed later
        # The paused shard's own account: its node does not answer at all (timeouts).
        began = time.monotonic()
        down = await asyncio.to_thread(ctl, daemon.setup, "account", "get", account)
        ctl_s = time.monotonic() - began
        print(f"paused shard: Stop acknowledged in {stop_s:.1f} s, ctl answered in {ctl_s:.1f} s")
        assert down.returncode != 0 and "unavailable" in down.stderr.lower(), down.stderr
        # Within a gateway's first retransmissions (3 s x 0.5 s timeouts + backoff).
        assert stop_s < 4.0
        # An account on a healthy master: its node answers CLUSTERDOWN (full coverage).
        got = await asyncio.to_thread(ctl, daemon.setup, "account", "get", other)
        assert got.returncode != 0 and "Traceback" not in got.stderr, got.stderr
        assert "unavailable" in got.stderr.lower(), got.stderr
    finally:
        for node in paused:
            assert node.proc is not None
            os.kill(node.proc.pid, signal.SIGCONT)
        await asyncio.to_thread(cluster.wait_healthy, 60)
        sock.close()

    # Recovery: the spooled Stop is replayed, the shard's accounts are served again.
    deadline = time.monotonic() + 30
    while not (cdrs := [c for c in daemon.cdrs() if c.account_id == account]):
        assert time.monotonic() < deadline, "the spooled Stop was never replayed"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # a second CDR would have landed by now
    cdrs = [c for c in daemon.cdrs() if c.account_id == account]
    assert [(c.call_id, c.duration_s, c.cost_micros) for c in cdrs] == [
        ("outage-1", 42, 42 * MICROS_PER_S)
    ]
    acc = daemon.call("account.get", {"id": account})
    assert parse_amount(acc["balance"]) == parse_amount("10.00") - 42 * MICROS_PER_S, acc
    assert parse_amount(acc["reserved"]) == 0 and acc["live_sessions"] == 0, acc
    sock = await GatewaySocket.open()
    try:
        again = Call("outage-3", account)
        assert (await _ask(sock, again.access_request(), auth)).code == rc.ACCESS_ACCEPT
        await _ask(sock, again.accounting(rc.STATUS_STOP, 1), acct)
    finally:
        sock.close()
    assert "Traceback" not in daemon.log()
