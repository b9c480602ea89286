"""Upgrade from the fraud keys before the one value (fraud/upgrade.py): live calls,
deny flags, block and countries of {a:ID}:fr:live / :fr:st / :fr:cc merged into
{a:ID}:fr:v at start, idempotent, two daemons at once."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import call, cdr, fraud_value, live_calls, make_fraud

from chargingd.fraud import Decision
from chargingd.fraud.upgrade import upgrade_fraud_keys

CONCURRENT = {"name": "concurrent", "kind": "concurrent", "max_calls": 2, "action": "refuse"}
SHORT = {"name": "short-calls", "kind": "short_calls", "max_calls": 3, "window_s": 600,
         "max_duration_s": 6, "action": "refuse"}  # fmt: skip


async def _old_keys(redis: aioredis.Redis, now: int) -> None:
    """What the previous version left in Redis (chargingd/fraud/keys.py at a0375d8)."""
    hour = now + 3_600_000
    live = {"sid-old-1": hour, "sid-old-2": hour, "sid-lapsed": now - 1}
    await redis.zadd("{a:acc1}:fr:live", live)
    await redis.hset("{a:acc1}:fr:st", mapping={"deny:short-calls": now + 600_000})
    await redis.hset("{a:acc2}:fr:st", mapping={"blocked_by": "risky", "blocked_ms": now - 5})
    await redis.hset("{a:acc2}:fr:cc", mapping={"DE": now - 1000})


async def test_upgrade_from_old_fraud_keys_keeps_live_calls_and_deny_flags(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An account with 2 live calls (old zset, entries lapse in 1 h) and a refusing deny
    flag (old hash, 10 min to go) when the daemon is upgraded: the start-up merge keeps
    both (the concurrent limit is 2: a 3rd call is refused once the deny flag has
    passed, and the denied account is refused at once)."""
    now = clock()
    await _old_keys(redis, now)
    fraud = await make_fraud(redis, clock, [CONCURRENT, SHORT])
    done = await upgrade_fraud_keys(redis, now, fraud.value_ttl_ms)
    assert (done.accounts, done.live, done.deny) == (2, 2, 1)
    assert not await redis.exists("{a:acc1}:fr:live", "{a:acc1}:fr:st", "{a:acc2}:fr:st")
    value = await fraud_value(redis)
    assert live_calls(value) == ["sid-old-1", "sid-old-2"]
    verdict = await fraud.check(call())
    assert not verdict.allowed, "denied for 10 more minutes (short-calls) and 2 calls live"
    assert verdict.rule is not None and verdict.rule.name == "short-calls"
    clock.advance(601)  # the deny flag has passed; the two old calls still live
    third = await fraud.check(call(sid="new-3"))
    assert third.decision is Decision.REFUSE and third.rule is not None
    assert third.rule.name == "concurrent"
    await fraud.cdr(cdr(call_id="sid-old-1"), "1-0")  # an old call's CDR ends it
    assert (await fraud.check(call(sid="new-4"))).allowed
    other = await fraud_value(redis, "acc2")
    assert other["b"] == "risky" and other["c"] == {"DE": now - 1000}
    assert await redis.pttl("{a:acc1}:fr:v") > 3_000_000  # lives as long as its calls


async def test_upgrade_is_idempotent_and_safe_with_two_daemons(
    redis: aioredis.Redis, clock: Clock
) -> None:
    now = clock()
    await _old_keys(redis, now)
    fraud = await make_fraud(redis, clock, [CONCURRENT, SHORT])
    assert (await fraud.check(call(sid="new-1"))).decision is Decision.ALLOW  # before
    first, second = await asyncio.gather(
        upgrade_fraud_keys(redis, now, fraud.value_ttl_ms),
        upgrade_fraud_keys(redis, now, fraud.value_ttl_ms),
    )
    assert first.live + second.live == 2 and first.deny + second.deny == 1
    again = await upgrade_fraud_keys(redis, now, fraud.value_ttl_ms)
    assert again.accounts == 0
    value = await fraud_value(redis)
    # merged into what the new version wrote meanwhile, nothing lost
    assert live_calls(value) == ["new-1", "sid-old-1", "sid-old-2"]
    assert value["d"] == {"short-calls": now + 600_000}
