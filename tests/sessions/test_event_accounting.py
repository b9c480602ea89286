"""Switches that account events, not durations (Kamailio's acc): Stops without
Acct-Session-Time, Failed calls, whole-second Event-Timestamps.

Real Redis, real Ledger, real tariff; each rule on the fused (single Redis) and the
step-by-step (cluster) path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger, Status
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.spool import entry_to_report, report_to_entry
from chargingd.sessions.store import ORPHANS

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(redis: aioredis.Redis, clock: Clock) -> Ledger:
    return await make_ledger(redis, clock)


@pytest.fixture(params=["fused", "step_by_step"])
def sessions(
    request: pytest.FixtureRequest,
    redis: aioredis.Redis,
    ledger: Ledger,
    clock: Clock,
    tmp_path: Path,
) -> Sessions:
    s = make_sessions(redis, ledger, clock, tmp_path)
    if request.param == "step_by_step":
        s.step_by_step()
    return s


async def test_stop_without_session_time_is_charged_from_the_event_timestamps(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    await add_account(ledger)
    info = call("k1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))  # whole seconds
    clock.advance(42.3)
    stop = usage(info, UsageKind.STOP, 0, T0_MS + 42_000, usage_reported=False, sip_code=200)
    await sessions.account(stop)
    await sessions.account(stop)  # retransmitted: charged once
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 42, 42 * PER_S)
    assert cdr.extra["usage_from"] == "event_timestamps"  # the CDR says where it came from
    assert cdr.extra["sip_code"] == "200"
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - 42 * PER_S
    assert account.reserved_micros == 0


async def test_a_reported_session_time_wins_over_the_timestamps(
    sessions: Sessions, redis: aioredis.Redis, ledger: Ledger, clock: Clock
) -> None:
    await add_account(ledger)
    info = call("k2")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    clock.advance(50)
    await sessions.account(usage(info, UsageKind.STOP, 30, T0_MS + 50_000))
    (cdr,) = await read_cdrs(redis)
    assert cdr.duration_s == 30 and "usage_from" not in cdr.extra


async def test_stop_without_session_time_and_without_start_is_unanswered(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    """A Stop of a SIP INVITE that failed (487 after a CANCEL): no Start, no answer."""
    await add_account(ledger)
    info = call("k3")
    await sessions.authorize(info)
    clock.advance(3)
    await sessions.account(
        usage(info, UsageKind.STOP, 0, T0_MS + 3000, usage_reported=False, sip_code=487)
    )
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros, cdr.answer_ms) == (
        "unanswered",
        0,
        0,
        0,
    )
    assert cdr.extra["sip_code"] == "487"
    assert (await ledger.get_account("acc1")).reserved_micros == 0


async def test_failed_bye_after_an_answer_is_still_charged(
    sessions: Sessions, redis: aioredis.Redis, ledger: Ledger, clock: Clock
) -> None:
    """A Stop with a SIP code >= 300 after a Start is a BYE that failed (481, 408):
    the call was answered and talked; it is charged, not closed as unanswered."""
    await add_account(ledger)
    info = call("k4")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    clock.advance(20)
    await sessions.account(
        usage(info, UsageKind.STOP, 0, T0_MS + 20_000, usage_reported=False, sip_code=481)
    )
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.extra["sip_code"]) == ("normal", 20, "481")


async def test_derived_usage_longer_than_the_call_exists_is_orphaned(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    await add_account(ledger)
    info = call("k5")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    clock.advance(10)
    # The gateway's clock jumped a day between Start and Stop.
    await sessions.account(usage(info, UsageKind.STOP, 0, T0_MS + 86_400_000, usage_reported=False))
    assert await read_cdrs(redis) == []
    (entry,) = await redis.xrange(ORPHANS)
    assert entry[1][b"reason"] == b"invalid_usage"
    assert [s.session_id for s in await sessions.list_sessions()] == ["k5"]  # the reaper's


async def test_failed_call_releases_its_hold_at_once_and_the_redial_goes_through(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    await add_account(ledger, balance_micros=EUR // 2)  # less than one first grant
    info = call("k6")
    first = await sessions.authorize(info)
    assert isinstance(first, Authorized)
    assert (await ledger.get_account("acc1")).reserved_micros == EUR // 2  # all of it
    clock.advance(2)
    failed = usage(info, UsageKind.FAILED, 0, T0_MS + 2000, usage_reported=False, sip_code=486)
    await sessions.account(failed)
    await sessions.account(failed)  # retransmitted
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros, cdr.extra["sip_code"]) == ("unanswered", 0, "486")
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (EUR // 2, 0)
    redial = await sessions.authorize(call("k7"))
    assert isinstance(redial, Authorized)


async def test_failed_call_nobody_authorized_is_neither_adopted_nor_orphaned(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis
) -> None:
    """A switch that also accounts the INVITEs chargingd refused: nothing to charge."""
    await add_account(ledger)
    refused = call("never-authorized")
    await sessions.account(usage(refused, UsageKind.FAILED, 0, T0_MS, usage_reported=False))
    assert await read_cdrs(redis) == []
    assert await redis.xrange(ORPHANS) == []
    assert await sessions.list_sessions() == []


async def test_accounting_of_a_call_refused_here_makes_no_session_and_no_cdr(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    """A gateway that accounts the calls chargingd refused with a Start and a Stop of no
    usage (not Failed): as a Failed, no session, no CDR. A refused call the gateway
    connected anyway is still charged: in full, as debt (overrun)."""
    await add_account(ledger, balance_micros=0)
    refused = call("refused")
    assert not isinstance(await sessions.authorize(refused), Authorized)
    await sessions.account(usage(refused, UsageKind.START, 0, clock.now_ms))
    assert await sessions.list_sessions() == []
    await sessions.account(usage(refused, UsageKind.STOP, 0, clock.now_ms))
    assert await read_cdrs(redis) == []
    assert await redis.xrange(ORPHANS) == []
    connected = call("connected")
    assert not isinstance(await sessions.authorize(connected), Authorized)
    await sessions.account(usage(connected, UsageKind.START, 0, clock.now_ms))
    clock.advance(30)
    await sessions.account(usage(connected, UsageKind.STOP, 30, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.status, cdr.charged_micros) == ("connected", "overrun", 30 * PER_S)
    assert (cdr.charge_reason, cdr.extra.get("refused_here")) == ("overrun", "1")
    acc = await ledger.get_account("acc1")
    assert (acc.balance_micros, acc.reserved_micros, acc.live_sessions) == (-30 * PER_S, 0, 0)


async def test_a_refused_call_connected_anyway_is_overrun_with_money_there(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    """Refused for another reason than money (max_calls), the account able to pay: the
    gateway connected it anyway, so it was allowed nothing: overrun, charged in full.
    An adopted call nobody refused stays a normal CDR."""
    await add_account(ledger, max_calls=1)
    assert isinstance(await sessions.authorize(call("first")), Authorized)
    second = call("second")
    assert not isinstance(await sessions.authorize(second), Authorized)  # too many calls
    await sessions.account(usage(second, UsageKind.START, 0, clock.now_ms))
    clock.advance(30)
    await sessions.account(usage(second, UsageKind.STOP, 30, clock.now_ms))
    stranger = call("never-asked")  # accounting without any authorize: adopted
    await sessions.account(usage(stranger, UsageKind.STOP, 20, clock.now_ms))
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    got = cdrs["second"]
    assert (got.status, got.charge_reason, got.charged_micros) == ("overrun", "overrun", 30 * PER_S)
    assert got.extra.get("refused_here") == "1"
    other = cdrs["never-asked"]
    assert (other.status, other.charge_reason, other.charged_micros) == ("normal", "", 20 * PER_S)
    assert "refused_here" not in other.extra and other.extra["adopted"] == "1"


async def test_accounting_of_a_call_refused_for_a_blocked_account_makes_no_session(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    """A call refused because its account is not active (blocked, suspended: refused
    before any reserve, so the ledger remembers no refusal for it) is a refused call
    too: its Start and its Stop of no usage make no session and no CDR."""
    await add_account(ledger)
    await ledger.set_status("acc1", Status.BLOCKED, who="fraud", why="rule", reason="fraud")
    refused = call("refused")
    assert not isinstance(await sessions.authorize(refused), Authorized)
    await sessions.account(usage(refused, UsageKind.START, 0, clock.now_ms))
    assert await sessions.list_sessions() == []
    await sessions.account(usage(refused, UsageKind.STOP, 0, clock.now_ms))
    assert await read_cdrs(redis) == []
    assert await redis.xrange(ORPHANS) == []


async def test_cdr_answer_time_is_never_before_the_start(
    sessions: Sessions, ledger: Ledger, redis: aioredis.Redis, clock: Clock
) -> None:
    """Authorized at x.674 s, answered in the same second: the Start's whole-second
    Event-Timestamp says x.000. The CDR must not say it was answered before it began."""
    await add_account(ledger)
    clock.advance(0.674)
    auth_ms = clock.now_ms
    info = call("k8")
    await sessions.authorize(info)
    clock.advance(0.1)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    clock.advance(5)
    await sessions.account(usage(info, UsageKind.STOP, 5, T0_MS + 5000))
    (cdr,) = await read_cdrs(redis)
    assert cdr.start_ms == auth_ms
    assert cdr.start_ms <= cdr.answer_ms <= cdr.end_ms
    assert cdr.answer_ms == auth_ms


def test_spooled_reports_keep_what_the_gateway_did_not_say() -> None:
    report = usage(call("k9"), UsageKind.FAILED, 0, T0_MS, usage_reported=False, sip_code=404)
    assert entry_to_report(report_to_entry(report)) == report
