"""A rolling or blue/green upgrade: old daemons still serving index their new calls in
the old keys (``sess:lastseen``, ``sess:gw:GW``, ``{a:ACC}:live``) after the new
daemons' start-up move (review3 #5). The reaper moves ``sess:lastseen``'s entries in
each pass while it exists, Accounting-On does before it reads its gateway's calls, and
an account's calls are read from ``{a:ACC}:live`` too: the old daemon's silent call is
reaped, closed by its gateway's Accounting-On, cut by a block."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from fakes import Clock
from sessions_harness import (
    RecordingCutter,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.indexes import OLD_LASTSEEN, old_live_key
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import LIVE, lastseen_key, live_key, member
from chargingd.sessions.upgrade import upgrade_and_log

GW = "10.0.0.1"


async def old_daemons_call(redis: aioredis.Redis, sessions: Sessions, sid: str) -> None:
    """A call as an old daemon indexes it (what session_authorize.lua wrote at a0375d8):
    same record and hold, its entries in the old keys."""
    assert isinstance(await sessions.authorize(call(sid, gateway=GW)), Authorized)
    raw = member("A", sid)
    score = await redis.zscore(lastseen_key(GW, sid), raw)
    await redis.zrem(lastseen_key(GW, sid), raw)
    await redis.hdel(live_key("A"), sid)
    await redis.zadd(OLD_LASTSEEN, {raw: score})
    await redis.sadd(f"sess:gw:{GW}", raw)
    await redis.sadd(old_live_key("A"), sid)


async def test_call_indexed_by_an_old_daemon_after_the_upgrade_is_reaped(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Blue/green or rolling upgrade: the new daemons migrate the old index at their
    start (upgrade_and_log), old daemons still serve for a while and index their new
    calls in sess:lastseen, sess:gw:GW and {a:ACC}:live. No new daemon reads or drains
    those keys until one restarts (upgrade.py: "move at the next start"): so each reaper pass
    moves what is in sess:lastseen, and live_of_account reads {a:ACC}:live too."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await upgrade_and_log(redis)  # the new daemon's start
    await old_daemons_call(redis, sessions, "by-old")
    # the old daemons are stopped; the gateway went silent long ago
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor * 10)
    await sessions.reaper.run_once()
    rec = await sessions.store.get("A", "by-old")
    held = (await ledger.get_account("A")).reserved_micros
    assert rec is None or rec.state != LIVE, f"silent call never reaped, {held} micros held"
    assert held == 0
    assert await redis.exists(OLD_LASTSEEN) == 0
    assert [c.status for c in await read_cdrs(redis)] == [CdrStatus.STALE]


async def test_accounting_on_closes_a_call_an_old_daemon_indexed(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await upgrade_and_log(redis)
    await old_daemons_call(redis, sessions, "old-on")
    await sessions.gateway_restarted(GW, "gw1")
    rec = await sessions.store.get("A", "old-on")
    assert rec is not None and rec.state != LIVE
    assert [c.status for c in await read_cdrs(redis)] == [CdrStatus.GATEWAY_RESTART]
    assert await redis.exists(OLD_LASTSEEN) == 0
    assert (await ledger.get_account("A")).reserved_micros == 0


async def test_a_block_cuts_a_call_an_old_daemon_indexed(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    cutter = RecordingCutter()
    sessions = make_sessions(redis, ledger, clock, tmp_path, cutter)
    await upgrade_and_log(redis)
    assert isinstance(await sessions.authorize(call("new", gateway=GW)), Authorized)
    await old_daemons_call(redis, sessions, "old-cut")
    assert await sessions.cut_account("A") == 2
    assert sorted(ref.session_id for ref, _ in cutter.disconnects) == ["new", "old-cut"]
    # closed (by a new daemon): its id leaves the old set at the next read
    await sessions.store.mark_closed(await sessions.store.get("A", "old-cut"))  # type: ignore[arg-type]
    assert [r.session_id for r in await sessions.store.live_of_account("A")] == ["new"]
    assert await redis.smembers(old_live_key("A")) == set()
