"""A rolling upgrade to the lease_due reserve: a daemon of the version before it leases
without lowering the account's lease_due. Its lapsed hold (the daemon crashed) must
never refuse a call: a reserve about to refuse for want of money or of a call slot
sweeps the expired leases first, whatever lease_due says (review4)."""

from __future__ import annotations

import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import Ledger, Mode
from chargingd.ledger import keys as K


async def _old_daemons_hold(
    redis: aioredis.Redis, account: str, sid: str, micros: int, expiry_ms: int
) -> None:
    """What the reserve of the version before lease_due wrote: hold, lease, reserved."""
    await redis.hset(K.holds_key(account), sid, micros)
    await redis.zadd(K.leases_key(account), {sid: expiry_ms})
    await redis.hincrby(K.acct_key(account), "reserved", micros)


async def _ledger(redis: aioredis.Redis, clock: Clock, **account: int) -> Ledger:
    led = Ledger(redis, clock_ms=clock, batch_commands=False)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", who="o", **account)
    # a long lease of this version (a hold_all call): lease_due = now + 10 min
    assert (await led.reserve("a", "long", 1_000, lease_ms=600_000)).ok
    return led


async def test_a_lapsed_old_hold_does_not_take_a_call_slot(
    redis: aioredis.Redis, clock: Clock
) -> None:
    led = await _ledger(redis, clock, balance_micros=10_000, max_calls=2)
    await _old_daemons_hold(redis, "a", "old", 1_000, clock() + 30_000)
    clock.advance(31)  # the old daemon crashed; its lease is over
    grant = await led.reserve("a", "new", 1_000, lease_ms=30_000)
    assert grant.ok and grant.granted_micros == 1_000, grant
    assert sorted(await redis.zrange(K.leases_key("a"), 0, -1)) == [b"long", b"new"]
    acct = await redis.hgetall(K.acct_key("a"))
    assert int(acct[b"reserved"]) == 2_000  # the old hold went back
    assert int(acct[b"lease_due"]) <= clock() + 30_000  # the lowest lease left


async def test_a_lapsed_old_hold_does_not_take_the_money(
    redis: aioredis.Redis, clock: Clock
) -> None:
    led = await _ledger(redis, clock, balance_micros=10_000)
    await _old_daemons_hold(redis, "a", "old", 8_000, clock() + 30_000)
    clock.advance(31)
    grant = await led.reserve("a", "new", 5_000, lease_ms=30_000)
    assert grant.ok and grant.granted_micros == 5_000, grant


async def test_a_live_old_hold_still_counts(redis: aioredis.Redis, clock: Clock) -> None:
    """The sweep before a refusal takes only what is over: a hold whose lease runs
    keeps its money and its call slot."""
    led = await _ledger(redis, clock, balance_micros=10_000, max_calls=2)
    await _old_daemons_hold(redis, "a", "old", 8_000, clock() + 60_000)
    clock.advance(31)
    grant = await led.reserve("a", "new", 1_000, lease_ms=30_000)
    assert not grant.ok and grant.reason.value == "too_many_calls", grant
    assert int(await redis.hget(K.acct_key("a"), "reserved")) == 9_000
