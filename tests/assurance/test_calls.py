"""(a) against (b) in PostgreSQL: switch records of a record_only source against the
live CDRs, each kind of finding with its money, and how each call was matched."""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis
from assurance_harness import (
    BASE_MS,
    MICROS_PER_S,
    SWITCH,
    by_kind,
    context,
    live_cdr,
    params,
    run,
    sources,
    switch_cdr,
)

from chargingd.assurance import Kind, reconcile
from chargingd.billing.cdr import CHARGE_MEDIATED
from chargingd.billing.db import BillingDB
from chargingd.core.config import RatingConfig


async def test_clean_calls_produce_no_finding(pg_url: str, redis: aioredis.Redis) -> None:
    db = await BillingDB.open(pg_url)
    live = [live_cdr(n, usage_s=30 + n) for n in range(20)]
    unanswered = live_cdr(20, usage_s=0)
    # Within both tolerances: 1 s on a long call (2 s, 1 %) is no finding.
    switch = [switch_cdr(c, usage_s=c.duration_s + (n == 3)) for n, c in enumerate(live)]
    await db.store_cdrs([*live, unanswered, *switch, switch_cdr(unanswered)])
    outcome = await reconcile(context(db, redis), params(), 0)
    assert outcome.findings == []
    assert outcome.matching == {
        "switch_calls": 21, "live_calls": 21, "matched_by_id": 21,
        "matched_by_caller_callee_start": 0, "matched_by_callee_start_no_caller_id": 0,
    }  # fmt: skip
    await db.close()


async def test_each_call_finding_with_its_money_and_how_it_matched(
    pg_url: str, redis: aioredis.Redis
) -> None:
    db = await BillingDB.open(pg_url)
    clean = [live_cdr(n) for n in range(5)]
    missing = live_cdr(10, usage_s=42)  # on the switch only: never charged
    extra = live_cdr(11, usage_s=25)  # charged live, the switch never saw it
    short = live_cdr(12, usage_s=60)  # the switch says 67 s
    # The switch wrote another id for this one: matched by caller, callee and start.
    other_id = live_cdr(13, usage_s=50)
    first = live_cdr(14, usage_s=40)
    # The same call charged again under a second session id, a second later.
    second = dataclasses.replace(
        first, call_id="sess-14-retry", start_ms=first.start_ms + 1000,
        answer_ms=first.answer_ms + 1000,
    )  # fmt: skip
    await db.store_cdrs([*clean, extra, short, other_id, first, second])
    await db.store_cdrs(
        [
            *(switch_cdr(c) for c in clean),
            switch_cdr(missing),
            switch_cdr(short, usage_s=67),
            switch_cdr(other_id, call_id="SW-ELSEWHERE-13", start_ms=other_id.start_ms + 3000),
            switch_cdr(first),
        ]
    )
    outcome = await reconcile(context(db, redis), params(), 0)
    found = by_kind(outcome.findings)
    assert set(found) == {
        Kind.UNCHARGED_CALL,
        Kind.UNKNOWN_TO_SWITCH,
        Kind.DURATION_MISMATCH,
        Kind.DOUBLE_CHARGE,
    }
    (leak,) = found[Kind.UNCHARGED_CALL]
    assert (leak.source, leak.call_id, leak.money_micros) == (SWITCH, "SESS-10", 42 * MICROS_PER_S)
    (unknown,) = found[Kind.UNKNOWN_TO_SWITCH]
    assert (unknown.call_id, unknown.money_micros) == ("sess-11", -25 * MICROS_PER_S)
    (mismatch,) = found[Kind.DURATION_MISMATCH]
    assert mismatch.call_id == "SESS-12" and mismatch.money_micros == 7 * MICROS_PER_S
    assert mismatch.matched_by == "id:call_id"
    assert mismatch.detail["difference_s"] == 7 and mismatch.detail["live_call_id"] == "sess-12"
    (double,) = found[Kind.DOUBLE_CHARGE]
    # The second session (no switch record matched it) is the duplicate.
    assert (double.call_id, double.money_micros) == ("sess-14-retry", -40 * MICROS_PER_S)
    assert double.detail["first_call_id"] == "sess-14"
    assert outcome.matching == {
        "switch_calls": 9, "live_calls": 10, "matched_by_id": 7,
        "matched_by_caller_callee_start": 1, "matched_by_callee_start_no_caller_id": 0,
    }  # fmt: skip
    await db.close()


async def test_match_on_an_extra_field_and_unrated_switch_priced_by_the_plan(
    pg_url: str, redis: aioredis.Redis, tmp_path: object
) -> None:
    """A cisco_radius-like source keys its calls by h323-conf-id and carries the
    Acct-Session-Id the live CDR has; an unrated source's missing call is priced
    under the account's plan."""
    from pathlib import Path

    plan = Path(str(tmp_path)) / "plan.toml"
    plan.write_text(_FLAT_TARIFF)
    db = await BillingDB.open(pg_url)
    live = live_cdr(1, usage_s=30)
    missing = live_cdr(2, usage_s=20)
    await db.store_cdrs([live])
    await db.store_cdrs(
        [
            switch_cdr(live, call_id="CONF-1", cost_micros=0, extra={"Acct-Session-Id": "sess-1"}),
            switch_cdr(missing, call_id="CONF-2", cost_micros=0,
                       extra={"Acct-Session-Id": "sess-2"}),
        ]
    )  # fmt: skip

    async def tariff(account_id: str) -> str | None:
        return "" if account_id == "alice" else None

    ctx = context(db, redis, sources("Acct-Session-Id", rate=False),
                  rating=RatingConfig(default_plan=str(plan)))  # fmt: skip
    ctx.pricer.tariff_of = tariff
    (leak,) = await run(ctx)
    assert (leak.kind, leak.call_id) == (Kind.UNCHARGED_CALL, "CONF-2")
    assert leak.money_micros == 20 * 20_000  # the plan's 0.02 per second
    assert leak.detail["rated_by"] == "assurance: the account's plan"
    await db.close()


async def test_a_call_charged_three_times_is_two_double_charges(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """Three sessions of one call (a gateway that retried the Access-Request twice
    under new session ids) are two extra charges: each reported once, whether the
    switch record matched the first session or the middle one. Every pair was a
    finding before: the third session twice, -3 charges for two (and with repeated
    traffic more over-billing than was ever charged)."""
    db = await BillingDB.open(pg_url)
    calls = []
    for n, matched in ((1, 0), (5, 1)):  # which of the three the switch file matched
        first = live_cdr(n, usage_s=40)
        three = [
            dataclasses.replace(
                first, call_id=f"{first.call_id}-{k}", start_ms=first.start_ms + k * 1000,
                answer_ms=first.answer_ms + k * 1000,
            )
            for k in range(3)
        ]  # fmt: skip
        await db.store_cdrs([*three, switch_cdr(three[matched])])
        calls.append((three, three[matched].call_id))
    doubles = by_kind(await run(context(db, redis)))[Kind.DOUBLE_CHARGE]
    for three, kept in calls:
        mine = [d for d in doubles if d.call_id in {c.call_id for c in three}]
        assert sorted(d.call_id for d in mine) == sorted(
            c.call_id for c in three if c.call_id != kept
        )
        assert sum(d.money_micros for d in mine) == -2 * 40 * MICROS_PER_S
    await db.close()


async def test_charge_without_reason_and_mediated_double(
    pg_url: str, redis: aioredis.Redis
) -> None:
    db = await BillingDB.open(pg_url)
    bad = live_cdr(1, usage_s=30)
    bad = dataclasses.replace(bad, cost_micros=bad.cost_micros + 50_000)  # no reason given
    capped = dataclasses.replace(live_cdr(2, usage_s=30), charged_micros=100_000,
                                 charge_reason="capped")  # fmt: skip
    charged = live_cdr(3, usage_s=45)
    # The same call also debited from a ledger-charging switch file: charged twice.
    mediated = dataclasses.replace(
        charged, source="pbx", call_id="pbx-77", charge=CHARGE_MEDIATED, extra={}
    )
    await db.store_cdrs([bad, capped, charged, mediated])
    found = by_kind(await run(context(db, redis, sources())))
    (reason,) = found[Kind.CHARGE_WITHOUT_REASON]
    assert (reason.call_id, reason.money_micros) == ("sess-1", 50_000)
    (double,) = found[Kind.DOUBLE_CHARGE]
    assert {double.call_id, double.detail["first_call_id"]} == {"sess-3", "pbx-77"}
    assert double.money_micros == -45 * MICROS_PER_S
    await db.close()


async def test_calls_without_caller_id_are_not_one_call_charged_twice(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """Two concurrent calls of one trunk without caller ID, to one number in the same
    millisecond, were flagged as one call charged twice: an empty caller is no
    evidence of one caller. The same call also debited from a switch file (another
    source) is still a double charge without a caller, and with one, so is a second
    session of one source."""
    db = await BillingDB.open(pg_url)
    first = live_cdr(1, usage_s=40, caller="")
    concurrent = dataclasses.replace(first, call_id="sess-1b")
    mediated = dataclasses.replace(
        live_cdr(2, usage_s=30, caller=""), source="pbx", call_id="pbx-2",
        charge=CHARGE_MEDIATED, extra={},
    )  # fmt: skip
    charged = live_cdr(2, usage_s=30, caller="")
    with_caller = live_cdr(3, usage_s=20)
    retry = dataclasses.replace(with_caller, call_id="sess-3-retry")
    await db.store_cdrs([first, concurrent, charged, mediated, with_caller, retry])
    doubles = by_kind(await run(context(db, redis, sources())))[Kind.DOUBLE_CHARGE]
    assert sorted(tuple(sorted((d.call_id, d.detail["first_call_id"]))) for d in doubles) == [
        ("pbx-2", "sess-2"),
        ("sess-3", "sess-3-retry"),
    ]
    await db.close()


async def test_a_source_run_reports_only_doubles_of_its_own_cdrs(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """`assure --source sw1` checks only that source's CDRs and its live ones
    (docs/assurance.md); it listed every double charge of the period, two other
    switches' debits of one call among them, as if sw1's records were at fault."""
    db = await BillingDB.open(pg_url)
    call = live_cdr(1, usage_s=40)
    pbx, pbx2 = (
        dataclasses.replace(
            call, source=name, call_id=f"{name}-1", charge=CHARGE_MEDIATED, extra={}
        )
        for name in ("pbx", "pbx2")
    )
    await db.store_cdrs([pbx, pbx2])
    src = sources()
    src = dataclasses.replace(
        src,
        switch={**src.switch, "pbx": ("ledger", "radius", "call_id", True),
                "pbx2": ("ledger", "radius", "call_id", True)},
    )  # fmt: skip
    ctx = context(db, redis, src)

    async def doubles(source: str | None) -> list[tuple[str, str]]:
        found = by_kind(await run(ctx, params(source=source)))
        return [(d.source, d.detail["first_source"]) for d in found.get(Kind.DOUBLE_CHARGE, [])]

    assert await doubles(None) == [("pbx2", "pbx")]
    assert await doubles("pbx") == [("pbx2", "pbx")]
    assert await doubles(SWITCH) == []
    # A live session is among sw1's live CDRs: a double charge with it is in scope,
    # reported once (it is one extra charge, whichever debit it is the twin of).
    await db.store_cdrs([call])
    assert await doubles(SWITCH) == [("radius", "pbx")]
    assert sorted(await doubles(None)) == [("pbx2", "pbx"), ("radius", "pbx")]
    await db.close()


_FLAT_TARIFF = """
[tariff]
id = "flat2"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
UK = ["44"]

[rates.FLAT]
connect_fee = "0"
rate = "1.20"
unit = "60s"
increment = "1s"

[plans.FLAT]
[[plans.FLAT.rates]]
destinations = ["UK"]
rate = "FLAT"

[[profiles]]
subject = "*any"
plan = "FLAT"
from = 2020-01-01T00:00:00Z
"""


async def test_a_live_call_without_caller_id_still_meets_its_switch_record_and_its_double(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """A gateway that sends no Calling-Station-Id (the README's radclient example does
    not) leaves the live CDR without caller; the switch's own record has the caller.
    The switch record under another id is the same call (account, callee, start), not
    an uncharged call plus a call unknown to the switch; the same call also debited
    from a ledger-charging file is a double charge. Without caller ID on both sides of
    one source they stay two calls (a trunk's concurrent calls), as before."""
    db = await BillingDB.open(pg_url)
    anonymous = live_cdr(1, usage_s=50, caller="")
    on_switch = switch_cdr(
        anonymous, caller="+4930111111", call_id="SW-OTHER-1", start_ms=anonymous.start_ms - 2000
    )
    charged = live_cdr(2, usage_s=45, caller="")
    debited = dataclasses.replace(
        charged, source="pbx", call_id="pbx-2", caller="+4930111111", charge=CHARGE_MEDIATED,
        extra={}, start_ms=charged.start_ms - 2000,
    )  # fmt: skip
    # Another account's debit of the same callee at the same time: not alice's call.
    bob = dataclasses.replace(debited, call_id="pbx-bob", account_id="bob")
    trunk = live_cdr(3, usage_s=30, caller="")
    concurrent = dataclasses.replace(trunk, call_id="sess-3b")
    await db.store_cdrs([anonymous, on_switch, charged, debited, bob, trunk, concurrent])
    await db.store_cdrs([switch_cdr(trunk), switch_cdr(concurrent), switch_cdr(charged)])
    outcome = await reconcile(context(db, redis), params(), BASE_MS + 86_400_000)
    found = by_kind(outcome.findings)
    assert set(found) == {Kind.DOUBLE_CHARGE}, outcome.findings
    (double,) = found[Kind.DOUBLE_CHARGE]
    # The switch (record_only) matched the live call: the ledger file's debit is the extra.
    assert (double.source, double.call_id, double.money_micros) == (
        "pbx",
        "pbx-2",
        -45 * MICROS_PER_S,
    )
    assert double.detail["first_call_id"] == "sess-2"
    assert double.matched_by == "callee+start (no caller ID)"
    assert outcome.matching == {
        "switch_calls": 4, "live_calls": 4, "matched_by_id": 3,
        "matched_by_caller_callee_start": 0, "matched_by_callee_start_no_caller_id": 1,
    }  # fmt: skip
    await db.close()


async def test_an_answered_switch_call_stored_after_its_failed_branch_matches_its_live_cdr(
    pg_url: str, redis: aioredis.Redis
) -> None:
    """Serial forking in a Kamailio acc log of calls charged live: the failed branch is
    an unanswered switch record with the Call-ID, the answered call is stored as
    <id>#answered (extra switch_call_id, docs/mediation.md). The live CDR has the
    Call-ID: the unanswered record took it (a 0 s vs 60 s duration mismatch) and the
    answered call, matched by nothing, was reported as never charged."""
    db = await BillingDB.open(pg_url)
    live = live_cdr(1, usage_s=60)
    failed = switch_cdr(live, usage_s=0, answer_ms=0, status="unanswered", cost_micros=0,
                        end_ms=live.start_ms)  # fmt: skip
    answered = switch_cdr(
        live, call_id=f"{live.call_id.upper()}#answered",
        extra={"switch_call_id": live.call_id.upper()},
    )  # fmt: skip
    await db.store_cdrs([live, failed, answered])
    outcome = await reconcile(context(db, redis), params(), 0)
    assert outcome.findings == []
    assert outcome.matching["matched_by_id"] == 1
    await db.close()
