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
)

from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.store import LIVE


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
