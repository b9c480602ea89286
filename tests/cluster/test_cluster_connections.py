"""The cluster client's own limits, met by what chargingd does.

Many commands at once to one node of the cluster, as chargingd's tools send them:
`rerate --apply`, mediation's ledger charges and invoice postings settle up to 500
calls of a chunk concurrently, the account list reads a page of accounts at once.

redis-py's cluster client keeps at most 100 connections per node and fails the 101st
concurrent command at once (MaxConnectionsError, a ConnectionError: "Redis down"),
where its client of one Redis opens what it needs. A rerate of 142 calls of a few
accounts failed on the cluster soak with an empty message ("chargingd rerate: ").

A blocking read of a quiet stream (the exporter, the KPI feeder, the fraud events
reader: XREADGROUP BLOCK 1000 ms) on a client whose command_timeout_s is shorter: the
socket timeout fired first, every pass failed ("kpi feeder pass failed: TimeoutError",
once a minute for the whole quiet time of the soak) and an entry delivered as the
client gave up stayed pending (the soak's KPI group kept one until it was claimed).
The exporter kept its BLOCK under the timeout on one Redis only (a cluster client has
no connection_pool).
"""

from __future__ import annotations

import asyncio

import pytest
from redis.cluster import key_slot
from redis_cluster import Cluster

from chargingd.core.config import RedisConfig
from chargingd.core.redisconn import block_below_timeout, connect
from chargingd.ledger import Ledger, Mode
from chargingd.monitoring.feeder import BLOCK_MS, KpiFeeder
from chargingd.monitoring.windows import KpiStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ON_ONE_NODE = 300  # the harness's first master serves slots 0-5460


async def test_a_chunk_of_concurrent_ledger_calls_on_one_node(cluster: Cluster) -> None:
    names = [f"c{n}" for n in range(5000) if key_slot(f"{{a:c{n}}}".encode()) < 5461]
    names = names[:ON_ONE_NODE]
    assert len(names) == ON_ONE_NODE
    client = connect(RedisConfig(cluster_nodes=cluster.seeds))
    try:
        ledger = Ledger(client)
        await ledger.load_scripts()
        await asyncio.gather(
            *(
                ledger.create_account(
                    n, mode=Mode.PREPAID, currency="EUR", balance_micros=1, who="test"
                )
                for n in names
            )
        )
        _, accounts = await ledger.list_accounts(count=1000)
        assert sorted(a.id for a in accounts) == sorted(names)
    finally:
        await client.aclose()


async def test_a_quiet_stream_is_read_without_a_timeout(cluster: Cluster) -> None:
    client = connect(RedisConfig(cluster_nodes=cluster.seeds, command_timeout_s=0.5))
    try:
        assert block_below_timeout(client, BLOCK_MS) == 250  # the exporter's too
        store = KpiStore(client, max_groups=100)
        feeder = KpiFeeder(client, store, group="kpi", consumer="t", stream="quiet:cdrs")
        for _ in range(3):  # recovery read, then blocking reads of nothing
            assert await feeder.step() == 0
    finally:
        await client.aclose()
