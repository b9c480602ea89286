"""The cap policy of commit.lua and release.lua, and correct.lua, on a real Redis, one
test per branch: a call within what chargingd allowed never takes an account below
its floor (cap); an overrun's debt is taken in full (debt); a released session's
charge is moved once to a new target (a late Stop after a provisional close)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import (
    CommitResult,
    InvalidRequest,
    Ledger,
    Mode,
    StaleCharge,
    UnknownAccount,
    UsageRequest,
)

LEASE_MS = 60_000


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def ledger(redis: aioredis.Redis, clock: Clock, request: pytest.FixtureRequest) -> Ledger:
    led = Ledger(redis, clock_ms=clock, batch_commands=request.param, session_ttl_s=3600)
    await led.load_scripts()
    await led.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=1_000, who="o"
    )
    await led.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=500, who="o"
    )
    return led


async def test_capped_commit_takes_the_hold_and_what_is_available_no_more(
    ledger: Ledger,
) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.reserve("pre", "other", 500, lease_ms=LEASE_MS)  # someone else's money
    # 400 held + 100 available: a cumulative 700 debits 500, the rest stays owed.
    assert await ledger.commit("pre", "s1", 700, policy="cap") == CommitResult(
        500, 500, 500, False, False
    )
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.reserved_micros) == (500, 500)
    # Nothing more available: debits nothing, changes nothing.
    assert await ledger.commit("pre", "s1", 800, policy="cap") == CommitResult(
        0, 500, 500, False, False
    )
    # Money freed: the next commit takes what is still owed.
    await ledger.release("pre", "other")
    assert (await ledger.commit("pre", "s1", 800, policy="cap")).total_debited_micros == 800


async def test_capped_release_never_takes_prepaid_below_zero(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 1_000, lease_ms=LEASE_MS)
    result = await ledger.release("pre", "s1", 1_025, policy="cap")
    assert (result.total_debited_micros, result.balance_micros, result.overrun) == (1_000, 0, False)


async def test_capped_release_of_postpaid_stops_at_the_credit_limit(ledger: Ledger) -> None:
    await ledger.reserve("post", "s1", 100, lease_ms=LEASE_MS)
    result = await ledger.release("post", "s1", 900, policy="cap")
    assert (result.total_debited_micros, result.balance_micros) == (500, -500)


async def test_debt_release_takes_it_all_and_says_overrun(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 1_000, lease_ms=LEASE_MS)
    result = await ledger.release("pre", "s1", 1_300, policy="debt")
    assert (result.total_debited_micros, result.balance_micros, result.overrun) == (
        1_300,
        -300,
        True,
    )


async def test_unknown_policy_is_refused(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest, match="cap or debt"):
        await ledger.release("pre", "s1", 10, policy="maybe")


async def test_correct_debits_up_to_a_new_target_once(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 200)  # a provisional close at 200
    done = await ledger.correct("pre", "s1", 450, policy="cap", why="late stop after stale")
    assert done == CommitResult(250, 450, 550, False, False)
    again = await ledger.correct("pre", "s1", 450, policy="cap", why="late stop after stale")
    assert again.duplicate and again.total_debited_micros == 450
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.debits_micros, acc.reserved_micros) == (550, 450, 0)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.why) == ("correct", "late stop after stale")
    assert (entry.details["amount"], entry.details["cumulative"]) == ("250", "450")


async def test_correct_refunds_down_to_a_lower_target(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 300)
    done = await ledger.correct("pre", "s1", 120, policy="cap", why="late stop after stale")
    assert (done.debited_micros, done.total_debited_micros, done.balance_micros) == (
        -180,
        120,
        880,
    )
    acc = await ledger.get_account("pre")
    assert (acc.debits_micros, acc.topups_micros) == (120, 0)  # net usage, not a top-up


async def test_correct_caps_or_takes_debt_by_policy(ledger: Ledger) -> None:
    for sid in ("a", "b"):
        await ledger.reserve("pre", sid, 100, lease_ms=LEASE_MS)
        await ledger.release("pre", sid, 100)
    capped = await ledger.correct("pre", "a", 2_000, policy="cap", why="late stop")
    assert (capped.total_debited_micros, capped.balance_micros) == (900, 0)
    debt = await ledger.correct("pre", "b", 600, policy="debt", why="late stop")
    assert (debt.total_debited_micros, debt.balance_micros, debt.overrun) == (600, -500, True)


def rerate_req(call_id: str) -> UsageRequest:
    return UsageRequest(
        account_id="pre", source="radius", call_id=call_id, currency="EUR",
        insufficient="debt", who="rerate", why="rerate r1",
    )  # fmt: skip


@pytest.mark.parametrize("target", [450, 120])
async def test_correct_after_a_rerate_moves_from_what_the_call_was_charged_in_all(
    ledger: Ledger, target: int
) -> None:
    """A reaped call (provisional 200) rerated to 300 before its late Stop: the Stop's
    correction moves the call from 300 to its cost, not from the session's 200 (the
    rerate's 100 stayed in the balance while the corrected CDR said the session's
    charge alone), and a later rerate starts from the corrected charge."""
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 200)  # the reaper's provisional close
    await ledger.rerate_usage(rerate_req("s1"), charged_micros=200, target_micros=300)
    done = await ledger.correct(
        "pre", "s1", target, policy="debt", why="late stop after stale", source="radius"
    )
    assert (done.debited_micros, done.total_debited_micros) == (target - 300, target)
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.debits_micros) == (1_000 - target, target)
    again = await ledger.correct(
        "pre", "s1", target, policy="debt", why="late stop after stale", source="radius"
    )
    assert again.duplicate and again.total_debited_micros == target
    # a rerate of the corrected CDR (charged ``target``) moves from there
    later = await ledger.rerate_usage(rerate_req("s1"), charged_micros=target, target_micros=500)
    assert later.moved_micros == 500 - target
    assert (await ledger.get_account("pre")).balance_micros == 500


async def test_a_rerate_from_a_charge_a_late_stop_corrected_since_is_refused(
    ledger: Ledger,
) -> None:
    """The late Stop corrected the call (200 -> 450) while the billing database still
    had its provisional CDR (charged 200): a rerate from 200 would have moved 100 on
    top of 450 that no CDR shows. Refused, nothing moved; from 450 it applies."""
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 200)
    await ledger.correct("pre", "s1", 450, policy="debt", why="late stop", source="radius")
    with pytest.raises(StaleCharge):
        await ledger.rerate_usage(rerate_req("s1"), charged_micros=200, target_micros=300)
    assert (await ledger.get_account("pre")).balance_micros == 550
    done = await ledger.rerate_usage(rerate_req("s1"), charged_micros=450, target_micros=900)
    assert (done.moved_micros, done.charged_micros) == (450, 900)
    # a reaped call never corrected is rerated from its CDR's charge as before
    await ledger.reserve("pre", "s2", 100, lease_ms=LEASE_MS)
    await ledger.release("pre", "s2", 50)
    other = await ledger.rerate_usage(rerate_req("s2"), charged_micros=50, target_micros=80)
    assert other.moved_micros == 30


async def test_a_second_rerate_from_the_charge_before_a_late_stops_correction_is_refused(
    ledger: Ledger,
) -> None:
    """Reaped (200), rerated (300, written back to the provisional CDR), corrected by
    the late Stop (450) whose revision is not exported yet: a second rerate of the
    provisional CDR (charged 300) is refused; of the corrected one (450) it applies."""
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 200)
    await ledger.rerate_usage(rerate_req("s1"), charged_micros=200, target_micros=300)
    await ledger.correct("pre", "s1", 450, policy="debt", why="late stop", source="radius")
    with pytest.raises(StaleCharge):
        await ledger.rerate_usage(rerate_req("s1"), charged_micros=300, target_micros=600)
    assert (await ledger.get_account("pre")).balance_micros == 550
    done = await ledger.rerate_usage(rerate_req("s1"), charged_micros=450, target_micros=600)
    assert (done.moved_micros, done.charged_micros) == (150, 600)
    # the same target again (a pending charge posted twice) is a replay, whatever base
    again = await ledger.rerate_usage(rerate_req("s1"), charged_micros=450, target_micros=600)
    assert again.replay


async def test_correct_of_a_session_never_released_changes_nothing(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    result = await ledger.correct("pre", "s1", 50, policy="cap", why="late stop")
    assert result.duplicate and result.total_debited_micros == 0
    assert (await ledger.get_account("pre")).reserved_micros == 300


async def test_correct_of_an_unknown_account_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.correct("nobody", "s1", 50, policy="cap", why="late stop")
