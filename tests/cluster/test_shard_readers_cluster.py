"""A gateway's last-seen shards share its hash tag: on a real Redis Cluster each
gateway's shards are on one master (different gateways on different masters), and the
one-script-per-gateway readers (sessions/lua/lastseen_shards.lua) work there: the
reaper's merged oldest due entries, the counts (SessionStore and monitoring), and again
after the script cache of every master was flushed."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis_cluster import running_cluster

from chargingd.sessions.record import member
from chargingd.sessions.shards import SHARDS_KEY, count_per_gateway, lastseen_key, shard_keys
from chargingd.sessions.store import GATEWAYS, SessionStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
SHARDS = 16
NAMES = [f"10.0.{g}.1" for g in range(8)]


async def test_one_script_per_gateway_on_a_cluster() -> None:
    with running_cluster() as cluster:
        where = {g: {cluster.master_of(k).port for k in shard_keys(g, SHARDS)} for g in NAMES}
        assert all(len(ports) == 1 for ports in where.values()), where  # one master each
        assert len({p for ports in where.values() for p in ports}) > 1, "all on one master"
        with cluster.client() as sync:
            sync.set(SHARDS_KEY, SHARDS)
            sync.sadd(GATEWAYS, *NAMES)
            entries = []
            for g, gateway in enumerate(NAMES):
                for i in range(40):
                    sid, score = f"c{g}-{i}", 1_000 + (i * 7 + g * 13) % 97
                    key = lastseen_key(gateway, sid, SHARDS)
                    sync.zadd(key, {member("acc", sid): score})
                    entries.append((float(score), member("acc", sid), key))
        seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
        redis: Any = RedisCluster(startup_nodes=seeds)
        try:
            store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, shards=SHARDS)
            await store.load_scripts()
            for _ in range(2):
                assert await store.count_live() == {g: 40 for g in NAMES}
                assert await count_per_gateway(redis, NAMES, SHARDS) == [40] * len(NAMES)
                got = await store.due_oldest(sorted(NAMES), 1_050, limit=25)
                want = sorted((s, r, k) for s, r, k in entries if s <= 1_050)[:25]
                assert [(s, k, r) for s, r, k in want] == got
                for node in cluster.masters():  # a restarted master: scripts loaded again
                    with node.client() as one:
                        one.script_flush()
        finally:
            await redis.aclose()
