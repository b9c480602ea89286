"""The session-record upgrade (sessions/upgrade.py) on a real Redis Cluster: the old
hash records of many accounts, spread over the three masters, are each converted
once (each master scanned), keeping their expiry; what is no old record is left.
Then the old indexes (one last-seen zset and per-gateway sets, each account's live
set) move to the per-gateway zsets and the accounts' hashes, on every master."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis_cluster import Cluster

from chargingd.sessions.record import SessionRecord, member
from chargingd.sessions.store import GATEWAYS, lastseen_key, live_key
from chargingd.sessions.upgrade import upgrade_lastseen, upgrade_live_sets, upgrade_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
ACCOUNTS = 30


def old_fields(i: int) -> dict[str, str | int]:
    """A live record as the old code (6db408c^) wrote it: full names, the ids too."""
    return {
        "session_id": f"s{i}",
        "account_id": f"acc{i}",
        "user_name": "alice",
        "caller": "+4930111",
        "callee": "+4930123456",
        "destination": "DE_BERLIN",
        "plan": "retail",
        "currency": "EUR",
        "gateway": "10.0.0.1",
        "client": "gw1",
        "auth_ms": 1_767_225_600_000 + i,
        "held_micros": 750_000,
        "paid_usage_s": 75,
        "credit_micros": 10_000_000,
        "limited": 0,
        "state": "live",
    }


async def test_every_master_is_scanned_and_each_record_converted_once(cluster: Cluster) -> None:
    with cluster.client() as sync:
        for i in range(ACCOUNTS):
            key = f"{{a:acc{i}}}:s:s{i}"
            sync.hset(key, mapping=old_fields(i))
            sync.expire(key, 3600)
            sync.set(f"{{a:acc{i}}}:s:s{i}:fin", "lease", ex=60)  # a close lease: not a record
        sync.hset("{a:x}:s:notes", mapping={"what": "not a session"})  # left alone
        # acc0's call has a record of the new format already (a newer daemon wrote it):
        # it is kept, the old hash dropped.
        newer = SessionRecord.build(**{**old_fields(0), "auth_ms": 1, "held_micros": 1})
        sync.set("{a:acc0}:r:s0", newer.pack(), ex=600)
    assert len({cluster.master_of(f"{{a:acc{i}}}").port for i in range(ACCOUNTS)}) == 3

    seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
    clients = [RedisCluster(startup_nodes=seeds), RedisCluster(startup_nodes=seeds)]
    try:
        # Two daemons starting at once.
        counts = await asyncio.gather(*(upgrade_records(c) for c in clients))
        assert sum(c.live for c in counts) == ACCOUNTS - 1
        assert sum(c.kept_new for c in counts) == 1
        assert sum(c.closed for c in counts) == 0
        assert [c.foreign for c in counts] == [1, 1]
        redis = clients[0]
        for i in range(ACCOUNTS):
            assert await redis.exists(f"{{a:acc{i}}}:s:s{i}") == 0
            raw = await redis.get(f"{{a:acc{i}}}:r:s{i}")
            rec = SessionRecord.unpack(f"acc{i}", f"s{i}", raw)
            if i == 0:
                assert (rec.auth_ms, rec.held_micros) == (1, 1)
                continue
            assert (rec.auth_ms, rec.held_micros, rec.credit_micros, rec.state) == (
                1_767_225_600_000 + i,
                750_000,
                10_000_000,
                "live",
            )
            assert 3_590 < await redis.ttl(f"{{a:acc{i}}}:r:s{i}") <= 3_600
            assert await redis.get(f"{{a:acc{i}}}:s:s{i}:fin") == b"lease"
        assert await redis.hget("{a:x}:s:notes", "what") == b"not a session"
        assert (await upgrade_records(redis)).upgraded == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_old_indexes_move_on_every_master(cluster: Cluster) -> None:
    gateways = ("10.0.0.1", "10.0.0.2")
    with cluster.client() as sync:
        for i in range(ACCOUNTS):
            rec = SessionRecord.build(
                **{**old_fields(i), "session_id": f"x{i}", "gateway": gateways[i % 2]}
            )
            sync.set(f"{{a:acc{i}}}:r:x{i}", rec.pack(), ex=600)
            # the oldest daemons' one zset, or the per-gateway ones before the shards
            old = "sess:lastseen" if i % 3 else f"sess:lastseen:{gateways[i % 2]}"
            sync.zadd(old, {member(f"acc{i}", f"x{i}"): 1_000 + i})
            sync.sadd("sess:gateways", gateways[i % 2])
            sync.sadd(f"sess:gw:{gateways[i % 2]}", member(f"acc{i}", f"x{i}"))
            sync.sadd(f"{{a:acc{i}}}:live", f"x{i}")
            sync.expire(f"{{a:acc{i}}}:live", 600)
    seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
    clients = [RedisCluster(startup_nodes=seeds), RedisCluster(startup_nodes=seeds)]
    try:
        live = await asyncio.gather(*(upgrade_live_sets(c) for c in clients))
        assert sum(n for n, _ in live) == ACCOUNTS
        seen = await asyncio.gather(*(upgrade_lastseen(c) for c in clients))
        assert sum(c.moved for c in seen) >= ACCOUNTS
        assert sum(c.gateway_sets for c in seen) == 2
        redis = clients[0]
        olds = ["sess:lastseen", *(f"sess:gw:{g}" for g in gateways)]
        olds += [f"sess:lastseen:{g}" for g in gateways]
        assert await redis.exists(*olds) == 0
        assert sorted(await redis.smembers(GATEWAYS)) == sorted(g.encode() for g in gateways)
        for i in range(ACCOUNTS):
            assert await redis.exists(f"{{a:acc{i}}}:live") == 0
            assert await redis.hkeys(live_key(f"acc{i}")) == [f"x{i}".encode()]
            score = await redis.zscore(
                lastseen_key(gateways[i % 2], f"x{i}"), member(f"acc{i}", f"x{i}")
            )
            assert score == 1_000 + i
    finally:
        for c in clients:
            await c.aclose()
