"""Credit control: authorize, Start/Interim/Stop, CDRs (real Redis, real Ledger, real tariff)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    MUNICH,
    T0_MS,
    Clock,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger, Mode, Status
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import ORPHANS, SessionRecord, SessionStore, record_key

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second


@pytest.fixture
def cutter() -> RecordingCutter:
    return RecordingCutter()


@pytest.fixture
def sessions(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path, cutter: RecordingCutter
) -> Sessions:
    return make_sessions(redis, ledger, clock, tmp_path, cutter)


async def test_authorize_reserves_first_grant_and_answers_timeout(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    answer = await sessions.authorize(call("s1"))
    assert answer == Authorized(
        account_id="acc1",
        session_timeout_s=1000,  # 10 EUR at 0.60 a minute
        interim_interval_s=60,
        credit_micros=10 * EUR,
        currency="EUR",
        grant_s=75,  # what the first hold pays for (Diameter's Granted-Service-Unit)
        final=False,
    )
    account = await ledger.get_account("acc1")
    assert account.reserved_micros == 75 * PER_S  # first grant: interim 60 s + margin 15 s
    assert account.balance_micros == 10 * EUR
    rec = await sessions.store.find("s1")
    assert rec is not None
    assert (rec.account_id, rec.callee, rec.destination, rec.plan) == (
        "acc1",
        "+4930123456",
        "DE_BERLIN",
        "retail",
    )
    assert (rec.gateway, rec.client, rec.auth_ms, rec.held_micros) == (
        "10.0.0.1",
        "gw1",
        T0_MS,
        75 * PER_S,
    )
    assert await redis.ttl(record_key("acc1", "s1")) > 0


async def test_session_timeout_capped_by_max_session(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    sessions = make_sessions(redis, ledger, clock, tmp_path, max_session_s=300)
    await add_account(ledger, balance_micros=100 * EUR)
    answer = await sessions.authorize(call("s1"))
    assert isinstance(answer, Authorized)
    assert answer.session_timeout_s == 300


async def test_identity_lookup_order(sessions: Sessions, ledger: Ledger) -> None:
    await add_account(ledger, "by_user", identities=("user:alice",))
    await add_account(ledger, "by_ani", identities=("ani:+4930999888",))
    await add_account(ledger, "trunk", identities=())
    info = call("s1", calling="030 999888", default_account="trunk")
    answer = await sessions.authorize(info)
    assert isinstance(answer, Authorized) and answer.account_id == "by_user"
    ani_first = call("s2", calling="004930999888", lookup=("ani", "user"))
    answer = await sessions.authorize(ani_first)
    assert isinstance(answer, Authorized) and answer.account_id == "by_ani"
    unknown_user = call("s3", user="nobody", calling="+4930111", default_account="trunk")
    answer = await sessions.authorize(unknown_user)
    assert isinstance(answer, Authorized) and answer.account_id == "trunk"


@pytest.mark.parametrize(
    ("setup", "info", "code"),
    [
        ("none", call("r1", user="mallory"), RefusalCode.UNKNOWN_ACCOUNT),
        ("suspended", call("r2"), RefusalCode.SUSPENDED),
        ("empty", call("r3"), RefusalCode.INSUFFICIENT_CREDIT),
        ("ok", call("r4", called="0033123456789"), RefusalCode.DESTINATION_NOT_ALLOWED),
        ("ok", call("r5", called="not-a-number"), RefusalCode.DESTINATION_NOT_ALLOWED),
        ("no_tariff", call("r6"), RefusalCode.SYSTEM_ERROR),
        ("one_call", call("r7"), RefusalCode.TOO_MANY_CALLS),
    ],
)
async def test_authorize_refusals(
    sessions: Sessions, ledger: Ledger, setup: str, info: object, code: RefusalCode
) -> None:
    await add_account(
        ledger,
        balance_micros=0 if setup == "empty" else 10 * EUR,
        tariff="gold" if setup == "no_tariff" else "retail",
        max_calls=1 if setup == "one_call" else 0,
    )
    if setup == "suspended":
        await ledger.set_status("acc1", Status.SUSPENDED, who="test")
    if setup == "one_call":
        assert isinstance(await sessions.authorize(call("first")), Authorized)
    before = await ledger.get_account("acc1")
    answer = await sessions.authorize(info)  # type: ignore[arg-type]
    assert isinstance(answer, Refused)
    assert answer.code is code
    after = await ledger.get_account("acc1")
    assert (after.balance_micros, after.reserved_micros) == (
        before.balance_micros,
        before.reserved_micros,
    )
    assert await sessions.store.find(info.session_id) is None  # type: ignore[attr-defined]


async def test_interim_commits_cumulative_cost_once(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    await add_account(ledger)
    info = call("s1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    interim = usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000)
    for _ in range(3):  # retransmissions (new RADIUS identifier, same usage)
        await sessions.account(interim)
    account = await ledger.get_account("acc1")
    assert account.debits_micros == 60 * PER_S
    assert account.balance_micros == 10 * EUR - 60 * PER_S
    # A late, older interim changes nothing; a newer one debits only the difference.
    await sessions.account(usage(info, UsageKind.INTERIM, 30, T0_MS + 30_000))
    await sessions.account(usage(info, UsageKind.INTERIM, 120, T0_MS + 120_000))
    await sessions.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    account = await ledger.get_account("acc1")
    assert account.debits_micros == 120 * PER_S
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.last_usage_s == 120
    # Renewed hold: the next grant (60 s old call -> 75 s grant) on top of the debit.
    assert account.reserved_micros == rec.held_micros == 75 * PER_S


async def test_stop_writes_exactly_one_cdr(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    await add_account(ledger)
    info = call("s1", calling="sip:+4940555666@10.0.0.1", called=MUNICH)
    await sessions.authorize(info)
    clock.advance(5)
    answer_ms = clock.now_ms
    await sessions.account(usage(info, UsageKind.START, 0, answer_ms))
    await sessions.account(usage(info, UsageKind.INTERIM, 60, answer_ms + 60_000))
    stop = usage(
        info,
        UsageKind.STOP,
        61,
        answer_ms + 61_000,
        disconnect_cause=16,
        terminate_cause="User-Request",
    )
    for _ in range(3):  # retransmitted Stop
        await sessions.account(stop)
    await sessions.account(usage(info, UsageKind.INTERIM, 60, answer_ms + 60_000))  # late
    cdrs = await read_cdrs(redis)
    assert len(cdrs) == 1
    cdr = cdrs[0]
    expected_cost = 100_000 + 2 * 1_200_000  # connect fee + two started minutes
    assert cdr.source == "radius" and cdr.call_id == "s1" and cdr.account_id == "acc1"
    assert (cdr.caller, cdr.callee, cdr.destination) == ("+4940555666", "+4989123456", "DE")
    assert (cdr.start_ms, cdr.answer_ms, cdr.end_ms) == (T0_MS, answer_ms, answer_ms + 61_000)
    assert (cdr.duration_s, cdr.billed_s, cdr.cost_micros) == (61, 120, expected_cost)
    assert (cdr.currency, cdr.tariff, cdr.gateway) == ("EUR", "retail", "10.0.0.1")
    assert (cdr.disconnect_cause, cdr.status) == (16, "normal")
    assert cdr.extra["terminate_cause"] == "User-Request"
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - expected_cost
    assert account.debits_micros == expected_cost
    assert account.reserved_micros == 0
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.state == "closed"
    assert await sessions.list_sessions() == []


async def test_unanswered_call_costs_nothing(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    info = call("s1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.STOP, 0, T0_MS + 9000, disconnect_cause=19))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros, cdr.answer_ms) == ("unanswered", 0, 0)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR, 0)


async def test_overrun_is_charged_and_flagged(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    """A gateway that ignores Session-Timeout and the cut: the debt is real."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    await sessions.account(usage(info, UsageKind.STOP, 300, T0_MS + 300_000))
    (cdr,) = await read_cdrs(redis)
    assert cdr.status == "overrun"
    assert cdr.cost_micros == 300 * PER_S
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 1 * EUR - 300 * PER_S


async def test_unknown_session_is_adopted_and_charged(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    info = call("elsewhere")  # authorized by another system: no record here
    await sessions.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    await sessions.account(usage(info, UsageKind.STOP, 90, T0_MS + 90_000))
    await sessions.account(usage(info, UsageKind.STOP, 90, T0_MS + 90_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.account_id, cdr.duration_s, cdr.cost_micros) == ("acc1", 90, 90 * PER_S)
    assert cdr.extra["adopted"] == "1"
    assert cdr.answer_ms == T0_MS
    account = await ledger.get_account("acc1")
    assert account.debits_micros == 90 * PER_S and account.reserved_micros == 0


async def test_accounting_without_account_goes_to_orphans(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    info = call("lost", user="ghost")
    await sessions.account(usage(info, UsageKind.STOP, 42, T0_MS + 42_000))
    entries = await redis.xrange(ORPHANS)
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"reason"] == b"unknown_account"
    assert fields[b"call.session_id"] == b"lost"
    assert (fields[b"kind"], fields[b"usage_s"]) == (b"stop", b"42")
    assert await read_cdrs(redis) == []


async def test_postpaid_uses_credit_limit(sessions: Sessions, ledger: Ledger) -> None:
    await ledger.create_account(
        "post",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=0,
        credit_limit_micros=2 * EUR,
        tariff="retail",
        identities=("user:bob",),
        who="test",
    )
    answer = await sessions.authorize(call("p1", user="bob"))
    assert isinstance(answer, Authorized)
    assert answer.session_timeout_s == 200 and answer.credit_micros == 2 * EUR
    assert answer.postpaid  # the Accept says "credit" (h323-billing-model=0)


async def test_mode_change_is_seen_by_the_next_authorize(
    sessions: Sessions, ledger: Ledger
) -> None:
    """The second authorize takes the cached (fused) path; a mode change must reach it."""
    await add_account(ledger)
    first = await sessions.authorize(call("m1"))
    assert isinstance(first, Authorized) and not first.postpaid
    await ledger.update_account("acc1", mode=Mode.POSTPAID, credit_limit_micros=EUR, who="t")
    second = await sessions.authorize(call("m2"))
    assert isinstance(second, Authorized) and second.postpaid
    await ledger.update_account("acc1", mode=Mode.PREPAID, who="t")
    third = await sessions.authorize(call("m3"))
    assert isinstance(third, Authorized) and not third.postpaid


async def test_replayed_access_request_holds_once(sessions: Sessions, ledger: Ledger) -> None:
    await add_account(ledger, max_calls=1)
    first = await sessions.authorize(call("s1"))
    again = await sessions.authorize(call("s1"))  # retransmitted Access-Request
    assert isinstance(first, Authorized) and first == again
    account = await ledger.get_account("acc1")
    assert account.reserved_micros == 75 * PER_S
    assert len(await sessions.list_sessions()) == 1


async def test_reused_session_id_after_close_is_refused(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    info = call("s1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.STOP, 10, T0_MS + 10_000))
    answer = await sessions.authorize(info)
    assert isinstance(answer, Refused) and answer.code is RefusalCode.SYSTEM_ERROR
    assert len(await read_cdrs(redis)) == 1
    assert (await ledger.get_account("acc1")).reserved_micros == 0


async def test_unchargeable_accounting_is_kept_as_orphan(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    bad = call("bad\x01id")  # the ledger refuses non-printable session ids
    await sessions.account(usage(bad, UsageKind.STOP, 10, T0_MS + 10_000))
    foreign = call("f1", called="+33123456789")  # no rate for France
    await sessions.account(usage(foreign, UsageKind.STOP, 10, T0_MS + 10_000))
    reasons = sorted(f[b"reason"] for _, f in await redis.xrange(ORPHANS))
    assert reasons == [b"destination_not_allowed", b"invalid_session_id"]
    assert (await ledger.get_account("acc1")).debits_micros == 0


async def test_interim_racing_stop_charges_the_stop_once(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    info = call("s1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    interim = usage(info, UsageKind.INTERIM, 120, T0_MS + 120_000)
    stop = usage(info, UsageKind.STOP, 121, T0_MS + 121_000)
    await asyncio.gather(sessions.account(interim), sessions.account(stop), sessions.account(stop))
    (cdr,) = await read_cdrs(redis)
    account = await ledger.get_account("acc1")
    assert cdr.cost_micros == account.debits_micros == 121 * PER_S
    assert account.reserved_micros == 0


async def test_postpaid_at_credit_limit_is_refused_for_credit(
    sessions: Sessions, ledger: Ledger
) -> None:
    await ledger.create_account(
        "post",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=0,
        credit_limit_micros=1 * EUR,
        tariff="retail",
        identities=("user:bob",),
        who="test",
    )
    info = call("p1", user="bob")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.STOP, 100, T0_MS + 100_000))
    assert (await ledger.get_account("post")).status is Status.SUSPENDED
    answer = await sessions.authorize(call("p2", user="bob"))
    assert isinstance(answer, Refused) and answer.code is RefusalCode.INSUFFICIENT_CREDIT


async def test_adopted_stop_is_not_an_overrun(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    await sessions.account(usage(call("x"), UsageKind.STOP, 30, T0_MS + 30_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros, cdr.extra["adopted"]) == ("normal", 30 * PER_S, "1")


async def test_grants_grow_with_the_calls_age(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    await add_account(ledger, balance_micros=100 * EUR)
    info = call("long")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    held = []
    for usage_s in (60, 600, 1800):
        clock.now_ms = T0_MS + usage_s * 1000  # usage never runs ahead of the clock
        await sessions.account(usage(info, UsageKind.INTERIM, usage_s, T0_MS + usage_s * 1000))
        held.append((await ledger.get_account("acc1")).reserved_micros)
    # first grant 75 s, then half the call's age (300 s), capped at max_grant_s (600 s)
    assert held == [75 * PER_S, 300 * PER_S, 600 * PER_S]
    rec = await sessions.store.find("long")
    assert rec is not None and rec.paid_usage_s == 1800 + 600 and rec.limited == 0


@pytest.mark.parametrize("batch", [True, False])
async def test_store_reloads_its_scripts_after_script_flush(
    redis: aioredis.Redis, batch: bool
) -> None:
    """Redis restarted without its script cache: NOSCRIPT is handled in both send paths."""
    store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=7200, batch_commands=batch)
    rec = SessionRecord(
        session_id="s1",
        account_id="acc1",
        user_name="alice",
        caller="+4940555666",
        callee="+4930123456",
        destination="DE_BERLIN",
        plan="retail",
        currency="EUR",
        gateway="10.0.0.1",
        client="gw1",
        auth_ms=T0_MS,
    )
    await redis.script_flush()
    assert await store.create(rec) is True
    assert await store.create(rec) is False  # replay keeps the first record
    await redis.script_flush()
    state, usage_s, fresh = await store.touch("acc1", "s1", usage_s=42, now_ms=T0_MS + 1)
    assert (state, usage_s) == ("live", 42)
    assert fresh is not None and fresh.last_seen_ms == T0_MS + 1
    assert await store.locate("s1") == "acc1"
