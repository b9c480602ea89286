"""The reaper over the per-gateway last-seen zsets (review3 #9, #10)."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    seen_count,
)

from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.indexes import GONE_GRACE_S
from chargingd.sessions.store import LIVE, live_key


async def test_reaper_takes_the_oldest_due_calls_of_all_gateways(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """One last-seen zset per gateway (review3 #9): a pass takes the `limit` oldest due
    entries of all of them, as the single sess:lastseen did, not gateway by gateway in
    name order. While gateway 10.0.0.1 has `limit` stale calls per pass (a big SBC that
    lost its accounting), a silent call of 10.0.0.9 that went stale earlier is reaped."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",), balance_micros=1000 * EUR)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    old = call("old", gateway="10.0.0.9", client="gw9")
    assert isinstance(await sessions.authorize(old), Authorized)
    clock.advance(30)
    for i in range(5):
        assert isinstance(await sessions.authorize(call(f"c{i}")), Authorized)
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    reaped = await sessions.reaper.run_once(limit=5)
    assert reaped == 5
    rec = await sessions.store.get("A", "old")
    assert rec is None or rec.state != LIVE, "the oldest stale call was passed over"
    newest = await sessions.store.get("A", "c4")
    assert newest is not None and newest.state == LIVE  # the 6th oldest: next pass
    assert await sessions.reaper.run_once(limit=5) == 1


async def test_reaper_drops_the_ids_of_records_that_expired_unclosed(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """{a:ACC}:calls has no expiry (review3 #10). A record that expires unclosed (the
    reaper's pass limit, a close that fails, session_ttl) would leave its id for ever in
    an account nobody tops up or blocks: the reaper, meeting its last-seen entry, drops
    both."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    assert isinstance(await sessions.authorize(call("gone")), Authorized)
    await redis.delete("{a:A}:r:gone")  # the record expired (session_ttl_s) unclosed
    # the reaper meets the entry, finds no record, drops it from the last-seen zset
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    await sessions.reaper.run_once()
    assert await seen_count(redis, "10.0.0.1") == 0
    assert await redis.hlen(live_key("A")) == 0, "id kept in {a:A}:calls with no expiry"
    assert await redis.ttl(live_key("A")) != -1


async def test_accounting_on_drops_the_ids_of_records_gone(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    for sid in ("gone1", "live1"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    await redis.delete("{a:A}:r:gone1")  # expired unclosed
    clock.advance(GONE_GRACE_S)  # (a newer entry may be a create's: test_gone_grace.py)
    await sessions.gateway_restarted("10.0.0.2", "gw2")  # another gateway: nothing
    assert sorted(await redis.hkeys(live_key("A"))) == [b"gone1", b"live1"]
    await sessions.gateway_restarted("10.0.0.1", "gw1")
    assert await redis.exists(live_key("A")) == 0  # gone1 dropped, live1 closed
    assert await seen_count(redis, "10.0.0.1") == 0
