"""The last-seen index in shards (sessions/shards.py): each gateway's calls in small
zsets ``sess:seen:{GW}:N`` Redis keeps as listpacks. Every reader finds a call in any
shard, the shard count is the deployment's (a daemon configured otherwise loses no
call), and the older per-gateway zsets ``sess:lastseen:GW`` move to the shards."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from sessions_harness import (
    EUR,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    seen_count,
    seen_entries,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.indexes import old_lastseen_key
from chargingd.sessions.service import Sessions
from chargingd.sessions.shards import LOCATORS, SHARDS_KEY, locator_key, shard_keys, shard_of
from chargingd.sessions.store import LIVE, lastseen_key, member
from chargingd.sessions.upgrade import upgrade_and_log

GW = "10.0.0.1"
SHARDS = 8


def one_per_shard(shards: int, prefix: str = "c") -> list[str]:
    """Session ids that together fill every shard of ``shards`` (each at least once)."""
    sids: list[str] = []
    seen: set[int] = set()
    i = 0
    while len(seen) < shards:
        sid = f"{prefix}{i}"
        sids.append(sid)
        seen.add(shard_of(sid, shards))
        i += 1
    return sids


async def started_with(
    redis: aioredis.Redis, ledger: Ledger, data_dir: Path, shards: int, clock: Clock
) -> Sessions:
    sessions = make_sessions(redis, ledger, clock, data_dir, lastseen_shards=shards)
    await sessions.store.load_scripts()  # a daemon's start: agrees the shard count
    return sessions


async def authorize_all(sessions: Sessions, sids: list[str], gateway: str = GW) -> None:
    for sid in sids:
        answer = await sessions.authorize(call(sid, gateway=gateway))
        assert isinstance(answer, Authorized), sid


async def test_the_reaper_finds_a_stale_call_in_every_shard(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = await started_with(redis, ledger, tmp_path, SHARDS, clock)
    sids = one_per_shard(SHARDS)
    await authorize_all(sessions, sids)
    shards = {shard_of(s, SHARDS) for s in sids}
    assert shards == set(range(SHARDS))
    for key in shard_keys(GW, SHARDS):  # every shard holds calls
        assert await redis.zcard(key) > 0, key
    assert await sessions.store.count_live() == {GW: len(sids)}
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    assert await sessions.reaper.run_once(limit=len(sids)) == len(sids)
    for sid in sids:
        rec = await sessions.store.get("A", sid)
        assert rec is not None and rec.state != LIVE, sid
    assert await seen_count(redis, GW) == 0
    assert (await ledger.get_account("A")).reserved_micros == 0


async def test_accounting_on_closes_the_calls_of_every_shard_of_its_gateway(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = await started_with(redis, ledger, tmp_path, SHARDS, clock)
    sids = one_per_shard(SHARDS)
    await authorize_all(sessions, sids)
    await authorize_all(sessions, ["other"], gateway="10.0.0.2")
    listed = await sessions.list_sessions()
    assert sorted(r.session_id for r in listed) == sorted([*sids, "other"])
    await sessions.gateway_restarted(GW, "gw1")
    assert await seen_count(redis, GW) == 0
    cdrs = await read_cdrs(redis)
    assert sorted(c.call_id for c in cdrs) == sorted(sids)
    assert {c.status for c in cdrs} == {CdrStatus.GATEWAY_RESTART}
    assert await seen_count(redis, "10.0.0.2") == 1  # another gateway's call stays


async def test_shards_stay_listpacks_at_10000_live_calls_of_one_gateway(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The default 128 shards keep 10,000 live calls of one gateway in listpacks
    (zset-max-listpack-entries 128): the index costs ~45 bytes a call, not ~138."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = await started_with(redis, ledger, tmp_path, 128, clock)
    await authorize_all(sessions, [f"real{i}" for i in range(20)])  # written as a call is
    entries = await seen_entries(redis, GW)
    assert sorted(entries) == sorted(member("A", f"real{i}") for i in range(20))
    # The rest as the authorize writes them (sessions.store.lastseen), in bulk.
    pipe = redis.pipeline(transaction=False)
    for i in range(20, 10_000):
        sid = f"{i:08x}-{i * 7919 % 100_003}@10.0.0.1"
        pipe.zadd(sessions.store.lastseen(GW, sid), {member(f"acc{i % 1000}", sid): i})
    await pipe.execute()
    assert await seen_count(redis, GW) == 10_000
    sizes = [await redis.zcard(k) for k in shard_keys(GW, 128)]
    assert max(sizes) < 128, max(sizes)
    for key in shard_keys(GW, 128):
        # Compact (Redis 7: listpack, 6.2: ziplist), not a skiplist + dict.
        assert await redis.object("encoding", key) in (b"listpack", b"ziplist"), key
    assert await sessions.store.count_live() == {GW: 10_000}


async def test_a_daemon_configured_otherwise_uses_the_stored_shard_count(
    redis: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first start stores its count; a daemon configured with another one logs it
    and uses the stored count, so its calls are where the other daemons look."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    first = await started_with(redis, ledger, tmp_path / "a", SHARDS, clock)
    assert await redis.get(SHARDS_KEY) == str(SHARDS).encode()
    with caplog.at_level(logging.WARNING):
        other = await started_with(redis, ledger, tmp_path / "b", 64, clock)
    assert other.store.shards == SHARDS
    assert "lastseen_shards = 64, but this deployment uses 8" in caplog.text
    sids = one_per_shard(64, prefix="b")  # ids spread over 64 shards, were it 64
    await authorize_all(other, sids)
    assert await redis.exists(*shard_keys(GW, 64)[SHARDS:]) == 0
    clock.advance(first.cfg.interim_interval_s * first.cfg.stale_factor + 1)
    assert await first.reaper.run_once(limit=1000) == len(sids)
    assert await seen_count(redis, GW) == 0


async def test_a_new_shard_count_moves_every_entry_to_its_shard(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Changing the count: every daemon stopped, sess:shards deleted; the start that
    stores the new count moves each entry and each live locator to its shard (score
    kept), and the calls are found, reaped and listed as before; no locator is left
    in a shard nobody reads."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    before = await started_with(redis, ledger, tmp_path / "a", SHARDS, clock)
    sids = one_per_shard(32)
    await authorize_all(before, sids)
    scores = await seen_entries(redis, GW)
    await redis.delete(SHARDS_KEY)
    await upgrade_and_log(redis, 32)  # the new start
    after = await started_with(redis, ledger, tmp_path / "b", 32, clock)
    assert after.store.shards == 32
    for sid in sids:
        raw = member("A", sid)
        assert await redis.zscore(lastseen_key(GW, sid, 32), raw) == scores[raw]
    assert await seen_entries(redis, GW) == scores
    assert await seen_count(redis, GW) == len(sids)  # each once, in its shard
    fields = {}
    for key in {locator_key(f"x{n}", 32) for n in range(1000)}:  # every shard of 32
        fields |= await redis.hgetall(key)
    assert fields == {s.encode(): b"A" for s in sids}
    for sid in sids:
        assert await redis.hget(locator_key(sid, 32), sid) == b"A"
        assert await after.store.locate(sid, fresh=True) == "A"
    clock.advance(after.cfg.interim_interval_s * after.cfg.stale_factor + 1)
    assert await after.reaper.run_once(limit=1000) == len(sids)
    assert [k async for k in redis.scan_iter(match=LOCATORS + "*")] == []


async def old_daemons_call(redis: aioredis.Redis, sessions: Sessions, sid: str) -> float:
    """A call as a daemon before the shards indexed it: in sess:lastseen:GW."""
    await authorize_all(sessions, [sid])
    raw = member("A", sid)
    score = await redis.zscore(sessions.store.lastseen(GW, sid), raw)
    assert score is not None
    await redis.zrem(sessions.store.lastseen(GW, sid), raw)
    await redis.zadd(old_lastseen_key(GW), {raw: score})
    return float(score)


async def test_the_start_moves_the_per_gateway_zsets_to_the_shards(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = await started_with(redis, ledger, tmp_path, 128, clock)
    sids = [f"old{i}" for i in range(40)]
    scores = {member("A", s): await old_daemons_call(redis, sessions, s) for s in sids}
    await redis.zadd(old_lastseen_key(GW), {member("A", "gone"): 5})  # record gone
    assert await seen_count(redis, GW) == 0
    await upgrade_and_log(redis, 128)
    assert await redis.exists(old_lastseen_key(GW)) == 0
    assert await seen_entries(redis, GW) == scores
    for sid in sids:
        assert await redis.zscore(lastseen_key(GW, sid), member("A", sid)) is not None
    listed = await sessions.list_sessions()
    assert sorted(r.session_id for r in listed) == sorted(sids)


async def test_the_reaper_moves_what_an_older_daemon_still_indexes(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Rolling upgrade: a daemon before the shards still serves and indexes its new
    calls in sess:lastseen:GW; each reaper pass (and Accounting-On) moves them, so a
    silent one is reaped and an Accounting-On closes the others."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = await started_with(redis, ledger, tmp_path, 128, clock)
    await upgrade_and_log(redis, 128)
    await old_daemons_call(redis, sessions, "silent")
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    await old_daemons_call(redis, sessions, "talking")
    assert await sessions.reaper.run_once() == 1
    assert await redis.exists(old_lastseen_key(GW)) == 0
    rec = await sessions.store.get("A", "silent")
    assert rec is not None and rec.state != LIVE
    await old_daemons_call(redis, sessions, "third")
    await sessions.gateway_restarted(GW, "gw1")
    statuses = {c.call_id: c.status for c in await read_cdrs(redis)}
    assert statuses == {
        "silent": CdrStatus.STALE,
        "talking": CdrStatus.GATEWAY_RESTART,
        "third": CdrStatus.GATEWAY_RESTART,
    }
    assert await seen_count(redis, GW) == 0
    assert await redis.exists(old_lastseen_key(GW)) == 0
    assert (await ledger.get_account("A")).reserved_micros == 0
