"""topup.lua on a real Redis: top-ups and signed adjustments, idempotency on the
transaction id, currency checks, counters and the postpaid credit rule."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import (
    Account,
    AccountNotActive,
    CurrencyMismatch,
    DuplicateTransaction,
    InvalidRequest,
    Ledger,
    Mode,
    Status,
    UnknownAccount,
)
from chargingd.ledger import keys as K


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis, clock_ms=Clock())
    await led.load_scripts()
    await led.create_account("pre", mode=Mode.PREPAID, currency="EUR", balance_micros=100, who="o")
    await led.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=1_000, who="o"
    )
    return led


def books_balance(acc: Account) -> bool:
    return acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros


async def test_topup_adds_and_audits(ledger: Ledger) -> None:
    acc = await ledger.topup("pre", 250, txn_id="tx1", who="shop", why="voucher", currency="EUR")
    assert (acc.balance_micros, acc.topups_micros, acc.debits_micros) == (350, 250, 0)
    assert books_balance(acc)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.who, entry.why) == ("topup", "shop", "voucher")
    assert (entry.before["balance"], entry.after["balance"]) == ("100", "350")
    assert entry.details == {"txn": "tx1", "amount": "250"}


async def test_topup_replay_applies_once_and_returns_same_result(ledger: Ledger) -> None:
    first = await ledger.topup("pre", 250, txn_id="tx1", who="shop")
    await ledger.topup("pre", 1, txn_id="tx2", who="shop")
    again = await ledger.topup("pre", 250, txn_id="tx1", who="shop")
    assert again == first
    assert (await ledger.get_account("pre")).balance_micros == 351
    assert len(await ledger.audit("pre")) == 3  # create + two top-ups


async def test_same_txn_different_amount_or_kind_is_refused(ledger: Ledger) -> None:
    await ledger.topup("pre", 250, txn_id="tx1", who="shop")
    with pytest.raises(DuplicateTransaction):
        await ledger.topup("pre", 251, txn_id="tx1", who="shop")
    with pytest.raises(DuplicateTransaction):
        await ledger.adjust("pre", 250, txn_id="tx1", who="op", why="fix")
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.topups_micros) == (350, 250)


async def test_txn_key_expires(ledger: Ledger, redis: aioredis.Redis) -> None:
    await ledger.topup("pre", 5, txn_id="tx1", who="shop")
    ttl_ms = await redis.pttl(K.txn_key("pre", "tx1"))
    assert 89 * 86400_000 < ttl_ms <= 90 * 86400_000


async def test_currency_mismatch_changes_nothing(ledger: Ledger) -> None:
    with pytest.raises(CurrencyMismatch):
        await ledger.topup("pre", 5, txn_id="tx1", who="shop", currency="USD")
    with pytest.raises(CurrencyMismatch):
        await ledger.adjust("pre", -5, txn_id="tx2", who="op", why="x", currency="USD")
    assert (await ledger.get_account("pre")).balance_micros == 100
    # The refused id is still free.
    assert (await ledger.topup("pre", 5, txn_id="tx1", who="shop")).balance_micros == 105


@pytest.mark.parametrize("amount", [0, -5, 10**16])
async def test_topup_amount_validation(ledger: Ledger, amount: int) -> None:
    with pytest.raises(InvalidRequest):
        await ledger.topup("pre", amount, txn_id="t", who="shop")
    assert (await ledger.get_account("pre")).balance_micros == 100


async def test_money_input_validation(ledger: Ledger) -> None:
    with pytest.raises(InvalidRequest):
        await ledger.topup("pre", 5, txn_id="", who="shop")
    with pytest.raises(InvalidRequest):
        await ledger.topup("pre", 5, txn_id="t", who="")
    with pytest.raises(InvalidRequest):
        await ledger.topup("pre", 5, txn_id="t", who="x", currency="eur")
    with pytest.raises(InvalidRequest):
        await ledger.adjust("pre", 0, txn_id="t", who="op", why="x")
    with pytest.raises(InvalidRequest):
        await ledger.adjust("pre", 5, txn_id="t", who="op", why=" ")
    with pytest.raises(UnknownAccount):
        await ledger.topup("nobody", 5, txn_id="t", who="shop")
    assert (await ledger.get_account("pre")).balance_micros == 100


async def test_adjustments_count_as_topup_or_debit(ledger: Ledger) -> None:
    acc = await ledger.adjust("pre", -30, txn_id="a1", who="op", why="refund reversal")
    assert (acc.balance_micros, acc.topups_micros, acc.debits_micros) == (70, 0, 30)
    acc = await ledger.adjust("pre", 12, txn_id="a2", who="op", why="goodwill")
    assert (acc.balance_micros, acc.topups_micros, acc.debits_micros) == (82, 12, 30)
    assert books_balance(acc)
    replay = await ledger.adjust("pre", -30, txn_id="a1", who="op", why="x")
    assert replay.balance_micros == 70  # the result of the first time, not a new debit
    assert (await ledger.get_account("pre")).balance_micros == 82
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.why) == ("adjust", "goodwill")


async def test_adjust_below_floor_suspends_postpaid_and_topup_reactivates(ledger: Ledger) -> None:
    acc = await ledger.adjust("post", -1_000, txn_id="a1", who="op", why="late CDRs")
    assert (acc.balance_micros, acc.status, acc.status_reason) == (
        -1_000,
        Status.SUSPENDED,
        "credit",
    )
    entry = (await ledger.audit("post", count=1))[0]
    assert (entry.after["status"], entry.after["status_reason"]) == ("suspended", "credit")
    acc = await ledger.topup("post", 1, txn_id="t1", who="shop")
    assert (acc.balance_micros, acc.status, acc.status_reason) == (-999, Status.ACTIVE, "")


async def test_topup_not_reaching_above_floor_keeps_suspension(ledger: Ledger) -> None:
    await ledger.adjust("post", -1_500, txn_id="a1", who="op", why="x", allow_debt=True)
    acc = await ledger.topup("post", 500, txn_id="t1", who="shop")
    assert (acc.balance_micros, acc.status) == (-1_000, Status.SUSPENDED)


async def test_operator_suspension_is_never_lifted_by_topup(ledger: Ledger) -> None:
    await ledger.set_status("post", Status.SUSPENDED, who="op", why="dispute")
    acc = await ledger.topup("post", 5_000, txn_id="t1", who="shop")
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "operator")
    await ledger.set_status("pre", Status.BLOCKED, who="op")
    acc = await ledger.topup("pre", 5, txn_id="t2", who="shop")
    assert acc.status == Status.BLOCKED


async def test_closed_account_takes_no_topup(ledger: Ledger) -> None:
    await ledger.set_status("pre", Status.CLOSED, who="op")
    with pytest.raises(AccountNotActive):
        await ledger.topup("pre", 5, txn_id="t1", who="shop")
    assert (await ledger.get_account("pre")).balance_micros == 100


async def test_large_amounts_stay_exact(ledger: Ledger) -> None:
    """Lua numbers are doubles and tostring() goes exponential above 1e14: %d keeps digits."""
    big = 10**15 - 1
    await ledger.topup("pre", big, txn_id="t1", who="shop")
    acc = await ledger.topup("pre", big, txn_id="t2", who="shop")
    assert acc.balance_micros == 100 + 2 * big
    grant = await ledger.reserve("pre", "s1", big, lease_ms=1_000)
    assert grant.granted_micros == big
    result = await ledger.commit("pre", "s1", big - 7)
    assert (result.debited_micros, result.balance_micros) == (big - 7, 100 + big + 7)
    acc = await ledger.get_account("pre")
    assert acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros
    assert acc.reserved_micros == 7
