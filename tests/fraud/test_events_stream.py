"""FraudEvents on a real Redis stream: CDRs counted once and acknowledged, a bad entry
skipped, a dead consumer's entries claimed, the group dropped when fraud is off."""

from __future__ import annotations

import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import call, cdr, make_fraud

from chargingd.billing.cdr import CDR_STREAM
from chargingd.core.status import ComponentStats
from chargingd.fraud import FraudEvents
from chargingd.fraud.events import drop_group
from chargingd.ledger import Ledger

EUR = 1_000_000
SPEND = {"name": "spend", "kind": "spend", "max_amount": "5", "window_s": 3600,
         "action": "refuse"}  # fmt: skip
LIVE = {"name": "live", "kind": "concurrent", "max_calls": 1, "action": "refuse"}


async def test_cdrs_from_the_stream_feed_the_event_rules(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [SPEND, LIVE])
    stats = ComponentStats()
    events = FraudEvents(fraud, redis, group="fraud", stats=stats, consumer="c1", block_ms=10)
    await events.ensure_group()
    first = call(sid="s1")
    assert (await fraud.check(first)).allowed
    assert not (await fraud.check(call())).allowed  # one live call already
    await redis.xadd(CDR_STREAM, {"cdr": cdr(call_id="s1", charged_micros=3 * EUR).pack()})
    await redis.xadd(CDR_STREAM, {"cdr": b"not msgpack"})
    await redis.xadd(CDR_STREAM, {"cdr": cdr(charged_micros=3 * EUR).pack()})
    assert await events.drain() == 3
    assert (stats.get("counted"), stats.get("skipped")) == (2, 1)
    info = await redis.xinfo_groups(CDR_STREAM)
    assert info[0]["pending"] == 0  # every entry acknowledged
    refused = await fraud.check(call())  # s1 ended, but 6.00 spent: the cooldown refuses
    assert refused.rule is not None and refused.rule.name == "spend"


async def test_a_dead_consumers_entries_are_claimed_and_counted_once(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [SPEND])
    dead = FraudEvents(fraud, redis, group="fraud", stats=ComponentStats(), consumer="dead")
    await dead.ensure_group()
    for _ in range(2):
        await redis.xadd(CDR_STREAM, {"cdr": cdr(charged_micros=2 * EUR).pack()})
    # The dead consumer read them and died before acknowledging.
    await redis.xreadgroup("fraud", "dead", {CDR_STREAM: ">"}, count=10)
    alive = FraudEvents(fraud, redis, group="fraud", stats=ComponentStats(), consumer="alive")
    assert await alive.drain() == 0  # not idle long enough yet
    import chargingd.fraud.events as ev

    old = ev.CLAIM_IDLE_MS
    ev.CLAIM_IDLE_MS = 0
    try:
        alive._last_claim_s = 0.0
        assert await alive.drain() == 2
    finally:
        ev.CLAIM_IDLE_MS = old
    # Counted once even when the dead one's own re-read comes back.
    dead._own_pending = True
    assert await dead.drain() == 0  # XAUTOCLAIM moved them: nothing pending for it
    await redis.xadd(CDR_STREAM, {"cdr": cdr(charged_micros=2 * EUR).pack()})
    verdict_before = await fraud.check(call())
    assert verdict_before.allowed  # 4.00 spent: under 5
    assert await alive.drain() == 1
    assert not (await fraud.check(call())).allowed  # 6.00


async def test_drop_group_lets_the_exporter_trim(redis: aioredis.Redis, clock: Clock) -> None:
    fraud = await make_fraud(redis, clock, [SPEND])
    events = FraudEvents(fraud, redis, group="fraud", stats=ComponentStats())
    await events.ensure_group()
    assert await drop_group(redis, "fraud")
    assert await redis.xinfo_groups(CDR_STREAM) == []
    assert not await drop_group(redis, "fraud")
    await redis.delete(CDR_STREAM)
    assert not await drop_group(redis, "fraud")  # no stream at all


async def test_a_batch_of_cdrs_goes_in_a_few_pipelines(redis: aioredis.Redis, clock: Clock) -> None:
    """The CDRs of a read are sent IN_FLIGHT at once (one pipeline each), not one round
    trip each (a daemon under load fell behind its CDR stream); each counted once."""
    ledger = Ledger(redis, clock_ms=clock, batch_commands=True)
    await ledger.load_scripts()
    fraud = await make_fraud(redis, clock, [SPEND], ledger=ledger)
    events = FraudEvents(fraud, redis, group="fraud", stats=ComponentStats(), block_ms=10)
    await events.ensure_group()
    for _ in range(64):
        await redis.xadd(CDR_STREAM, {"cdr": cdr(charged_micros=EUR // 10).pack()})
    assert ledger.batcher is not None
    before = ledger.batcher.batches
    assert await events.drain() == 64
    assert ledger.batcher.batches - before <= 4  # one at a time: 64
    refused = await fraud.check(call())  # 6.40 spent: the cooldown refuses
    assert refused.rule is not None and refused.rule.name == "spend"
    events._own_pending = True  # read again: nothing counted twice
    assert await events.drain() == 0
