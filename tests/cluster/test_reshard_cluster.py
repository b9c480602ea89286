"""A new last-seen shard count on Redis Cluster: two daemons starting at once move
every last-seen entry and every live locator (this version's sess:lc:N of live
records, and an older daemon's sess:locs:N) to its shard (their keys are on every
master), each once; a new locator whose record is gone is dropped, unless the record
lands (its node answering after the locator's) within the grace."""

from __future__ import annotations

import asyncio
import logging
import time

import msgpack
import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis_cluster import Cluster

from chargingd.sessions.indexes import record_key
from chargingd.sessions.record import CODES, member
from chargingd.sessions.shards import (
    LOCATOR_FACTOR,
    LOCATORS,
    OLD_LOCATORS,
    SHARDS_KEY,
    lastseen_key,
    locator_key,
    old_locator_key,
    shard_keys,
)
from chargingd.sessions.upgrade import upgrade_and_log

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
GATEWAYS = ["10.0.0.1", "fe80::1"]
CALLS = 200


async def test_two_starts_at_once_move_every_entry_and_locator_once(cluster: Cluster) -> None:
    cluster.flush()
    with cluster.client() as sync:
        sync.set(SHARDS_KEY, 32)  # the count the calls were written with
        for i in range(CALLS):
            gw, sid = GATEWAYS[i % 2], f"call-{i}"
            sync.zadd(lastseen_key(gw, sid, 32), {member(f"acc{i}", sid): 1_000 + i})
            if i % 2:  # an older daemon's locator
                sync.hset(old_locator_key(sid, 32), sid, f"acc{i}")
            else:  # this version's, of a live record (one in 20 gone)
                sync.hset(locator_key(sid, 32), sid, f"acc{i}")
                if i % 20:
                    live = msgpack.packb({CODES["state"]: "live"})
                    sync.set(record_key(f"acc{i}", sid), live)
        gone = {f"call-{i}" for i in range(0, CALLS, 20)}
        sync.sadd("sess:gateways", *GATEWAYS)
        sync.delete(SHARDS_KEY)  # every daemon stopped, the count changed to 8
    seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
    clients = [RedisCluster(startup_nodes=seeds), RedisCluster(startup_nodes=seeds)]
    try:
        await asyncio.gather(*(upgrade_and_log(c, 8, grace_s=0.2) for c in clients))
        redis = clients[0]
        assert await redis.get(SHARDS_KEY) == b"8"
        for i in range(CALLS):
            gw, sid = GATEWAYS[i % 2], f"call-{i}"
            raw = member(f"acc{i}", sid)
            assert await redis.zscore(lastseen_key(gw, sid, 8), raw) == 1_000 + i
            where = old_locator_key(sid, 8) if i % 2 else locator_key(sid, 8)
            want = None if sid in gone else f"acc{i}".encode()
            assert await redis.hget(where, sid) == want
        for gw in GATEWAYS:
            assert sum([await redis.zcard(k) for k in shard_keys(gw, 8)]) == CALLS // 2
            for key in shard_keys(gw, 32)[8:]:
                assert await redis.exists(key) == 0, key
        for n in range(8, 32):
            assert await redis.exists(f"{OLD_LOCATORS}{n}") == 0
        for n in range(8 * LOCATOR_FACTOR, 32 * LOCATOR_FACTOR):
            assert await redis.exists(f"{LOCATORS}{n}") == 0
        assert sum([await redis.hlen(f"{OLD_LOCATORS}{n}") for n in range(8)]) == CALLS // 2
        new = [await redis.hlen(f"{LOCATORS}{n}") for n in range(8 * LOCATOR_FACTOR)]
        assert sum(new) == CALLS // 2 - len(gone)
    finally:
        for c in clients:
            await c.aclose()


async def test_a_record_landing_within_the_grace_keeps_its_locator_moved(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Locators written with 32 shards, the count now 8: a closed record's is dropped,
    one whose record lands after reshard's first look (another node, within the grace)
    is kept and moved to its shard of 8, one whose record never lands is dropped."""
    cluster.flush()
    caplog.set_level(logging.INFO, logger="chargingd.sessions.upgrade")
    live = msgpack.packb({CODES["state"]: "live"})
    with cluster.client() as sync:
        for sid in ("landing-1", "never-1", "closed-0"):
            sync.hset(locator_key(sid, 32), sid, "acc")
        sync.set(record_key("acc", "closed-0"), msgpack.packb({CODES["state"]: "closed"}))
    seeds = [ClusterNode("127.0.0.1", int(s.rpartition(":")[2])) for s in cluster.seeds]
    redis = RedisCluster(startup_nodes=seeds)

    async def record_lands() -> None:
        while "have no session record" not in caplog.text:  # reshard's first look
            await asyncio.sleep(0.01)
        await redis.set(record_key("acc", "landing-1"), live)

    try:
        began = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(upgrade_and_log(redis, 8, grace_s=1.0), record_lands()), 30
        )
        assert time.monotonic() - began >= 0.95
        assert "2 live locators have no session record" in caplog.text
        assert await redis.hget(locator_key("landing-1", 8), "landing-1") == b"acc"
        for sid in ("never-1", "closed-0"):
            assert await redis.hget(locator_key(sid, 8), sid) is None, sid
        for sid in ("landing-1", "never-1", "closed-0"):  # each moved (another shard)
            assert locator_key(sid, 32) != locator_key(sid, 8)
            assert await redis.hget(locator_key(sid, 32), sid) is None, sid
    finally:
        await redis.aclose()
