"""commit.lua and release.lua on a real Redis: cumulative debits, replays, out-of-order
usage, overruns, postpaid suspension, tombstones."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import (
    CommitResult,
    InvalidRequest,
    Ledger,
    Mode,
    RefusalReason,
    Status,
    UnknownAccount,
)
from chargingd.ledger import keys as K

LEASE_MS = 60_000


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def ledger(redis: aioredis.Redis, clock: Clock, request: pytest.FixtureRequest) -> Ledger:
    led = Ledger(redis, clock_ms=clock, batch_commands=request.param, session_ttl_s=3600)
    await led.load_scripts()
    await led.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=1_000, who="o"
    )
    await led.create_account(
        "post",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=0,
        credit_limit_micros=500,
        who="o",
    )
    return led


async def test_commit_debits_cumulative_minus_debited_from_the_hold(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    assert await ledger.commit("pre", "s1", 150) == CommitResult(150, 150, 850, False, False)
    assert await ledger.commit("pre", "s1", 380) == CommitResult(230, 380, 620, False, False)
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.reserved_micros, acc.debits_micros) == (620, 20, 380)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.details["amount"], entry.details["cumulative"]) == (
        "commit",
        "230",
        "380",
    )
    assert (entry.before["balance"], entry.after["balance"]) == ("850", "620")
    assert (entry.before["reserved"], entry.after["reserved"]) == ("250", "20")
    assert entry.details["overrun"] == "0"


async def test_commit_replay_and_older_usage_debit_nothing(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.commit("pre", "s1", 300)
    audit_len = len(await ledger.audit("pre"))
    assert await ledger.commit("pre", "s1", 300) == CommitResult(0, 300, 700, False, True)
    assert await ledger.commit("pre", "s1", 120) == CommitResult(0, 300, 700, False, True)
    assert len(await ledger.audit("pre")) == audit_len  # no change, no entry
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.reserved_micros) == (700, 100)


async def test_commit_beyond_hold_takes_the_rest_from_balance(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 100, lease_ms=LEASE_MS)
    await ledger.reserve("pre", "s2", 300, lease_ms=LEASE_MS)
    result = await ledger.commit("pre", "s1", 250)
    assert result == CommitResult(250, 250, 750, False, False)
    acc = await ledger.get_account("pre")
    assert acc.reserved_micros == 300  # s2's hold untouched, s1's hold used up


async def test_commit_without_a_hold(ledger: Ledger) -> None:
    assert await ledger.commit("pre", "nohold", 10) == CommitResult(10, 10, 990, False, False)
    assert (await ledger.get_account("pre")).reserved_micros == 0


async def test_prepaid_overrun_is_debited_and_flagged(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 1_000, lease_ms=LEASE_MS)
    result = await ledger.commit("pre", "s1", 1_300)
    assert result == CommitResult(1_300, 1_300, -300, True, False)
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.reserved_micros, acc.status) == (-300, 0, Status.ACTIVE)
    assert acc.initial_balance_micros - acc.debits_micros == acc.balance_micros
    entry = (await ledger.audit("pre", count=1))[0]
    assert entry.details["overrun"] == "1"
    grant = await ledger.reserve("pre", "s2", 1, lease_ms=LEASE_MS)
    assert grant.reason is RefusalReason.INSUFFICIENT_CREDIT


async def test_postpaid_reaching_its_floor_is_suspended(ledger: Ledger) -> None:
    await ledger.reserve("post", "s1", 500, lease_ms=LEASE_MS)
    result = await ledger.commit("post", "s1", 500)
    assert result == CommitResult(500, 500, -500, False, False)  # at the floor, not below
    acc = await ledger.get_account("post")
    assert (acc.status, acc.status_reason, acc.available_micros) == (
        Status.SUSPENDED,
        "credit",
        0,
    )
    entry = (await ledger.audit("post", count=1))[0]
    assert (entry.before["status"], entry.after["status"], entry.after["status_reason"]) == (
        "active",
        "suspended",
        "credit",
    )
    assert (await ledger.reserve("post", "s2", 1, lease_ms=LEASE_MS)).reason is (
        RefusalReason.SUSPENDED
    )
    # Money still flows in while suspended: a late commit is debited (and is an overrun).
    assert await ledger.commit("post", "s1", 520) == CommitResult(20, 520, -520, True, False)
    acc = await ledger.topup("post", 21, txn_id="t1", who="shop")
    assert (acc.balance_micros, acc.status, acc.status_reason) == (-499, Status.ACTIVE, "")


async def test_commit_errors(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.commit("nobody", "s1", 10)
    with pytest.raises(InvalidRequest):
        await ledger.commit("pre", "s1", -1)
    with pytest.raises(InvalidRequest):
        await ledger.commit("pre", "", 1)
    assert (await ledger.get_account("pre")).balance_micros == 1_000


async def test_release_with_final_cost_drops_the_rest(
    ledger: Ledger, redis: aioredis.Redis
) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.commit("pre", "s1", 100)
    result = await ledger.release("pre", "s1", 250)
    assert result == CommitResult(150, 250, 750, False, False)
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.reserved_micros, acc.live_sessions) == (750, 0, 0)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.details["amount"], entry.details["released"]) == (
        "release",
        "150",
        "150",
    )
    ttl_ms = await redis.pttl(K.session_key("pre", "s1"))
    assert 0 < ttl_ms <= 3_600_000


async def test_release_without_final_cost(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.commit("pre", "s1", 100)
    assert await ledger.release("pre", "s1") == CommitResult(0, 100, 900, False, False)
    assert (await ledger.get_account("pre")).reserved_micros == 0


async def test_release_final_cost_below_debited_debits_nothing(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.commit("pre", "s1", 300)
    assert await ledger.release("pre", "s1", 200) == CommitResult(0, 300, 700, False, False)


async def test_tombstone_makes_replays_and_late_commits_free(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 400, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 300)
    assert await ledger.release("pre", "s1", 300) == CommitResult(0, 300, 700, False, True)
    assert await ledger.release("pre", "s1", 900) == CommitResult(0, 300, 700, False, True)
    assert await ledger.commit("pre", "s1", 350) == CommitResult(0, 300, 700, False, True)
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.debits_micros, acc.reserved_micros) == (700, 300, 0)


async def test_release_overrun_is_flagged(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 1_000, lease_ms=LEASE_MS)
    assert await ledger.release("pre", "s1", 1_200) == CommitResult(1_200, 1_200, -200, True, False)
    entry = (await ledger.audit("pre", count=1))[0]
    assert entry.details["overrun"] == "1"


async def test_release_unknown_account(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.release("nobody", "s1", 10)


async def test_release_reclaims_expired_holds_of_the_account(ledger: Ledger, clock: Clock) -> None:
    await ledger.reserve("pre", "stale", 300, lease_ms=1_000)
    await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    clock.now_ms += 5_000
    await ledger.release("pre", "s1", 100)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions, acc.balance_micros) == (0, 0, 900)


async def test_commit_after_lease_expiry_still_debits_once(ledger: Ledger, clock: Clock) -> None:
    await ledger.reserve("pre", "s1", 300, lease_ms=1_000)
    await ledger.commit("pre", "s1", 100)
    clock.now_ms += 10_000
    assert await ledger.sweep_expired() == 1
    assert await ledger.commit("pre", "s1", 100) == CommitResult(0, 100, 900, False, True)
    assert await ledger.commit("pre", "s1", 150) == CommitResult(50, 150, 850, False, False)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.debits_micros) == (0, 150)
