"""What only Redis knows: CDRs stuck in the stream or dead-lettered, holds past their
lease, sessions past their Session-Timeout, balances that do not add up."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import redis.asyncio as aioredis
from assurance_harness import (
    MICROS_PER_S,
    by_kind,
    context,
    live_cdr,
    params,
    run,
    switch_cdr,
)

from chargingd.assurance import Kind
from chargingd.billing.cdr import CDR_STREAM
from chargingd.billing.db import BillingDB
from chargingd.core.config import RatingConfig
from chargingd.ledger import Ledger, Mode
from chargingd.ledger.keys import acct_key
from chargingd.sessions.store import SessionRecord

TARIFF = (Path(__file__).parent / "test_calls.py").read_text().split('_FLAT_TARIFF = """')[1]
TARIFF = TARIFF.split('"""')[0]


async def test_stuck_cdrs_are_one_finding_each_and_still_explain_their_call(
    pg_url: str, redis: aioredis.Redis
) -> None:
    db = await BillingDB.open(pg_url)
    pending, undelivered, dead, stored = (live_cdr(n, usage_s=10 * (n + 1)) for n in range(4))
    await db.store_cdrs([stored, switch_cdr(pending)])
    await redis.xgroup_create(CDR_STREAM, "exporter", id="0", mkstream=True)
    for c in (pending, stored):
        await redis.xadd(CDR_STREAM, {"cdr": c.pack()})
    # An exporter on another host read these two and died before acknowledging them
    # (the second was stored: its acknowledgement was what got lost).
    await redis.xreadgroup("exporter", "dead-host", {CDR_STREAM: ">"}, count=2)
    await redis.xadd(CDR_STREAM, {"cdr": undelivered.pack()})
    await redis.xadd("cdr:dead", {"id": b"1-0", "reason": b"refused", "cdr": dead.pack()})
    await redis.xadd("cdr:dead", {"id": b"2-0", "reason": b"no 'cdr' field", "cdr": b""})
    now_ms = int(time.time() * 1000) + 120_000
    found = await run(context(db, redis), params(stuck_after_s=60), now_ms)
    kinds = by_kind(found)
    # The pending CDR matches its switch record: no uncharged call, only the stuck CDR.
    assert set(kinds) == {Kind.STUCK_CDR, Kind.UNKNOWN_TO_SWITCH}
    stuck = {f.call_id: f for f in kinds[Kind.STUCK_CDR]}
    assert set(stuck) == {"sess-0", "sess-2", "sess-1", "2-0"}
    assert stuck["sess-0"].money_micros == 10 * MICROS_PER_S
    assert stuck["sess-0"].detail["where"].startswith("stream: pending at consumer dead-host")
    assert stuck["sess-1"].detail["where"] == "stream: not delivered to the exporter"
    assert stuck["sess-2"].detail["where"] == "dead letter: refused"
    assert stuck["2-0"].money_micros == 0 and "undecodable" in stuck["2-0"].detail["where"]
    # Charged live but on no switch file (stuck or stored): unknown to the switch too.
    assert {f.call_id for f in kinds[Kind.UNKNOWN_TO_SWITCH]} == {"sess-1", "sess-2", "sess-3"}
    # Not stuck yet: younger than stuck_after_s (the dead letters are at any age).
    young = await run(context(db, redis), params(stuck_after_s=3600), now_ms)
    assert {f.call_id for f in young if f.kind is Kind.STUCK_CDR} == {"sess-2", "2-0"}
    await db.close()


async def test_holds_sessions_and_balances(
    pg_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(TARIFF)  # 0.02 per second
    t0 = int(time.time() * 1000)
    ledger = Ledger(redis, clock_ms=lambda: t0)
    await ledger.load_scripts()
    for account in ("alice", "bob", "carol"):
        await ledger.create_account(account, mode=Mode.PREPAID, currency="EUR",
                                    balance_micros=10_000_000, who="test")  # fmt: skip
    # A hold nobody released, its lease over (the sweeper did not run).
    await ledger.reserve("alice", "ghost-hold", 500_000, lease_ms=1000)
    # A live call answered 100 s ago whose money paid for 30 s, silent since.
    await ledger.reserve("bob", "long-call", 600_000, lease_ms=30_000)
    db = await BillingDB.open(pg_url)
    ctx = context(db, redis, rating=RatingConfig(default_plan=str(plan)))
    rec = SessionRecord(
        session_id="long-call", account_id="bob", user_name="bob", caller="+4930111111",
        callee="+442079460001", destination="UK", plan="default", currency="EUR",
        gateway="127.0.0.1", client="gw", auth_ms=t0 - 101_000, answer_ms=t0 - 100_000,
        last_seen_ms=t0 - 100_000, held_micros=600_000, paid_usage_s=30,
    )  # fmt: skip
    assert await ctx.sessions.create(rec)
    # Someone took 1.00 off carol's balance by hand (the totals say otherwise).
    await redis.hincrby(acct_key("carol"), "balance", -1_000_000)
    found = by_kind(await run(ctx, params(hold_grace_s=5, session_grace_s=5), t0 + 10_000))
    assert set(found) == {Kind.HOLD_PAST_LEASE, Kind.SESSION_PAST_TIMEOUT, Kind.BALANCE_MISMATCH}
    (hold,) = found[Kind.HOLD_PAST_LEASE]
    assert (hold.account_id, hold.call_id, hold.money_micros) == ("alice", "ghost-hold", 500_000)
    (late,) = found[Kind.SESSION_PAST_TIMEOUT]
    # 110 s at 0.02 cost 2.20, 0.60 of it held: 1.60 the call has run on no money.
    assert late.detail["elapsed_s"] == 110
    assert (late.call_id, late.money_micros) == ("long-call", 2_200_000 - 600_000)
    (balance,) = found[Kind.BALANCE_MISMATCH]
    assert (balance.account_id, balance.money_micros) == ("carol", -1_000_000)
    assert balance.detail["expected_micros"] == 10_000_000
    # --account: only that account's state.
    only = await run(ctx, dataclasses.replace(params(hold_grace_s=5), account_id="alice"),
                     t0 + 10_000)  # fmt: skip
    assert [f.kind for f in only] == [Kind.HOLD_PAST_LEASE]
    await db.close()


async def test_a_stuck_correction_replaces_the_stored_revision(
    pg_url: str, redis: aioredis.Redis
) -> None:
    # A call closed provisionally at 10 s (stored) and corrected by its late Stop to
    # 50 s: the correction is still in the stream (the exporter is down). The ledger has
    # the corrected money; the run must say the correction is stuck (40 s of money no
    # invoice sees yet), and not compare the stale stored row with the switch.
    db = await BillingDB.open(pg_url)
    provisional = live_cdr(0, usage_s=10, status="gateway_restart")
    corrected = dataclasses.replace(
        live_cdr(0, usage_s=50), revision=1, extra={"client": "gw", "provisional_usage_s": "10"}
    )
    other = live_cdr(1, usage_s=20)
    await db.store_cdrs([provisional, other, switch_cdr(corrected), switch_cdr(other)])
    await redis.xgroup_create(CDR_STREAM, "exporter", id="$", mkstream=True)
    # The other call's CDR is in the stream and also stored (its acknowledgement was
    # lost): no finding.
    await redis.xadd(CDR_STREAM, {"cdr": corrected.pack()})
    await redis.xadd(CDR_STREAM, {"cdr": other.pack()})
    now_ms = int(time.time() * 1000) + 120_000
    found = await run(context(db, redis), params(stuck_after_s=60), now_ms)
    kinds = by_kind(found)
    assert set(kinds) == {Kind.STUCK_CDR}, found
    (stuck,) = kinds[Kind.STUCK_CDR]
    assert stuck.call_id == "sess-0"
    assert stuck.money_micros == 40 * MICROS_PER_S
    assert stuck.detail["replaces_stored_revision"] == 0
    assert stuck.detail["stored_charged_micros"] == 10 * MICROS_PER_S
    # Both revisions stuck: the newer one says it all (no double charge of one call).
    await redis.xadd(CDR_STREAM, {"cdr": dataclasses.replace(corrected, revision=2).pack()})
    found = await run(context(db, redis), params(stuck_after_s=60), now_ms)
    assert [(f.kind, f.call_id) for f in found] == [(Kind.STUCK_CDR, "sess-0")]
    await db.close()
