"""(c) the ledger's journal against the CDRs and the business records: a clean story
finds nothing; a debit without a CDR, an adjustment without a reason, a CDR whose
charge the ledger did not move, money moved outside the ledger's scripts and a
balance edited alone are each found once, with the money at stake."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from assurance_harness import (
    BASE_MS,
    by_kind,
    context,
    live_cdr,
    params,
    run,
    sources,
    switch_cdr,
)

from chargingd.assurance import Kind, Sources
from chargingd.billing.cdr import CHARGE_MEDIATED
from chargingd.billing.db import BillingDB
from chargingd.billing.journal import JournalExport
from chargingd.ledger import Ledger, Mode, UsageRequest
from chargingd.ledger.keys import acct_key
from chargingd.sessions.store import SessionRecord

EUR = 1_000_000
NO_SWITCH = Sources(switch={})  # the live CDRs are compared with the ledger only here


async def _setup(redis: aioredis.Redis, pg_url: str) -> tuple[Ledger, BillingDB]:
    ledger = Ledger(redis, clock_ms=lambda: BASE_MS)
    await ledger.load_scripts()
    for account in ("alice", "bob", "carol", "dave"):
        await ledger.create_account(account, mode=Mode.PREPAID, currency="EUR",
                                    balance_micros=20 * EUR, who="t")  # fmt: skip
    return ledger, await BillingDB.open(pg_url)


async def _charged_call(ledger: Ledger, db: BillingDB, n: int, account: str, usage_s: int) -> None:
    """A live call as credit control leaves it: an interim, the release, its CDR."""
    sid = f"sess-{n}"
    await ledger.reserve(account, sid, usage_s * 10_000, lease_ms=60_000)
    await ledger.commit(account, sid, usage_s * 5_000)
    await ledger.release(account, sid, usage_s * 10_000)
    await db.store_cdrs([live_cdr(n, account, usage_s=usage_s)])


async def _clean_story(ledger: Ledger, db: BillingDB) -> None:
    await _charged_call(ledger, db, 1, "alice", 60)
    await _charged_call(ledger, db, 2, "bob", 30)
    req = UsageRequest("carol", "pbx", "pbx-1", "EUR", "debt", "mediation:pbx", "mediated call")
    await ledger.charge_usage(req, 120_000)
    mediated = dataclasses.replace(live_cdr(3, "carol", usage_s=12), source="pbx",
                                   call_id="pbx-1", charge=CHARGE_MEDIATED, extra={})  # fmt: skip
    await db.store_cdrs([mediated])
    await ledger.topup("dave", 5 * EUR, txn_id="card-1", who="shop")
    await ledger.adjust("dave", -EUR, txn_id="ops-1", who="ops", why="refund of a setup fee")


async def test_a_clean_story_finds_nothing(pg_url: str, redis: aioredis.Redis) -> None:
    ledger, db = await _setup(redis, pg_url)
    await _clean_story(ledger, db)
    # A call still running has debited money and has no CDR yet: not a finding.
    await ledger.reserve("alice", "running", 500_000, lease_ms=3_600_000)
    await ledger.commit("alice", "running", 200_000)
    ctx = context(db, redis, NO_SWITCH)
    running = SessionRecord(
        session_id="running", account_id="alice", user_name="alice", caller="+4930111111",
        callee="+442079460099", destination="UK", plan="default", currency="EUR",
        gateway="127.0.0.1", client="gw", auth_ms=BASE_MS, answer_ms=BASE_MS,
        debited_micros=200_000, held_micros=300_000, paid_usage_s=50,
    )  # fmt: skip
    assert await ctx.sessions.create(running)
    ctx.sync_journal = lambda: JournalExport(redis).drain(db)
    assert await run(ctx, now_ms=BASE_MS + 10_000) == []
    await db.close()


async def test_each_ledger_fault_is_found_once(pg_url: str, redis: aioredis.Redis) -> None:
    ledger, db = await _setup(redis, pg_url)
    await _clean_story(ledger, db)
    # Debited for a session whose CDR was lost (a crash between release and the CDR).
    await ledger.reserve("alice", "lost", 400_000, lease_ms=60_000)
    await ledger.release("alice", "lost", 350_000)
    # An adjustment posted straight to the ledger's script, without a reason (the
    # Ledger API refuses that; a tool calling the script does not).
    await ledger._money("adjust", "bob", 3 * EUR, "tool-7", "ops-tool", "", None)
    # A CDR that says it charged 0.10 more than the ledger moved for it.
    await ledger.reserve("carol", "sess-20", 300_000, lease_ms=60_000)
    await ledger.release("carol", "sess-20", 200_000)
    claims = dataclasses.replace(
        live_cdr(20, "carol", usage_s=30), charged_micros=300_000, cost_micros=300_000
    )
    await db.store_cdrs([claims])
    # 2.00 credited to dave by hand in Redis (balance and totals), then another top-up.
    await redis.hincrby(acct_key("dave"), "balance", 2 * EUR)
    await redis.hincrby(acct_key("dave"), "topups", 2 * EUR)
    await ledger.topup("dave", EUR, txn_id="card-2", who="shop")
    # 0.50 taken from bob the same way, after his newest journal entry.
    await redis.hincrby(acct_key("bob"), "balance", -EUR // 2)
    await redis.hincrby(acct_key("bob"), "debits", EUR // 2)
    # carol's balance alone edited: her totals no longer add up.
    await redis.hincrby(acct_key("carol"), "balance", -EUR)
    ctx = context(db, redis, NO_SWITCH)
    ctx.sync_journal = lambda: JournalExport(redis).drain(db)
    # The ledger's clock is the test's (the calls' day); its journal's stream ids are
    # Redis's own clock (today): the chain is checked over entries written in the period.
    period = params(end=datetime.now(UTC) + timedelta(days=1))
    found = by_kind(await run(ctx, period, BASE_MS + 10_000))
    assert set(found) == {Kind.UNEXPLAINED_MOVEMENT, Kind.UNRECORDED_CHARGE, Kind.BALANCE_MISMATCH}
    moves = {(f.account_id, f.call_id): f for f in found[Kind.UNEXPLAINED_MOVEMENT]}
    assert {k: f.money_micros for k, f in moves.items()} == {
        ("alice", "lost"): -350_000,
        ("bob", "tool-7"): 3 * EUR,
        ("dave", ""): 2 * EUR,
        ("bob", ""): -EUR // 2,
    }
    assert moves[("alice", "lost")].detail["movement"] == "debit"
    assert moves[("bob", "tool-7")].detail["who"] == "ops-tool"
    assert moves[("dave", "")].detail["before_kind"] == "topup"  # found between two entries
    assert "after its newest journal entry" in moves[("bob", "")].detail["explanation"]
    (unrecorded,) = found[Kind.UNRECORDED_CHARGE]
    assert (unrecorded.call_id, unrecorded.money_micros) == ("sess-20", 100_000)
    assert unrecorded.detail["moved_micros"] == 200_000
    (balance,) = found[Kind.BALANCE_MISMATCH]
    assert (balance.account_id, balance.money_micros) == ("carol", -EUR)
    await db.close()


async def test_a_lost_cdr_of_a_call_the_switch_has_is_reported_once(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """The ledger debited the session, its CDR was lost, the switch file has the call:
    the call was charged. It is one unexplained movement (find the CDR), not also an
    uncharged call whose advice (bill it) would charge the customer twice."""
    ledger, db = await _setup(redis, pg_url)
    await _charged_call(ledger, db, 1, "alice", 60)
    await ledger.reserve("alice", "sess-2", 400_000, lease_ms=60_000)
    await ledger.release("alice", "sess-2", 300_000)  # 30 s at 0.01/s, CDR never stored
    on_switch = [switch_cdr(live_cdr(1, "alice")), switch_cdr(live_cdr(2, "alice", usage_s=30))]
    await db.store_cdrs(on_switch)
    ctx = context(db, redis, sources())
    ctx.sync_journal = lambda: JournalExport(redis).drain(db)
    period = params(end=datetime.now(UTC) + timedelta(days=1))
    found = by_kind(await run(ctx, period, BASE_MS + 10_000))
    assert set(found) == {Kind.UNEXPLAINED_MOVEMENT}, found
    (lost,) = found[Kind.UNEXPLAINED_MOVEMENT]
    assert (lost.call_id, lost.money_micros) == ("sess-2", -300_000)
    # The switch alone (--source): no ledger check, so the call stays an uncharged one.
    alone = by_kind(await run(ctx, dataclasses.replace(period, source="sw1"), BASE_MS + 10_000))
    assert [(f.call_id, f.money_micros) for f in alone[Kind.UNCHARGED_CALL]] == [
        ("SESS-2", 300_000)
    ]
    await db.close()
