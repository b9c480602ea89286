"""Many commands at once to one node of the cluster, as chargingd's tools send them:
`rerate --apply`, mediation's ledger charges and invoice postings settle up to 500
calls of a chunk concurrently, the account list reads a page of accounts at once.

redis-py's cluster client keeps at most 100 connections per node and fails the 101st
concurrent command at once (MaxConnectionsError, a ConnectionError: "Redis down"),
where its client of one Redis opens what it needs. A rerate of 142 calls of a few
accounts failed on the cluster soak with an empty message ("chargingd rerate: ").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.cluster import key_slot
from redis_cluster import Cluster, running_cluster

from chargingd.core.config import RedisConfig
from chargingd.core.redisconn import connect
from chargingd.ledger import Ledger, Mode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ON_ONE_NODE = 300  # the harness's first master serves slots 0-5460


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as found:
        yield found


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
