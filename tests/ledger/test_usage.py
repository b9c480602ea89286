"""usage.lua on a real Redis: a mediated call's debit and a call's rerate, idempotent on
(source, call id), one test per branch, and concurrent imports charging once."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import (
    Account,
    CurrencyMismatch,
    InvalidRequest,
    Ledger,
    Mode,
    Status,
    UnknownAccount,
    UsageRequest,
)


def req(call_id: str, account_id: str = "pre", **kw: str) -> UsageRequest:
    fields = {"source": "pbx", "currency": "EUR", "insufficient": "debt", "who": "mediation"}
    fields.update(kw)
    return UsageRequest(
        account_id=account_id,
        source=fields["source"],
        call_id=call_id,
        currency=fields["currency"] or None,
        insufficient=fields["insufficient"],
        who=fields["who"],
        why="",
    )


def books_balance(acc: Account) -> bool:
    return acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros


@pytest.fixture
async def ledger(ledger: Ledger) -> Ledger:
    await ledger.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=1_000, who="o"
    )
    await ledger.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=500, who="o"
    )
    return ledger


async def test_charge_debits_once_and_a_replay_answers_the_first_charge(ledger: Ledger) -> None:
    first = await ledger.charge_usage(req("c1"), 300)
    assert (first.charged_micros, first.moved_micros, first.reason, first.replay) == (
        300, 300, "", False,
    )  # fmt: skip
    again = await ledger.charge_usage(req("c1"), 999)  # a re-sent record, even re-priced
    assert (again.charged_micros, again.moved_micros, again.replay) == (300, 0, True)
    other_source = await ledger.charge_usage(req("c1", source="gw2"), 100)
    assert other_source.moved_micros == 100
    acc = await ledger.get_account("pre")
    assert acc.balance_micros == 600 and acc.debits_micros == 400 and books_balance(acc)
    (entry, *_) = await ledger.audit("pre")
    assert entry.what == "usage"
    assert entry.details == {
        "source": "gw2", "call": "c1", "amount": "100", "cumulative": "100", "cost": "100",
        "reason": "",
    }  # fmt: skip


async def test_insufficient_prepaid_debt_takes_it_all(ledger: Ledger) -> None:
    done = await ledger.charge_usage(req("c1"), 1_500)
    assert (done.charged_micros, done.reason, done.balance_micros) == (1_500, "debt", -500)
    acc = await ledger.get_account("pre")
    assert acc.balance_micros == -500 and books_balance(acc)


async def test_insufficient_prepaid_cap_takes_what_is_available(ledger: Ledger) -> None:
    grant = await ledger.reserve("pre", "live-1", 400, lease_ms=60_000)
    assert grant.granted_micros == 400  # a live call holds 400 of the 1000
    done = await ledger.charge_usage(req("c1", insufficient="cap"), 1_500)
    assert (done.charged_micros, done.reason, done.balance_micros) == (600, "capped", 400)
    acc = await ledger.get_account("pre")
    assert acc.available_micros == 0 and acc.balance_micros == acc.reserved_micros == 400
    nothing = await ledger.charge_usage(req("c2", insufficient="cap"), 50)
    assert (nothing.charged_micros, nothing.reason, nothing.moved_micros) == (0, "capped", 0)
    assert (await ledger.charge_usage(req("c2", insufficient="cap"), 50)).replay


async def test_postpaid_usage_counts_against_the_credit_limit(ledger: Ledger) -> None:
    within = await ledger.charge_usage(req("c1", "post"), 400)
    assert (within.reason, within.balance_micros) == ("", -400)
    assert (await ledger.get_account("post")).status is Status.ACTIVE
    over = await ledger.charge_usage(req("c2", "post"), 300)
    assert (over.reason, over.balance_micros) == ("debt", -700)
    acc = await ledger.get_account("post")
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "credit")
    # The limit is what a live call could still get: nothing now.
    assert (await ledger.reserve("post", "live", 10, lease_ms=1000)).granted_micros == 0


async def test_refusals_change_nothing(ledger: Ledger) -> None:
    before = await ledger.get_account("pre")
    with pytest.raises(UnknownAccount):
        await ledger.charge_usage(req("c1", "nobody"), 100)
    with pytest.raises(CurrencyMismatch):
        await ledger.charge_usage(req("c1", currency="USD"), 100)
    with pytest.raises(InvalidRequest):
        await ledger.charge_usage(req("c1", insufficient="maybe"), 100)
    with pytest.raises(InvalidRequest):
        await ledger.charge_usage(req("c1"), -5)
    with pytest.raises(InvalidRequest):
        await ledger.charge_usage(req("x" * 300), 5)
    assert await ledger.get_account("pre") == before
    # The refused call was not remembered: it charges when it comes right.
    assert (await ledger.charge_usage(req("c1"), 100)).moved_micros == 100


async def test_rerate_moves_the_difference_to_what_was_charged(ledger: Ledger) -> None:
    await ledger.charge_usage(req("c1"), 300)
    cheaper = await ledger.rerate_usage(
        req("c1", who="rerate"), charged_micros=0, target_micros=200
    )
    # The ledger remembers the call: its own 300, not the caller's "0", is the base.
    assert (cheaper.charged_micros, cheaper.moved_micros, cheaper.reason) == (200, -100, "rerate")
    same = await ledger.rerate_usage(req("c1"), charged_micros=300, target_micros=200)
    assert same.replay and same.moved_micros == 0
    dearer = await ledger.rerate_usage(req("c1"), charged_micros=200, target_micros=450)
    assert dearer.moved_micros == 250
    acc = await ledger.get_account("pre")
    assert acc.balance_micros == 1_000 - 450 and acc.debits_micros == 450 and books_balance(acc)
    (entry, *_) = await ledger.audit("pre")
    assert (entry.what, entry.details["amount"], entry.details["cumulative"]) == (
        "rerate", "250", "450",
    )  # fmt: skip


async def test_rerate_of_a_call_the_ledger_no_longer_remembers_uses_the_base(
    ledger: Ledger,
) -> None:
    # A live call: its session debited 800; its usage key never existed.
    await ledger.adjust("pre", -800, txn_id="live", who="t", why="stands for a live call")
    refund = await ledger.rerate_usage(
        req("sess-1", source="radius"), charged_micros=800, target_micros=0
    )
    assert (refund.charged_micros, refund.moved_micros) == (0, -800)  # never more than taken
    assert (await ledger.get_account("pre")).balance_micros == 1_000
    # Rerating a never-charged call to nothing moves nothing.
    zero = await ledger.rerate_usage(req("sess-2", source="radius"), charged_micros=0,
                                     target_micros=0)  # fmt: skip
    assert zero.moved_micros == 0


async def test_rerate_cap_never_takes_past_what_is_available(ledger: Ledger) -> None:
    await ledger.charge_usage(req("c1", insufficient="cap"), 900)
    up = await ledger.rerate_usage(req("c1", insufficient="cap"), charged_micros=900,
                                   target_micros=1_400)  # fmt: skip
    assert (up.charged_micros, up.moved_micros, up.reason, up.balance_micros) == (
        1_000, 100, "capped", 0,
    )  # fmt: skip


@pytest.mark.slow
async def test_concurrent_imports_of_the_same_calls_charge_once(
    ledger: Ledger, redis_server: EmbeddedRedis
) -> None:
    """Four importers (own connections, own Ledgers) charge the same 200 calls at once."""
    await ledger.topup("pre", 1_000_000, txn_id="fund", who="t")
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]
    importers = [Ledger(c) for c in clients]
    costs = {f"call-{i}": 100 + i for i in range(200)}
    try:
        results = await asyncio.gather(
            *(
                imp.charge_usage(req(call_id), cost)
                for imp in importers
                for call_id, cost in costs.items()
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    moved = sum(r.moved_micros for r in results)
    assert moved == sum(costs.values())
    assert sum(1 for r in results if not r.replay) == len(costs)
    assert all(r.charged_micros == costs[c] for r, c in zip(results, list(costs) * 4, strict=True))
    acc = await ledger.get_account("pre")
    assert acc.balance_micros == 1_001_000 - sum(costs.values()) and books_balance(acc)
