"""A corrected CDR (revision > 0: a late Stop after the reaper closed the call
provisionally) replaces its call's earlier revision: the event rules count the call
once and its revision's change only (spend, answer ratio), whatever stream entry
carries it. Real Redis, real fraud engine."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import cdr, make_fraud

from chargingd.billing.cdr import CDR

EUR = 1_000_000


def corrected(first: CDR, *, charged_micros: int, answered: bool = True) -> CDR:
    """The next revision of ``first``, as sessions/late.py writes it."""
    return dataclasses.replace(
        first,
        revision=first.revision + 1,
        charged_micros=charged_micros,
        answer_ms=first.start_ms + 1000 if answered else 0,
        duration_s=60 if answered else 0,
        extra={
            "corrected": "late_stop",
            "provisional_status": first.status,
            "provisional_usage_s": str(first.duration_s),
            "provisional_micros": str(first.charged_micros),
        },
    )


async def test_a_corrected_revision_counts_only_its_change_of_spend(
    redis: aioredis.Redis, clock: Clock
) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "10", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    first = cdr(charged_micros=6 * EUR, call_id="late-1")
    assert not (await fraud.cdr(first, "1-0")).fired
    # Charged 8.00 in all, not 6 + 8: under the 10.00 limit.
    assert not (await fraud.cdr(corrected(first, charged_micros=8 * EUR), "2-0")).fired
    # The same revision again, in another stream entry: nothing counted.
    assert not (await fraud.cdr(corrected(first, charged_micros=8 * EUR), "3-0")).fired
    # The first revision again, in another entry: nothing either.
    assert not (await fraud.cdr(first, "4-0")).fired
    over = await fraud.cdr(cdr(charged_micros=3 * EUR), "5-0")  # 8 + 3 > 10
    assert [f.count for f in over.fired] == [11 * EUR]


async def test_a_corrected_revision_that_charges_less_lowers_the_spend(
    redis: aioredis.Redis, clock: Clock
) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "10", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    first = cdr(charged_micros=9 * EUR, call_id="late-2")
    await fraud.cdr(first, "1-0")
    await fraud.cdr(corrected(first, charged_micros=2 * EUR), "2-0")
    assert not (await fraud.cdr(cdr(charged_micros=7 * EUR), "3-0")).fired  # 2 + 7
    assert (await fraud.cdr(cdr(charged_micros=2 * EUR), "4-0")).fired  # 2 + 7 + 2


async def test_a_corrected_revision_is_not_a_second_seized_call_for_the_answer_ratio(
    redis: aioredis.Redis, clock: Clock
) -> None:
    rule = {"name": "asr", "kind": "asr", "min_asr_pct": 50, "min_calls": 2, "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    reaped = cdr(answered=False, call_id="late-3")  # reaped with no usage
    await fraud.cdr(reaped, "1-0")
    await fraud.cdr(cdr(), "2-0")  # 1 of 2 answered: 50 %, not below
    # Its late Stop says it was answered: 2 of 2 (not 2 of 3).
    assert not (await fraud.cdr(corrected(reaped, charged_micros=EUR), "3-0")).fired
    # Two unanswered calls: 2 of 4 = 50 %, not below (had the revision counted as a
    # third seized call, the second of them would make it 2 of 5 = 40 %).
    for entry in ("4-0", "5-0"):
        assert not (await fraud.cdr(cdr(answered=False), entry)).fired
    fired = (await fraud.cdr(cdr(answered=False), "6-0")).fired  # 2 of 5: 40 %
    assert [f.count for f in fired] == [40]
