"""A Redis Cluster master killed in the middle of traffic, its replica promoted.

Calls run concurrently through the real daemon (authorize, Start, two Interims, Stop,
each packet retransmitted by the gateway until answered, as RFC 5080 gateways do;
an authorize refused while the cluster is down is dialled again, as a new call with a
session id of its own: a refused session id stays refused, so that its write, if it
still runs late, takes no money). The master that
serves the CDR stream and some of the accounts is SIGKILLed while calls are in
progress. Afterwards:
every call that was accepted ends in exactly one CDR, every CDR costs exactly its
usage, and for every account the ledger moved exactly the CDRs' money (balance,
debits, nothing left reserved or live): no micro-unit lost or charged twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from cluster_daemon import ClusterDaemon, cluster_redis, running
from radius_e2e_harness import MICROS_PER_S, Call, Daemon, GatewaySocket, write_setup
from redis_cluster import Cluster

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ACCOUNTS = [f"fo{n}" for n in range(9)]
BALANCE = "100.00"
CALLS_PER_ACCOUNT = 6
USAGE = (
    (rc.STATUS_START, 0),
    (rc.STATUS_INTERIM, 30),
    (rc.STATUS_INTERIM, 60),
    (rc.STATUS_STOP, 75),
)


@pytest.fixture(scope="module")
def daemon(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDaemon]:
    tmp = tmp_path_factory.mktemp("cluster-failover")
    setup = write_setup(tmp, redis=cluster_redis(cluster), sessions="reaper_interval_s = 0.5")
    with running(cluster, setup, tmp / "daemon.log") as found:
        yield found


async def _ask(sock: GatewaySocket, packet: bytes, port: int, tries: int = 30) -> rc.Packet:
    """Send, retransmitting the same bytes every second, until the answer with this
    packet's Identifier arrives (late answers to earlier packets are skipped)."""
    inbox = sock.proto.inbox
    for _ in range(tries):
        sock.transport.sendto(packet, ("127.0.0.1", port))
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                break
            if data[1] == packet[1]:
                return rc.decode(data)
    raise AssertionError(f"no answer from 127.0.0.1:{port}")


async def _authorize(daemon: Daemon, sock: GatewaySocket, first: Call) -> Call | None:
    """Dial until accepted: the call accepted, None if every dial was refused. A dial
    refused while the cluster fails over is dialled again as a new call (a session id of
    its own, as a gateway's redial is): the daemon keeps a session id it refused with
    "charging unavailable" refused (ledger/refuse.lua), because the write it gave up on
    may still run late on the promoted replica and must take no money then."""
    call = first
    for attempt in range(1, 21):
        answer = await _ask(sock, call.access_request(), daemon.setup.auth_port)
        if answer.code == rc.ACCESS_ACCEPT:
            return call
        await asyncio.sleep(0.3)
        call = Call(f"{first.session_id}-redial{attempt}", first.user)
    return None


async def _one_call(daemon: Daemon, first: Call, started: list[str]) -> str | None:
    """One call, to its Stop: the session id accepted, None if it never was."""
    sock = await GatewaySocket.open()
    try:
        call = await _authorize(daemon, sock, first)
        if call is None:
            return None
        started.append(call.session_id)
        for status, usage_s in USAGE:
            packet = call.accounting(status, usage_s)  # retransmitted as the same bytes
            answer = await _ask(sock, packet, daemon.setup.acct_port)
            assert answer.code == rc.ACCOUNTING_RESPONSE
            await asyncio.sleep(0.05)
        return call.session_id
    finally:
        sock.close()


def _cdrs(daemon: ClusterDaemon) -> list[CDR]:
    with daemon.redis() as r:
        return [CDR.unpack(f[b"cdr"]) for _, f in r.xrange(CDR_STREAM)]


async def test_master_killed_mid_traffic_loses_and_doubles_nothing(
    daemon: ClusterDaemon, cluster: Cluster
) -> None:
    for account in ACCOUNTS:
        daemon.create_account(account, BALANCE)
    # The master of the CDR stream, which also serves some of the accounts.
    victim = cluster.master_of(CDR_STREAM)
    on_victim = [a for a in ACCOUNTS if cluster.master_of(f"{{a:{a}}}:acct") is victim]
    calls = [Call(f"fo-{a}-{n}", a) for n in range(CALLS_PER_ACCOUNT) for a in ACCOUNTS]
    started: list[str] = []

    async def traffic() -> list[str | None]:
        tasks = []
        for n, call in enumerate(calls):
            tasks.append(asyncio.create_task(_one_call(daemon, call, started)))
            if n % len(ACCOUNTS) == len(ACCOUNTS) - 1:
                await asyncio.sleep(0.2)  # calls start in waves
        return list(await asyncio.gather(*tasks))

    running = asyncio.create_task(traffic())
    while len(started) < len(calls) // 3:
        await asyncio.sleep(0.01)
    killed_at = time.monotonic()
    promoted = await asyncio.to_thread(cluster.fail_over, victim)
    print(
        f"failover of {victim.address} to {promoted.address}: {time.monotonic() - killed_at:.1f} s"
    )
    done = await running
    accepted = [sid for sid in done if sid is not None]
    assert len(accepted) == len(calls)  # every call eventually got through
    assert on_victim  # the killed master served some of these accounts

    # Every accepted call ends in one CDR (spooled accounting is replayed).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cdrs = await asyncio.to_thread(_cdrs, daemon)
        if len(cdrs) >= len(accepted):
            break
        await asyncio.sleep(0.2)
    ids = sorted(c.call_id for c in cdrs)
    assert ids == sorted(accepted), "each accepted call exactly one CDR"
    assert {c.cost_micros for c in cdrs} == {75 * MICROS_PER_S}
    # The ledger moved exactly what the CDRs say, per account.
    for account in ACCOUNTS:
        acc = daemon.call("account.get", {"id": account})
        charged = sum(c.cost_micros for c in cdrs if c.account_id == account)
        assert charged == CALLS_PER_ACCOUNT * 75 * MICROS_PER_S, account
        assert parse_amount(acc["debits"]) == charged, (account, acc)
        assert parse_amount(acc["balance"]) == parse_amount(BALANCE) - charged, (account, acc)
        assert parse_amount(acc["reserved"]) == 0 and acc["live_sessions"] == 0, (account, acc)
    with daemon.redis() as r:
        assert r.xlen("cdr:orphans") == 0
