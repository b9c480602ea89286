"""The live calls' locators as fields of small hashes ``sess:lc:N`` (sessions/shards.py).

A field has no expiry (Redis 7.0): nothing may be left behind by a close, an
authorize undone, a record that expired unclosed (the reaper, Accounting-On, a
packet meeting it); a close never drops the locator of another account's call of the
same id (ids collide across gateways); a closed call keeps its locator as a string as
long as its record (a late Stop finds it); an older daemon's string locator of a live
call is still read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fakes import T0_MS
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.shards import (
    LOCATOR_FACTOR,
    LOCATORS,
    OLD_LOCATORS,
    locator_key,
    shard_keys,
)
from chargingd.sessions.store import LIVE, loc_key, member


async def locators(redis: aioredis.Redis) -> dict[bytes, bytes]:
    """Every live locator field (this version's and older daemons'): session id ->
    account."""
    out: dict[bytes, bytes] = {}
    for prefix in (LOCATORS, OLD_LOCATORS):
        async for key in redis.scan_iter(match=prefix + "*"):
            out |= await redis.hgetall(key)
    return out


async def authorized(sessions: Sessions, sid: str, **kw: str) -> None:
    assert isinstance(await sessions.authorize(call(sid, **kw)), Authorized), sid


@pytest.mark.parametrize("path", ["fused", "stepwise"])
async def test_no_locator_is_left_behind(redis: aioredis.Redis, tmp_path: Path, path: str) -> None:
    """Closed by a Stop, by the reaper, by an Accounting-On, undone, or expired
    unclosed (met by the reaper, an Accounting-On, a packet): every field goes."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", balance_micros=1000 * EUR)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    if path == "stepwise":  # the authorize and close steps of the Redis Cluster path
        sessions.step_by_step()
    sids = [f"s{i}" for i in range(12)]
    for sid in sids[:8]:
        await authorized(sessions, sid)
    for sid in sids[8:]:
        await authorized(sessions, sid, gateway="10.0.0.2", client="gw2")
    assert await locators(redis) == {s.encode(): b"A" for s in sids}
    for key in {locator_key(s) for s in sids}:  # no expiry on the hashes
        assert await redis.ttl(key) == -1
    # s0: a Stop; s1: expired unclosed, then a packet meets it; s2, s3: expired
    # unclosed, met by the reaper; s4..s7 silent, reaped; s8: expired unclosed, s9..s11:
    # closed by their gateway's Accounting-On; then an authorize undone.
    await sessions.account(usage(call("s0"), UsageKind.STOP, 10, T0_MS + 10_000))
    for sid in ("s1", "s2", "s3", "s8"):
        await redis.delete(f"{{a:A}}:r:{sid}")  # session_ttl_s ran out
    sessions.store._located.clear()  # another daemon's packet
    sessions.store._records.clear()
    await sessions.account(usage(call("s1"), UsageKind.INTERIM, 60, T0_MS + 60_000))
    await sessions.gateway_restarted("10.0.0.2", "gw2")
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 120)
    await sessions.reaper.run_once(limit=1000)
    rec = await sessions.store.get("A", "s4")
    assert rec is not None and rec.state != LIVE
    assert await locators(redis) == {}
    assert [k async for k in redis.scan_iter(match=LOCATORS + "*")] == []
    # Closed calls keep their locator as a string for as long as their record.
    for sid in ("s0", "s4", "s9"):
        assert await redis.get(loc_key(sid)) == b"A"
        assert 0 < await redis.ttl(loc_key(sid)) <= sessions.cfg.closed_ttl_s
    # An authorize undone: its record, its locator and its last-seen entry go.
    await authorized(sessions, "undone")
    rec = await sessions.store.get("A", "undone")
    assert rec is not None
    await sessions.store.discard(rec)
    assert await locators(redis) == {}


@pytest.mark.parametrize("path", ["fused", "stepwise"])
async def test_a_close_leaves_another_accounts_locator_of_the_same_id(
    redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    """Call X of A (gw1) and then call X of B (gw2): X's locator names B. A's close
    leaves it (the field is dropped only if it names A): B's Stop, from a daemon that
    does not remember the call, is B's; A's late Stop is A's (Class)."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    await add_account(ledger, "B", identities=("user:bob",))
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    if path == "stepwise":  # the authorize and close steps of the Redis Cluster path
        sessions.step_by_step()
    a_call = call("X", user="alice", client="gw1", gateway="10.0.0.1")
    b_call = call("X", user="bob", client="gw2", gateway="10.0.0.2")
    assert isinstance(await sessions.authorize(a_call), Authorized)
    clock.advance(5)
    assert isinstance(await sessions.authorize(b_call), Authorized)
    assert await redis.hget(locator_key("X"), "X") == b"B"
    a_rec = await sessions.store.get("A", "X")
    assert a_rec is not None
    await sessions.close_session(a_rec, usage_s=0, end_ms=clock(), status="killed")
    assert await redis.hget(locator_key("X"), "X") == b"B"  # B's call is still found
    sessions.store._located.clear()
    sessions.store._records.clear()
    assert await sessions.store.locate("X") == "B"
    await sessions.account(usage(b_call, UsageKind.STOP, 20, clock() + 20_000))
    cdrs = {(c.account_id, c.call_id): c for c in await read_cdrs(redis)}
    assert sorted(cdrs) == [("A", "X"), ("B", "X")]
    assert cdrs[("B", "X")].duration_s == 20 and cdrs[("A", "X")].duration_s == 0
    assert await redis.hexists(locator_key("X"), "X") == 0
    assert await redis.get(loc_key("X")) == b"B"
    late = usage(a_call.replace(account_hint="A"), UsageKind.STOP, 0, clock())
    await sessions.account(late)
    b_rec = await sessions.store.get("B", "X")
    assert b_rec is not None and b_rec.last_usage_s == 20


async def test_an_older_daemons_string_locator_is_read(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Rolling upgrade: a call an older daemon authorized has its locator as a string
    sess:loc:SID; a new daemon's packet finds it there."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A")
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await authorized(sessions, "old")
    await redis.hdel(locator_key("old"), "old")  # as the older daemon wrote it
    await redis.set(loc_key("old"), "A", ex=3600)
    sessions.store._located.clear()
    sessions.store._records.clear()
    assert await sessions.store.locate("old") == "A"
    await sessions.account(usage(call("old"), UsageKind.STOP, 30, T0_MS + 30_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.account_id, cdr.duration_s, cdr.status) == ("A", 30, "normal")


async def test_locator_shards_stay_small_listpacks_at_10000_live_calls(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A")
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await authorized(sessions, "real0")
    pipe = redis.pipeline(transaction=False)
    for i in range(1, 10_000):
        sid = f"{i:08x}-{i * 7919 % 100_003}@10.0.0.1"
        pipe.hset(sessions.store.locator(sid), sid, f"acc{i % 1000}")
    await pipe.execute()
    keys = [locator_key(f"x{n}") for n in range(30_000)]  # every shard's name
    names = sorted(set(keys))
    assert len(names) == 128 * LOCATOR_FACTOR  # 8 x the last-seen shards
    sizes = [await redis.hlen(k) for k in names]
    # ~10 a shard: a write or read searches a few dozen fields at most
    assert sum(sizes) == 10_000 and max(sizes) < 40, max(sizes)
    for key in names:
        assert await redis.object("encoding", key) in (b"listpack", b"ziplist"), key
    assert shard_keys("10.0.0.1")  # the last-seen shards: the same count
    assert await redis.zscore(sessions.store.lastseen("10.0.0.1", "real0"), member("A", "real0"))
