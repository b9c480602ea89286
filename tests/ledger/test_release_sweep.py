"""release.lua (a Stop) looks for the account's expired leases only once its lease_due
says one may be, as reserve.lua does (docs/performance.md round 4 and round 6b): a due
lease is still reclaimed by a release, a release before it sends no lease read, and a
capped release sweeps first before it would take less than the final cost (a lapsed
hold of an older version, which did not lower lease_due, must not shrink the room)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import Ledger, Mode, SessionClosed
from chargingd.ledger import keys as K

LEASE_MS = 60_000
NO_LEASE = 2**52


async def check_books(led: Ledger, account_id: str) -> None:
    """reserved == the holds, holds and leases the same members, lease_due never late,
    initial + topups - debits == balance (tests/ledger/test_edge_cases.py's check)."""
    acc = await led.get_account(account_id)
    assert acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros
    raw_holds: Any = await led.redis.hgetall(K.holds_key(account_id))
    holds = {k: int(v) for k, v in raw_holds.items()}
    raw_leases: Any = await led.redis.zrange(K.leases_key(account_id), 0, -1)
    assert acc.reserved_micros == sum(holds.values())
    assert set(holds) == set(raw_leases)
    assert all(v >= 0 for v in holds.values())
    due = await led.redis.hget(K.acct_key(account_id), "lease_due")
    lowest: Any = await led.redis.zrange(K.leases_key(account_id), 0, 0, withscores=True)
    if due is not None and lowest:
        assert int(due) <= lowest[0][1]


async def _ledger(redis: aioredis.Redis, clock: Clock, balance: int = 10_000) -> Ledger:
    led = Ledger(redis, clock_ms=clock, batch_commands=False)
    await led.load_scripts()
    await led.create_account(
        "a", mode=Mode.PREPAID, currency="EUR", balance_micros=balance, who="o"
    )
    return led


async def _reclaimed(led: Ledger) -> list[str]:
    return [e.details["session"] for e in await led.audit("a") if e.what == "reclaim"]


async def _lease_due(redis: aioredis.Redis) -> int:
    return int(await redis.hget(K.acct_key("a"), "lease_due"))


async def _lease_reads(redis: aioredis.Redis) -> int:
    """ZRANGE / ZRANGEBYSCORE calls since the last CONFIG RESETSTAT (scripts' included)."""
    stats: Any = await redis.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("zrange", "zrangebyscore")
    )


async def test_a_release_before_any_lease_is_due_reads_no_lease(
    redis: aioredis.Redis, clock: Clock
) -> None:
    led = await _ledger(redis, clock)
    t0 = clock()
    await led.reserve("a", "short", 100, lease_ms=1_000)
    await led.reserve("a", "long", 100, lease_ms=LEASE_MS)
    clock.advance(0.999)
    await redis.config_resetstat()
    res = await led.release("a", "long", 40)
    assert (res.debited_micros, res.balance_micros) == (40, 9_960)
    assert await _lease_reads(redis) == 0
    assert await _reclaimed(led) == []
    assert await _lease_due(redis) == t0 + 1_000  # unchanged: still "short"'s
    assert (await led.get_account("a")).reserved_micros == 100
    await check_books(led, "a")


async def test_a_release_reclaims_a_due_lease(redis: aioredis.Redis, clock: Clock) -> None:
    led = await _ledger(redis, clock)
    await led.reserve("a", "short", 100, lease_ms=1_000)
    await led.reserve("a", "long", 300, lease_ms=LEASE_MS)
    await led.reserve("a", "other", 200, lease_ms=5_000)
    clock.advance(1)
    res = await led.release("a", "long", 40)
    assert (res.debited_micros, res.balance_micros) == (40, 9_960)
    assert await _reclaimed(led) == ["short"]
    acc = await led.get_account("a")
    assert (acc.reserved_micros, acc.live_sessions) == (200, 1)
    # the lowest lease left after the sweep (errs only early), then the next one's
    assert await _lease_due(redis) <= clock() + 4_000
    clock.advance(4)
    await led.release("a", "nothing", None)
    assert await _reclaimed(led) == ["other", "short"]
    assert await _lease_due(redis) == NO_LEASE
    await check_books(led, "a")


async def test_a_capped_release_sweeps_a_lapsed_old_hold_first(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An older version's reserve leased without lowering lease_due; its daemon
    crashed. A capped final cost that would not fit beside its hold takes the sweep
    first, so the call is charged in full, as before this change."""
    led = await _ledger(redis, clock, balance=1_000)
    await led.reserve("a", "long", 100, lease_ms=LEASE_MS)  # lease_due = now + 60 s
    await redis.hset(K.holds_key("a"), "old", 800)
    await redis.zadd(K.leases_key("a"), {"old": clock() + 30_000})
    await redis.hincrby(K.acct_key("a"), "reserved", 800)
    clock.advance(31)
    res = await led.release("a", "long", 500, policy="cap")
    assert (res.debited_micros, res.balance_micros, res.overrun) == (500, 500, False)
    assert await _reclaimed(led) == ["old"]
    assert (await led.get_account("a")).reserved_micros == 0
    await check_books(led, "a")


async def test_a_capped_release_that_fits_leaves_a_lapsed_old_hold(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """No sweep when the cap does not bind: the old hold waits for the next reserve
    about to refuse or grant less, or the sweeper (docs/performance.md round 4)."""
    led = await _ledger(redis, clock, balance=1_000)
    await led.reserve("a", "long", 100, lease_ms=LEASE_MS)
    await redis.hset(K.holds_key("a"), "old", 200)
    await redis.zadd(K.leases_key("a"), {"old": clock() + 30_000})
    await redis.hincrby(K.acct_key("a"), "reserved", 200)
    clock.advance(31)
    res = await led.release("a", "long", 300, policy="cap")
    assert (res.debited_micros, res.balance_micros) == (300, 700)
    assert await _reclaimed(led) == []
    assert (await led.get_account("a")).reserved_micros == 200
    grant = await led.reserve("a", "next", 600, lease_ms=LEASE_MS)
    assert grant.ok and grant.granted_micros == 600, grant
    assert await _reclaimed(led) == ["old"]
    assert (await led.get_account("a")).reserved_micros == 600
    await check_books(led, "a")


async def test_concurrent_calls_and_a_release_leave_no_lease_over(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Reserves (leases of mixed lengths), commits and releases sent concurrently, each
    round closed by a release at the round's time instead of a reserve: no lease that
    is over is left after it (lease_due never says so late), and the books hold."""
    rng = random.Random(20261205_1440)
    led = Ledger(redis, clock_ms=clock, audit_max_entries=0, reclaim_per_reserve=1_000)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=50_000, who="o")

    async def op(sid: str) -> None:
        pick = rng.random()
        try:
            if pick < 0.6:
                lease = rng.choice([1, 300, 1_000, 2_500, 10_000])
                await led.reserve("a", sid, rng.randrange(1, 900), lease_ms=lease)
            elif pick < 0.8:
                await led.commit("a", sid, rng.randrange(0, 50))
            else:
                policy = rng.choice(["cap", "debt"])
                await led.release("a", sid, rng.randrange(0, 50), policy=policy)
        except SessionClosed:
            pass

    for round_ in range(120):
        clock.now_ms += rng.choice([0, 1, 299, 700, 1_500, 4_000])
        sids = [f"r{round_}-{i}" if rng.random() < 0.3 else f"s{i}" for i in range(4)]
        await asyncio.gather(*(op(sid) for sid in sids))
        await asyncio.gather(
            *(op(sid) for sid in sids[:2]),
            led.release("a", f"x{round_}", rng.choice([None, 0])),
        )
        over = await redis.zcount(K.leases_key("a"), "-inf", clock())
        assert over == 0, round_
        await check_books(led, "a")
