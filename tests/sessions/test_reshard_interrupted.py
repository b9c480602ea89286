"""A new last-seen shard count (sessions/shards.py): a reshard the start could not
finish (the daemon stopped, Redis timed out) is finished by the next start, and the
live locators (shards of the same count) move too: no call stays where no reader
looks."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from fakes import T0_MS, Clock
from sessions.test_lastseen_shards import GW, authorize_all, one_per_shard, started_with
from sessions_harness import (
    EUR,
    add_account,
    call,
    make_ledger,
    read_cdrs,
    seen_count,
    usage,
)

from chargingd.sessions.ccapi import UsageKind
from chargingd.sessions.shards import (
    LOCATORS,
    SHARDS_KEY,
    agree_shards,
    locator_key,
    shard_keys,
)
from chargingd.sessions.store import LIVE
from chargingd.sessions.upgrade import upgrade_and_log


async def test_a_reshard_cut_short_is_finished_by_the_next_start(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    before = await started_with(redis, ledger, tmp_path / "a", 32, clock)
    sids = one_per_shard(32)
    await authorize_all(before, sids)
    # The operator's change to 8: every daemon stopped, sess:shards deleted. The start
    # stores 8 (its first step) and stops before the entries moved (killed, or a Redis
    # timeout in the upgrade steps that follow).
    await redis.delete(SHARDS_KEY)
    assert await agree_shards(redis, 8) == (8, True)
    stranded = [k for k in shard_keys(GW, 32)[8:] if await redis.exists(k)]
    assert stranded  # calls left in shards 8..31
    await upgrade_and_log(redis, 8)  # the next start
    after = await started_with(redis, ledger, tmp_path / "b", 8, clock)
    assert after.store.shards == 8
    assert await redis.exists(*shard_keys(GW, 32)[8:]) == 0
    assert await seen_count(redis, GW) == len(sids)
    assert len(await after.list_sessions()) == len(sids)
    # Every call went silent: each is reaped, its hold released.
    clock.advance(after.cfg.interim_interval_s * after.cfg.stale_factor + 1)
    assert await after.reaper.run_once(limit=1000) == len(sids)
    for sid in sids:
        rec = await after.store.get("A", sid)
        assert rec is not None and rec.state != LIVE, sid
    assert (await ledger.get_account("A")).reserved_micros == 0


async def test_a_new_shard_count_moves_the_live_locators_too(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The locators of live calls are in shards of 8 x the same count (sess:lc:N): a
    new count moves them too. Else each is read where it is not (the next packet of
    every live call pays an identity lookup) and, without expiry, none ever goes."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    before = await started_with(redis, ledger, tmp_path / "a", 32, clock)
    sids = one_per_shard(32)
    await authorize_all(before, sids)
    await redis.delete(SHARDS_KEY)  # every daemon stopped, the count changed
    await upgrade_and_log(redis, 8)
    after = await started_with(redis, ledger, tmp_path / "b", 8, clock)
    for sid in sids:
        assert await redis.hget(locator_key(sid, 8), sid) == b"A", sid
        assert await after.store.locate(sid) == "A", sid
    assert await redis.exists(*(f"{LOCATORS}{n}" for n in range(8 * 8, 32 * 8))) == 0
    for sid in sids:  # every call ends: no locator is left behind
        await after.account(usage(call(sid, gateway=GW), UsageKind.STOP, 10, T0_MS + 10_000))
    assert [k async for k in redis.scan_iter(match=LOCATORS + "*")] == []
    assert {c.call_id for c in await read_cdrs(redis)} == set(sids)
