"""Calls live across the change of the last-seen index (one zset per gateway).

Before it, the index was one ``sess:lastseen`` zset ("ACC\\0SID" -> ms last seen) and
a set ``sess:gw:GATEWAY`` per gateway; now it is ``sess:lastseen:GATEWAY`` and the
registry ``sess:gateways``. The calls are made by the current code and their index
entries then put back as the old code left them (same members, same scores); a new
daemon sees none of them until upgrade_lastseen (two at once) moves them. Then the
gateway's Accounting-On closes its calls, the reaper reaps the silent ones, a Stop
closes the last, and ``list_sessions`` (ctl) lists them until then.

The same for an account's live session ids, a set ``{a:ACC}:live`` before and a hash
``{a:ACC}:calls`` now (upgrade_live_sets): a top-up and a block's cut find the calls.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis
from fakes import T0_MS, Clock
from sessions_harness import (
    EUR,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    seen_count,
    seen_entries,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind
from chargingd.sessions.indexes import OLD_LASTSEEN
from chargingd.sessions.shards import shard_keys
from chargingd.sessions.store import GATEWAYS, live_key, member
from chargingd.sessions.upgrade import upgrade_lastseen, upgrade_live_sets

GW1, GW2 = "10.0.0.1", "10.0.0.2"
SILENT = ["silent0", "silent1"]  # on GW1: never heard of again, reaped
TALKING = ["talk0"]  # on GW1: an Interim later, then a Stop
RESTARTED = ["rst0", "rst1"]  # on GW2: its Accounting-On closes them
CLOSED = "closed0"  # on GW1: closed before the upgrade (no index entry)
GONE = "gone0"  # an old index entry whose record is gone: dropped
ANSWER_MS = T0_MS + 2_000


def info_of(session_id: str) -> CallInfo:
    gateway = GW2 if session_id in RESTARTED else GW1
    return call(session_id, user=f"u-{session_id}", gateway=gateway)


def acc(session_id: str) -> str:
    return f"a-{session_id}"


async def test_old_lastseen_index_moves_to_the_gateway_zsets(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    live = [*SILENT, *TALKING, *RESTARTED]
    for sid in [*live, CLOSED]:
        await add_account(ledger, acc(sid), balance_micros=10 * EUR, identities=(f"user:u-{sid}",))
    old = make_sessions(redis, ledger, clock, tmp_path / "old", RecordingCutter())
    clock.now_ms = T0_MS
    answers = await asyncio.gather(*(old.authorize(info_of(s)) for s in [*live, CLOSED]))
    assert all(isinstance(a, Authorized) for a in answers)
    clock.now_ms = ANSWER_MS
    for sid in [*live, CLOSED]:
        await old.account(usage(info_of(sid), UsageKind.START, 0, ANSWER_MS))
    await old.account(usage(info_of(CLOSED), UsageKind.STOP, 10, ANSWER_MS + 10_000))

    # The index as the old code kept it: one zset, one set per gateway.
    scores: dict[bytes, float] = {}
    for gateway in (GW1, GW2):
        entries = await seen_entries(redis, gateway)
        scores |= entries
        for raw, score in entries.items():
            await redis.zadd(OLD_LASTSEEN, {raw: score})
            await redis.sadd(f"sess:gw:{gateway}", raw)
        await redis.delete(*shard_keys(gateway))
    assert sorted(scores) == sorted(member(acc(s), s) for s in live)
    await redis.zadd(OLD_LASTSEEN, {member(acc(GONE), GONE): ANSWER_MS})
    await redis.sadd(f"sess:gw:{GW1}", member(acc(GONE), GONE))
    await redis.delete(GATEWAYS)

    # A new daemon does not see them before the upgrade.
    new = make_sessions(redis, ledger, clock, tmp_path / "new", RecordingCutter())
    assert await new.list_sessions() == []

    first, second = await asyncio.gather(upgrade_lastseen(redis), upgrade_lastseen(redis))
    assert first.moved + second.moved >= len(live)  # each entry moved by one or both
    assert first.dropped + second.dropped >= 1
    assert first.gateway_sets + second.gateway_sets == 2
    assert await redis.exists(OLD_LASTSEEN, f"sess:gw:{GW1}", f"sess:gw:{GW2}") == 0
    assert sorted(await redis.smembers(GATEWAYS)) == [GW1.encode(), GW2.encode()]
    for gateway, sids in ((GW1, [*SILENT, *TALKING]), (GW2, RESTARTED)):
        entries = await seen_entries(redis, gateway)
        assert entries == {member(acc(s), s): scores[member(acc(s), s)] for s in sids}
    again = await upgrade_lastseen(redis)
    assert (again.moved, again.dropped, again.gateway_sets) == (0, 0, 0)

    listed = await new.list_sessions()
    assert sorted(r.session_id for r in listed) == sorted(live)

    # The second gateway restarts: its calls (only) are closed.
    clock.now_ms = ANSWER_MS + 30_000
    await new.gateway_restarted(GW2, "gw1")
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert sorted(cdrs) == sorted([CLOSED, *RESTARTED])
    assert {cdrs[s].status for s in RESTARTED} == {"gateway_restart"}
    assert await seen_count(redis, GW2) == 0

    # One call talks on; the silent ones are reaped after 3 x 60 s.
    clock.now_ms = ANSWER_MS + 120_000
    await new.account(usage(info_of(TALKING[0]), UsageKind.INTERIM, 120, clock.now_ms))
    clock.now_ms = ANSWER_MS + 180_001
    assert await new.reaper.run_once() == len(SILENT)
    await new.account(usage(info_of(TALKING[0]), UsageKind.STOP, 200, ANSWER_MS + 200_000))
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert sorted(cdrs) == sorted([CLOSED, *live])
    assert {cdrs[s].status for s in SILENT} == {"stale"}
    assert cdrs[TALKING[0]].status == "normal" and cdrs[TALKING[0]].duration_s == 200
    assert await new.list_sessions() == []
    assert await seen_count(redis, GW1) == 0
    for sid in live:
        account = await ledger.get_account(acc(sid))
        assert account.reserved_micros == 0, sid


async def test_old_live_sets_move_to_the_account_hashes(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    await add_account(ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
    await add_account(ledger, "acc2", balance_micros=10 * EUR, identities=("user:bob",))
    cutter = RecordingCutter()
    sessions = make_sessions(redis, ledger, clock, tmp_path, cutter)
    calls = {"acc1": ["a1", "a2"], "acc2": ["b1"]}
    clock.now_ms = T0_MS
    for account_id, sids in calls.items():
        user = "alice" if account_id == "acc1" else "bob"
        for sid in sids:
            assert isinstance(await sessions.authorize(call(sid, user=user)), Authorized)
    for account_id, sids in calls.items():  # as the old code kept them: a set, an expiry
        key = live_key(account_id)
        assert sorted(await redis.hkeys(key)) == sorted(s.encode() for s in sids)
        old = "{a:" + account_id + "}:live"
        await redis.sadd(old, *sids)
        await redis.expire(old, 3600)
        await redis.delete(key)
    # read beside the hash before any move (old daemons still write the set)
    assert [r.session_id for r in await sessions.store.live_of_account("acc1")] == ["a1", "a2"]

    first, second = await asyncio.gather(upgrade_live_sets(redis), upgrade_live_sets(redis))
    assert first[0] + second[0] == 2 and first[1] + second[1] == 3
    assert await upgrade_live_sets(redis) == (0, 0)
    for account_id, sids in calls.items():
        assert await redis.exists("{a:" + account_id + "}:live") == 0
        assert sorted(await redis.hkeys(live_key(account_id))) == sorted(s.encode() for s in sids)
        assert await redis.pttl(live_key(account_id)) == -1  # closes empty it
    assert sorted(r.session_id for r in await sessions.store.live_of_account("acc1")) == [
        "a1",
        "a2",
    ]
    assert await sessions.cut_account("acc2") == 1
    assert [ref.session_id for ref, _ in cutter.disconnects] == ["b1"]


async def test_live_hash_empties_without_an_expiry(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    """No expiry is written per authorize: a close removes the call's id, and an id whose
    record expired unclosed is dropped by the next reader, so the hash goes with the
    account's calls."""
    await add_account(ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
    sessions = make_sessions(redis, ledger, clock, tmp_path, RecordingCutter())
    clock.now_ms = T0_MS
    for sid in ("x1", "x2"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    assert await redis.pttl(live_key("acc1")) == -1
    await sessions.account(usage(call("x1"), UsageKind.STOP, 0, T0_MS))
    assert await redis.hkeys(live_key("acc1")) == [b"x2"]
    await redis.delete("{a:acc1}:r:x2")  # expired without a close
    assert await sessions.store.live_of_account("acc1") == []
    assert await redis.exists(live_key("acc1")) == 0
