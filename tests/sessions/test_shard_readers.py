"""The readers of a whole gateway's last-seen shards run one script per gateway
(sessions/lua/lastseen_shards.lua) over its shards, which share the gateway's hash tag:
the reaper's oldest due entries (merged by score over the shards, then over the
gateways), the live counts (ctl, monitoring), a gateway's live calls (Accounting-On, ctl
listings). Entries in many shards of several gateways: the merged order and the limit
are those of one sorted index of them all; no due call is left out."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from sessions_harness import EUR, Clock, add_account, call, make_ledger, make_sessions

from chargingd.ledger.batch import CommandBatcher
from chargingd.sessions import indexes, shards
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.record import member
from chargingd.sessions.shards import count_per_gateway, shard_key, shard_keys, shard_of
from chargingd.sessions.store import GATEWAYS, LIVE, SessionStore

SHARDS = 16
GATEWAYS_ = ["10.0.0.1", "10.0.0.2", "fe80::1", "sbc.example.net"]


async def seeded(
    redis: aioredis.Redis, per_gateway: int, seed: int = 7
) -> tuple[SessionStore, list[tuple[float, str, bytes]]]:
    """A store over SHARDS shards; ``per_gateway`` entries a gateway, random scores (ties
    included) in every shard; every entry as (score, its shard's key, member)."""
    await redis.set(shards.SHARDS_KEY, SHARDS)
    store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, shards=SHARDS)
    await store.load_scripts()
    rng = random.Random(seed)
    entries = []
    for g, gateway in enumerate(GATEWAYS_):
        await redis.sadd(GATEWAYS, gateway)
        for i in range(per_gateway):
            sid, score = f"c{g}-{i}", rng.randrange(1_000, 1_000 + 3 * per_gateway)
            key, raw = store.lastseen(gateway, sid), member(f"acc{i % 5}", sid)
            await redis.zadd(key, {raw: score})
            entries.append((float(score), key, raw))
    for gateway in GATEWAYS_:  # many: every shard holds entries; few: most are empty
        held = sum([bool(await redis.zcard(k)) for k in shard_keys(gateway, SHARDS)])
        if per_gateway > 100:
            assert held == SHARDS, held
        elif per_gateway < SHARDS // 2:
            assert held * 2 < SHARDS, held
    return store, entries


def expected(entries: list[tuple[float, str, bytes]], until: int, limit: int) -> list[bytes]:
    return [raw for _, raw, _ in sorted((s, r, k) for s, k, r in entries if s <= until)][:limit]


@pytest.mark.parametrize("per_gateway", [150, 5])
@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
async def test_the_oldest_due_of_all_shards_of_all_gateways_merged(
    redis: aioredis.Redis, limit: int, per_gateway: int
) -> None:
    store, entries = await seeded(redis, per_gateway=per_gateway)
    gateways = await store.gateways()
    for until in (999, 1_000, 1_004, 1_050, 1_200, 10_000):
        got = await store.due_oldest(gateways, until, limit=limit)
        assert [raw for _, _, raw in got] == expected(entries, until, limit), (until, limit)
        for score, key, raw in got:  # each in the shard it is said to be in, with its score
            assert score <= until
            assert await redis.zscore(key, raw) == score


async def test_one_command_per_gateway(redis: aioredis.Redis) -> None:
    """A reaper's read and a count are one EVALSHA per gateway, whatever the shards."""
    store, _ = await seeded(redis, per_gateway=40)
    gateways = await store.gateways()
    await redis.config_resetstat()
    await store.due_oldest(gateways, 10_000, limit=100)
    await store.count_live()
    stats = await redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 2 * len(GATEWAYS_)


async def test_counts_and_a_gateways_calls(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, entries = await seeded(redis, per_gateway=60)
    assert await store.count_live() == {g: 60 for g in GATEWAYS_}
    assert await count_per_gateway(redis, GATEWAYS_, SHARDS) == [60] * len(GATEWAYS_)
    await redis.script_flush()  # a restarted Redis: loaded again, answered the same
    assert await count_per_gateway(redis, GATEWAYS_, SHARDS) == [60] * len(GATEWAYS_)
    batcher = CommandBatcher(redis)  # the monitoring sampler's path (the Ledger's)
    for _ in range(2):
        assert await count_per_gateway(redis, GATEWAYS_, SHARDS, batcher) == [60] * 4
        await redis.script_flush()
    assert await store.count_live() == {g: 60 for g in GATEWAYS_}
    # Without records every entry is dropped by live_of_gateway: read it raw instead.
    for merge_max in (1000, 3):  # merged by the script, and sorted by the caller
        monkeypatch.setattr(indexes, "MERGE_MAX", merge_max)
        for limit in (5, 0):
            (reply,) = await store.send([_read(store, "10.0.0.2", limit, merge_max)])
            mine = [e for e in entries if e[1].startswith(shard_key("10.0.0.2", 0)[:-1])]
            got = sorted(indexes._entries("10.0.0.2", reply))
            want = sorted((s, r, k) for s, k, r in mine)
            assert got[: limit or None] == want[: limit or None]


def _read(store: SessionStore, gateway: str, limit: int, merge_max: int) -> tuple[object, ...]:
    if 0 < limit <= merge_max:
        return store.over_shards(gateway, "oldest", "+inf", limit)
    return store.over_shards(gateway, "range", "+inf", limit or -1)


async def test_an_idle_gateway_and_a_bad_operation(redis: aioredis.Redis) -> None:
    store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, shards=SHARDS)
    await store.load_scripts()
    await redis.sadd(GATEWAYS, "idle")
    assert await store.count_live() == {"idle": 0}
    assert await store.due_oldest(["idle"], 10**13) == []
    with pytest.raises(Exception, match="unknown operation"):
        await store.send([store.over_shards("idle", "nonsense", 0, 1)])
    await redis.zadd(shard_key("idle", 3), {b"A\0x": 1})
    with pytest.raises(Exception, match="bad limit"):
        await store.send([store.over_shards("idle", "oldest", 0, 0)])


@pytest.mark.parametrize("gateway", ["10.0.0.1", "fe80::1:2", "", "~", "}", "a}b", "{x}", "a b"])
def test_a_gateways_shards_share_one_slot(gateway: str) -> None:
    keys = shard_keys(gateway, 64)
    assert {key_slot(k.encode()) for k in keys} == {key_slot(keys[0].encode())}
    assert keys[5] == shard_key(gateway, 5) == shards.sibling(keys[0], 5)


def test_distinct_gateways_distinct_keys() -> None:
    names = ["", "~", "}", "a}b", "a", "{a}", "a}", "fe80::1", "fe80::1:2", "{~}:"]
    keys = {shard_key(name, n) for name in names for n in range(3)}
    assert len(keys) == 3 * len(names)


async def test_the_reaper_takes_the_oldest_stale_calls_of_all_shards_and_gateways(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Calls of three gateways in many shards, each call silent since its authorize (a
    second apart, in an order unrelated to gateway or shard): each pass reaps exactly the
    `limit` oldest still live; none is left."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",), balance_micros=1000 * EUR)
    sessions = make_sessions(redis, ledger, clock, tmp_path, lastseen_shards=SHARDS)
    await sessions.store.load_scripts()
    rng = random.Random(3)
    order = [(f"s{i}", rng.choice(GATEWAYS_[:3])) for i in range(30)]
    for sid, gateway in order:
        assert isinstance(await sessions.authorize(call(sid, gateway=gateway)), Authorized)
        clock.advance(1)
    assert len({(g, shard_of(s, SHARDS)) for s, g in order}) > 15  # many shards
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    done = 0
    for limit in (4, 7, 100):
        assert await sessions.reaper.run_once(limit=limit) == min(limit, len(order) - done)
        done += min(limit, len(order) - done)
        for i, (sid, _) in enumerate(order):
            rec = await sessions.store.get("A", sid)
            assert (rec is None or rec.state != LIVE) == (i < done), (sid, done)
    assert done == len(order)
    assert await sessions.store.count_live() == {g: 0 for g in sorted(set(GATEWAYS_[:3]))}
