"""The live locators in 8 x the last-seen shard count (``sess:lc:N``, sessions/shards.py)
beside the older daemons' ``sess:locs:N`` (one per last-seen shard), issue #15.

A new daemon writes only the new field; it reads the new field, else an older
daemon's, else the closed call's string; every drop (a close, the reaper, a packet
meeting a record gone, an authorize undone) takes both, each only if it names the
call's account. An older daemon closing a new daemon's call leaves the new field: the
next start drops it (reshard) while a live call's stays.
"""

from __future__ import annotations

import zlib
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
    seen_count,
    usage,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.shards import (
    LOCATOR_FACTOR,
    LOCATORS,
    OLD_LOCATORS,
    locator_key,
    old_locator_key,
)
from chargingd.sessions.store import LIVE, live_key, loc_key
from chargingd.sessions.upgrade import upgrade_and_log

PATHS = ["fused", "stepwise"]  # single Redis; the Redis Cluster path's steps


async def fields(redis: aioredis.Redis, prefix: str) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    async for key in redis.scan_iter(match=prefix + "*"):
        out |= await redis.hgetall(key)
    return out


async def started(redis: aioredis.Redis, tmp_path: Path, path: str) -> tuple[Sessions, Clock]:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",), balance_micros=1000 * EUR)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    if path == "stepwise":
        sessions.step_by_step()
    return sessions, clock


def forget(sessions: Sessions) -> None:
    """Another daemon (or worker) than the one that authorized: nothing remembered."""
    sessions.store._located.clear()
    sessions.store._records.clear()


async def as_older_daemon_wrote(redis: aioredis.Redis, sid: str, account: str = "A") -> None:
    """The call's locator as a daemon before sess:lc:N writes it: sess:locs:N, N of
    the last-seen count."""
    await redis.hdel(locator_key(sid), sid)
    await redis.hset(old_locator_key(sid), sid, account)


def test_the_new_shards_are_8_times_the_last_seen_ones() -> None:
    crc = zlib.crc32(b"call-1")
    assert locator_key("call-1") == f"{LOCATORS}{crc % (128 * LOCATOR_FACTOR)}"
    assert locator_key("call-1", 32) == f"{LOCATORS}{crc % 256}"
    assert old_locator_key("call-1") == f"{OLD_LOCATORS}{crc % 128}"
    # no name of one kind is a name of the other, nor a closed call's string
    assert not LOCATORS.startswith(OLD_LOCATORS) and not OLD_LOCATORS.startswith(LOCATORS)
    assert not loc_key("5").startswith((LOCATORS, OLD_LOCATORS))


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_is_located_without_class_from_another_daemon(
    redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    """No Class (the client does not echo it): each packet reaching a daemon that did
    not authorize the call finds its record by the new field; one CDR, no field left."""
    sessions, _ = await started(redis, tmp_path, path)
    info = call("c1")
    assert isinstance(await sessions.authorize(info), Authorized)
    assert await fields(redis, LOCATORS) == {b"c1": b"A"}
    assert await redis.hget(locator_key("c1"), "c1") == b"A"
    assert await fields(redis, OLD_LOCATORS) == {}
    for kind, usage_s in ((UsageKind.START, 0), (UsageKind.INTERIM, 60), (UsageKind.STOP, 95)):
        forget(sessions)
        assert await sessions.store.locate("c1") == "A"
        forget(sessions)
        await sessions.account(usage(info, kind, usage_s, T0_MS + usage_s * 1000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.account_id, cdr.duration_s, cdr.status) == ("A", 95, CdrStatus.NORMAL)
    assert await fields(redis, LOCATORS) == {}
    assert await redis.get(loc_key("c1")) == b"A"  # the closed call's string


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_never_started_is_reaped_and_its_locator_dropped(
    redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    """Authorized, then nothing (the call was never set up): the reaper closes it (a
    stale CDR of no usage), releases its hold, and no index keeps it."""
    sessions, clock = await started(redis, tmp_path, path)
    assert isinstance(await sessions.authorize(call("ringing")), Authorized)
    assert (await sessions.ledger.get_account("A")).reserved_micros > 0
    clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
    assert await sessions.reaper.run_once() == 1
    rec = await sessions.store.get("A", "ringing")
    assert rec is not None and rec.state != LIVE
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("ringing", CdrStatus.STALE, 0)
    assert (await sessions.ledger.get_account("A")).reserved_micros == 0
    assert await fields(redis, LOCATORS) == {} and await fields(redis, OLD_LOCATORS) == {}
    assert await seen_count(redis, "10.0.0.1") == 0
    assert await redis.exists(live_key("A")) == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("end", ["stop", "reaper", "gone"])
async def test_an_older_daemons_locator_is_read_and_dropped(
    redis: aioredis.Redis, tmp_path: Path, path: str, end: str
) -> None:
    """Rolling upgrade: a call whose locator an older daemon wrote (sess:locs:N) is
    found by a new daemon's packets without Class, and its field goes with the call:
    a Stop, the reaper (never started), a packet meeting its record gone."""
    sessions, clock = await started(redis, tmp_path, path)
    info = call("old1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await as_older_daemon_wrote(redis, "old1")
    forget(sessions)
    assert await sessions.store.locate("old1") == "A"
    if end == "stop":
        forget(sessions)
        await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
        forget(sessions)
        await sessions.account(usage(info, UsageKind.STOP, 30, T0_MS + 30_000))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.duration_s, cdr.status) == ("A", 30, CdrStatus.NORMAL)
    elif end == "reaper":
        clock.advance(sessions.cfg.interim_interval_s * sessions.cfg.stale_factor + 1)
        assert await sessions.reaper.run_once() == 1
        (cdr,) = await read_cdrs(redis)
        assert cdr.status == CdrStatus.STALE
    else:
        await redis.delete("{a:A}:r:old1")  # expired unclosed
        forget(sessions)
        await sessions.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    assert await fields(redis, OLD_LOCATORS) == {}
    if end != "gone":  # (the packet was adopted: its new call has a new locator)
        assert await fields(redis, LOCATORS) == {}


@pytest.mark.parametrize("path", PATHS)
async def test_an_older_daemons_field_of_another_account_is_kept(
    redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    """Ids collide across gateways: an older daemon's field for the same id naming
    another account's live call stays when this call closes."""
    sessions, clock = await started(redis, tmp_path, path)
    assert isinstance(await sessions.authorize(call("X")), Authorized)
    await redis.hset(old_locator_key("X"), "X", "B")  # B's call X, by an older daemon
    rec = await sessions.store.get("A", "X")
    assert rec is not None
    await sessions.close_session(rec, usage_s=0, end_ms=clock(), status="killed")
    assert await fields(redis, LOCATORS) == {}
    assert await fields(redis, OLD_LOCATORS) == {b"X": b"B"}


async def test_a_new_field_an_older_daemon_left_is_dropped_at_the_next_start(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """An older daemon closing a new daemon's call drops only sess:locs:N: the new
    field stays (no expiry) until a new daemon's start, which drops the fields of
    records closed or gone and keeps the live ones' (and an older daemon's fields)."""
    sessions, clock = await started(redis, tmp_path, "fused")
    for sid in ("live", "closed", "gone"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    rec = await sessions.store.get("A", "closed")
    assert rec is not None
    await sessions.close_session(rec, usage_s=0, end_ms=clock(), status="killed")
    await redis.hset(locator_key("closed"), "closed", "A")  # as the older daemon left it
    await redis.delete("{a:A}:r:gone")  # expired unclosed, its entry not met yet
    await redis.hset(old_locator_key("older"), "older", "A")  # an older daemon's call
    await upgrade_and_log(redis, grace_s=0.1)  # "gone": still gone 0.1 s later
    assert await fields(redis, LOCATORS) == {b"live": b"A"}
    assert await fields(redis, OLD_LOCATORS) == {b"older": b"A"}
    forget(sessions)
    assert await sessions.store.locate("live") == "A"
    assert await sessions.store.locate("closed") == "A"  # the closed call's string
