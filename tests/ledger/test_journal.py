"""The ledger's journal on a real Redis: every script that moves money appends exactly
one entry in the same script (replays none), each entry's balance and net follow
from the previous one's, under concurrent movements too, and the fused session
scripts journal like the Ledger's own calls."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import redis.asyncio as aioredis
from fakes import Clock
from sessions_harness import add_account, call, make_sessions, usage

from chargingd.ledger import Ledger, Mode, UsageRequest
from chargingd.ledger.journal import JournalEntry, LedgerInspector
from chargingd.ledger.keys import acct_key, journal_key
from chargingd.sessions.ccapi import Authorized, UsageKind


async def _journal(redis: aioredis.Redis, account_id: str) -> list[JournalEntry]:
    found = await LedgerInspector(redis).read_journal([account_id], {}, count=100_000)
    return found.get(account_id, [])


def _assert_chain(entries: list[JournalEntry]) -> None:
    """Each entry's "before" (after - amount) is the previous entry's "after"."""
    for prev, entry in itertools.pairwise(entries):
        assert entry.balance_micros - entry.amount_micros == prev.balance_micros, entry
        assert entry.net_micros - entry.amount_micros == prev.net_micros, entry


def _request(call_id: str) -> UsageRequest:
    return UsageRequest("acc", "pbx", call_id, None, "debt", "mediation:pbx", "mediated call")


async def test_every_money_script_appends_one_entry(ledger: Ledger, redis: aioredis.Redis) -> None:
    await ledger.create_account(
        "acc", mode=Mode.PREPAID, currency="EUR", balance_micros=5_000_000, who="ops",
        why="new customer",
    )  # fmt: skip
    await ledger.topup("acc", 2_000_000, txn_id="pay-1", who="shop", why="card")
    await ledger.topup("acc", 2_000_000, txn_id="pay-1", who="shop", why="card")  # replay
    await ledger.adjust("acc", -300_000, txn_id="adj-1", who="ops", why="goodwill back")
    await ledger.reserve("acc", "s1", 1_000_000, lease_ms=60_000)  # a hold moves no money
    await ledger.commit("acc", "s1", 400_000)
    await ledger.commit("acc", "s1", 400_000)  # duplicate interim
    await ledger.release("acc", "s1", 650_000)
    await ledger.release("acc", "s1", 650_000)  # replayed Stop
    await ledger.reserve("acc", "s2", 500_000, lease_ms=60_000)
    await ledger.release("acc", "s2", 0)  # unanswered: nothing debited, no entry
    await ledger.correct("acc", "s1", 600_000, policy="debt", why="late stop")
    await ledger.charge_usage(_request("c9"), 250_000)
    await ledger.charge_usage(_request("c9"), 250_000)  # the same file again
    await ledger.rerate_usage(_request("c9"), charged_micros=250_000, target_micros=200_000)
    entries = await _journal(redis, "acc")
    assert [(e.kind, e.amount_micros, e.ref, e.source) for e in entries] == [
        ("open", 0, "", ""),
        ("topup", 2_000_000, "pay-1", ""),
        ("adjust", -300_000, "adj-1", ""),
        ("debit", -400_000, "s1", ""),
        ("debit", -250_000, "s1", ""),
        ("correct", 50_000, "s1", ""),
        ("usage", -250_000, "c9", "pbx"),
        ("rerate", 50_000, "c9", "pbx"),
    ]
    assert entries[0].balance_micros == 5_000_000 and entries[0].who == "ops"
    assert (entries[2].who, entries[2].why) == ("ops", "goodwill back")
    assert entries[5].why == "late stop"
    _assert_chain(entries)
    account = await ledger.get_account("acc")
    last = entries[-1]
    assert last.balance_micros == account.balance_micros
    assert last.net_micros == account.topups_micros - account.debits_micros
    assert account.balance_micros == 5_000_000 + sum(e.amount_micros for e in entries)


async def test_concurrent_movements_keep_one_unbroken_chain(
    ledger: Ledger, redis: aioredis.Redis
) -> None:
    await ledger.create_account("acc", mode=Mode.POSTPAID, currency="EUR",
                                credit_limit_micros=10**9, who="t")  # fmt: skip

    async def session(n: int) -> None:
        await ledger.reserve("acc", f"s{n}", 300_000, lease_ms=60_000)
        await ledger.commit("acc", f"s{n}", 100_000 + n)
        await ledger.release("acc", f"s{n}", 200_000 + n)

    await asyncio.gather(
        *(session(n) for n in range(40)),
        *(ledger.topup("acc", 1000 + n, txn_id=f"t{n}", who="t") for n in range(40)),
        *(ledger.charge_usage(_request(f"c{n}"), 5_000 + n) for n in range(40)),
    )
    entries = await _journal(redis, "acc")
    assert len(entries) == 1 + 40 * 2 + 40 + 40
    _assert_chain(entries)
    account = await ledger.get_account("acc")
    assert account.balance_micros == sum(e.amount_micros for e in entries)
    assert entries[-1].balance_micros == account.balance_micros


async def test_fused_session_scripts_journal_the_same(
    redis: aioredis.Redis, clock: Clock, tmp_path: Path
) -> None:
    ledger = Ledger(redis, clock_ms=clock)
    await ledger.load_scripts()
    await add_account(ledger, "acc1")
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    assert sessions.store.batched  # a single Redis: authorize/renew/close are fused
    info = call("fused-1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
    clock.advance(60)
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.advance(30)
    await sessions.account(usage(info, UsageKind.STOP, 90, clock.now_ms))
    entries = await _journal(redis, "acc1")
    debits = [e for e in entries if e.kind == "debit"]
    assert [e.ref for e in debits] == ["fused-1", "fused-1"]
    account = await ledger.get_account("acc1")
    assert -sum(e.amount_micros for e in debits) == account.debits_micros > 0
    _assert_chain(entries)


async def test_inspector_reads_trims_and_snapshots(ledger: Ledger, redis: aioredis.Redis) -> None:
    await ledger.create_account("acc", mode=Mode.PREPAID, currency="EUR",
                                balance_micros=1_000_000, who="t")  # fmt: skip
    for n in range(5):
        await ledger.topup("acc", 10, txn_id=f"t{n}", who="t")
    inspector = LedgerInspector(redis)
    first = (await inspector.read_journal(["acc", "nobody"], {}, count=3))["acc"]
    assert [e.kind for e in first] == ["open", "topup", "topup"]
    rest = (await inspector.read_journal(["acc"], {"acc": first[-1].entry_id}))["acc"]
    assert [e.ref for e in rest] == ["t2", "t3", "t4"]
    # Trimming up to an entry keeps that entry (the chain's link to the account).
    assert await inspector.trim_journal({"acc": rest[-1].entry_id}) == 5
    assert await redis.xlen(journal_key("acc")) == 1
    await redis.hincrby(acct_key("acc"), "balance", 7)  # an edit outside the ledger
    (snap,) = await inspector.snapshots(["acc", "nobody"])
    assert (snap.balance_micros, snap.initial_micros, snap.net_micros) == (1_000_057, 1_000_000, 50)
    assert snap.last is not None and snap.last.balance_micros == 1_000_050
