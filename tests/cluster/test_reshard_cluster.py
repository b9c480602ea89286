"""A new last-seen shard count on Redis Cluster: two daemons starting at once move
every last-seen entry and every live locator to its shard (their keys are on every
master), each once."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis_cluster import running_cluster

from chargingd.sessions.record import member
from chargingd.sessions.shards import LOCATORS, SHARDS_KEY, lastseen_key, locator_key, shard_keys
from chargingd.sessions.upgrade import upgrade_and_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
GATEWAYS = ["10.0.0.1", "fe80::1"]
CALLS = 200


async def test_two_starts_at_once_move_every_entry_and_locator_once() -> None:
    with running_cluster() as cluster:
        with cluster.client() as sync:
            sync.set(SHARDS_KEY, 32)  # the count the calls were written with
            for i in range(CALLS):
                gw, sid = GATEWAYS[i % 2], f"call-{i}"
                sync.zadd(lastseen_key(gw, sid, 32), {member(f"acc{i}", sid): 1_000 + i})
                sync.hset(locator_key(sid, 32), sid, f"acc{i}")
            sync.sadd("sess:gateways", *GATEWAYS)
            sync.delete(SHARDS_KEY)  # every daemon stopped, the count changed to 8
        seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
        clients = [RedisCluster(startup_nodes=seeds), RedisCluster(startup_nodes=seeds)]
        try:
            await asyncio.gather(*(upgrade_and_log(c, 8) for c in clients))
            redis = clients[0]
            assert await redis.get(SHARDS_KEY) == b"8"
            for i in range(CALLS):
                gw, sid = GATEWAYS[i % 2], f"call-{i}"
                raw = member(f"acc{i}", sid)
                assert await redis.zscore(lastseen_key(gw, sid, 8), raw) == 1_000 + i
                assert await redis.hget(locator_key(sid, 8), sid) == f"acc{i}".encode()
            for gw in GATEWAYS:
                assert sum([await redis.zcard(k) for k in shard_keys(gw, 8)]) == CALLS // 2
                for key in shard_keys(gw, 32)[8:]:
                    assert await redis.exists(key) == 0, key
            for n in range(8, 32):
                assert await redis.exists(f"{LOCATORS}{n}") == 0
            assert sum([await redis.hlen(f"{LOCATORS}{n}") for n in range(8)]) == CALLS
        finally:
            for c in clients:
                await c.aclose()
