"""The plain authorize takes a new call's first full grant by the ledger's straight-line
reserve (ledger/lua/reserve_first.lua) and every other case by the general
account_check + reserve. The same authorizes (new calls granted in full, a
retransmission, low funds: partial and refused, a refusal retransmitted, a call limit,
a blocked account, a postpaid account on its credit limit, a lease sweep due, a
session already closed, a reserve run past its deadline) through both, on a real Redis
flushed between the two runs, leave every key with the same content and TTL (streams:
the same entries, their ids aside) and get the same answers: by FCALL (Redis 7) and by
EVALSHA (the fixture's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sessions_harness import EUR, Clock, add_account, call, make_sessions, usage

from chargingd.ledger import Ledger, Mode, Status
from chargingd.sessions.ccapi import UsageKind

PEOPLE = ("alice", "bob", "carol", "dave", "erin")


async def _run(redis: aioredis.Redis, tmp_path: Path, *, first: bool, audit: bool) -> Any:
    await redis.flushall()
    clock = Clock()
    ledger = Ledger(redis, clock_ms=clock, audit_holds=audit, request_timeout_s=5.0)
    await ledger.load_scripts()
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    assert sessions.fused is not None
    if not first:
        sessions.fused.general_reserve()
    await sessions.store.load_scripts()
    await add_account(ledger, "acc1", balance_micros=10 * EUR)
    await add_account(ledger, "acc2", balance_micros=EUR // 20, identities=("user:bob",))
    await ledger.create_account(
        "acc3",
        mode=Mode.POSTPAID,
        currency="EUR",
        credit_limit_micros=EUR,
        tariff="retail",
        identities=("user:carol",),
        who="t",
    )
    await add_account(ledger, "acc4", max_calls=1, identities=("user:dave",))
    await add_account(ledger, "acc5", identities=("user:erin",))
    await redis.config_resetstat()
    answers: list[Any] = []

    async def authorize(sid: str, user: str = "alice") -> None:
        answers.append(await sessions.authorize(call(sid, user=user)))
        clock.advance(1)

    for n in range(3):
        await authorize(f"a{n}")  # new calls, full grants
    await authorize("a0")  # a retransmission: answered from the record
    for sid in ("b0", "b1", "b0"):
        await authorize(sid, "bob")  # low funds: partial, then none, retransmitted
    for n in range(4):
        await authorize(f"c{n}", "carol")  # postpaid: on the credit limit, past it
    for n in range(2):
        await authorize(f"d{n}", "dave")  # one call at a time
    await ledger.set_status("acc5", Status.BLOCKED, who="t", why="fraud")
    await authorize("e0", "erin")
    ledger.redis_offset_ms -= 60_000  # run past its deadline (Redis's TIME): refused, late
    await authorize("a9")
    ledger.redis_offset_ms += 60_000
    info = call("a1")
    await sessions.account(usage(info, UsageKind.START, 0, clock()))
    await sessions.account(usage(info, UsageKind.STOP, 20, clock.advance(20)))
    await authorize("a1")  # released: the ledger session is closed
    clock.advance(8 * 86400)  # every lease of acc1 is over: the next reserve sweeps
    for n in range(3, 6):
        await authorize(f"a{n}")
    stats: Any = await redis.info("commandstats")
    exists = int(stats.get("cmdstat_exists", {}).get("calls", 0))
    return [repr(a) for a in answers], await _keys(redis), exists


async def _keys(redis: aioredis.Redis) -> dict[str, Any]:
    """Every key: its type, its content (streams: the entries without their ids) and its
    TTL in seconds (-1 none; two runs a moment apart: compared within 2 s)."""
    out: dict[str, Any] = {}
    for raw in sorted(await redis.keys("*")):
        key = raw.decode()
        kind = (await redis.type(raw)).decode()
        value: Any
        if kind == "string":
            value = await redis.get(raw)
        elif kind == "hash":
            value = await redis.hgetall(raw)
        elif kind == "zset":
            value = await redis.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await redis.smembers(raw))
        elif kind == "list":
            value = await redis.lrange(raw, 0, -1)
        elif kind == "stream":
            value = [fields for _, fields in await redis.xrange(raw)]
        else:
            raise AssertionError(f"{key}: {kind}")
        out[key] = (kind, value, await redis.pttl(raw))
    return out


def _same(straight: dict[str, Any], general: dict[str, Any]) -> None:
    assert sorted(straight) == sorted(general)
    for key, (kind, value, ttl) in straight.items():
        other = general[key]
        assert (kind, value) == other[:2], key
        if ttl < 0 or other[2] < 0:
            assert ttl == other[2], key
        else:
            assert abs(ttl - other[2]) <= 2000, (key, ttl, other[2])


async def _compare(redis: aioredis.Redis, tmp_path: Path, audit: bool) -> None:
    fast = await _run(redis, tmp_path / "straight", first=True, audit=audit)
    slow = await _run(redis, tmp_path / "general", first=False, audit=audit)
    assert fast[0] == slow[0]
    assert any("charging unavailable" in a for a in fast[0])  # the late one
    assert sum("Authorized" in a for a in fast[0]) >= 8
    assert any("Refused" in a for a in fast[0])
    _same(fast[1], slow[1])
    # the account id and the index member are derived from KEYS[7] (live_key) in the script
    seen = {m for k, (_, v, _) in fast[1].items() if k.startswith("sess:seen:") for m, _ in v}
    assert {b"acc1\0a2", b"acc2\0b0", b"acc3\0c0", b"acc4\0d0"} <= seen, seen
    located = {
        k: v
        for key, (_, h, _) in fast[1].items()
        if key.startswith("sess:lc:")
        for k, v in h.items()
    }
    assert located.get(b"a2") == b"acc1" and located.get(b"c0") == b"acc3", located
    if audit:  # the holds' audit entries are there, the same
        assert any(b"reserve" in str(v).encode() for _, v, _ in fast[1].values())
    # the straight path ran (its EXISTS of the ledger session; the closes' elsewhere)
    assert fast[2] - slow[2] >= 8, (fast[2], slow[2], fast[0])


@pytest.mark.parametrize("audit", [False, True])
async def test_both_paths_write_the_same_by_fcall(
    redis7: aioredis.Redis, tmp_path: Path, audit: bool
) -> None:
    await _compare(redis7, tmp_path, audit)


async def test_both_paths_write_the_same_by_evalsha(redis: aioredis.Redis, tmp_path: Path) -> None:
    await _compare(redis, tmp_path, True)
