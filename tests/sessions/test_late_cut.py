"""A credit cut that leaves late (issue 9 finding 1, the cut tolerance "after a cut").

The cutter can send a cut seconds after the paid second: it waited on another
gateway's Disconnect exchange (1 + 2 + 4 + 8 s when that gateway does not answer), or
the daemon was busy. A gateway that obeys such a cut at once reports more than the paid
usage + the tolerance; it ran to the cut chargingd sent, so it pays what was paid and a
prepaid account ends at zero, not in debt, as long as it also stayed within the
Session-Timeout it was told. A gateway that confirmed a cut and talked on is still an
overrun, even when a later cut is sent again. Real Redis and Ledger, a moved
clock, both paths (fused scripts, step by step).
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    MakeSessions,
    RecordingCutter,
    add_account,
    call,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind
from chargingd.sessions.service import Sessions

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def sessions(on_both_paths: MakeSessions, cutter: RecordingCutter) -> Sessions:
    return on_both_paths(cutter)


async def stop(sessions: Sessions, clock: Clock, info: CallInfo, usage_s: int) -> None:
    clock.now_ms = ANSWER_MS + usage_s * 1000
    await sessions.account(usage(info, UsageKind.STOP, usage_s, clock.now_ms))


async def two_calls(sessions: Sessions, clock: Clock) -> CallInfo:
    """1 EUR: s1 holds 75 s and is told 100 s (the whole balance); s2 gets the 0.25 left
    (told 25 s) and ends at 26 s. s1's Interim at 60 s finds no money: its deadline is
    at 75 s, within the 100 s its gateway was told."""
    s1, s2 = call("s1"), call("s2")
    clock.now_ms = T0_MS
    first = await sessions.authorize(s1)
    assert isinstance(first, Authorized) and first.session_timeout_s == 100
    second = await sessions.authorize(s2)
    assert isinstance(second, Authorized) and second.session_timeout_s == 25
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(s1, UsageKind.START, 0, ANSWER_MS))
    await sessions.account(usage(s2, UsageKind.START, 0, ANSWER_MS))
    await stop(sessions, clock, s2, 26)
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(s1, UsageKind.INTERIM, 60, clock.now_ms))
    return s1


async def test_obeying_a_cut_that_left_late_is_charged_what_was_paid(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    s1 = await two_calls(sessions, clock)
    clock.now_ms = ANSWER_MS + 84_600  # the cutter fires 9.6 s after s1's paid second
    assert await sessions.cutter.run_once() == 1
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut"]
    await stop(sessions, clock, s1, 86)  # the gateway obeys at once
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert (cdrs["s1"].status, cdrs["s1"].cost_micros) == ("credit_cut", 86 * PER_S)
    assert (cdrs["s1"].charged_micros, cdrs["s1"].charge_reason) == (75 * PER_S, "cut_tolerance")
    assert (cdrs["s2"].status, cdrs["s2"].charged_micros) == ("credit_cut", 25 * PER_S)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)


async def test_past_the_tolerance_after_a_late_cut_is_an_overrun(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    s1 = await two_calls(sessions, clock)
    clock.now_ms = ANSWER_MS + 84_600
    assert await sessions.cutter.run_once() == 1
    await stop(sessions, clock, s1, 87)
    cdr = next(c for c in await read_cdrs(redis) if c.call_id == "s1")
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == ("overrun", 87 * PER_S, "overrun")


async def test_past_its_session_timeout_is_an_overrun_however_late_the_cut(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """One call, told 100 s (all the money): the cut leaves at 109.6 s and the gateway
    stops at 111 s. It ran past the Session-Timeout it was told: an overrun."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.now_ms = ANSWER_MS + 109_600
    assert await sessions.cutter.run_once() == 1
    await stop(sessions, clock, info, 111)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros) == ("overrun", 111 * PER_S)
    account = await ledger.get_account("acc1")
    assert account.balance_micros == -11 * PER_S


async def test_a_cut_sent_again_after_one_confirmed_keeps_the_first_cut_time(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """s1's gateway acknowledged the cut at its paid second (75 s) and talked on; its
    next Interim makes the cutter cut again at 95 s, and it stops right after that:
    it ran 21 s past the cut it confirmed, an overrun (debt), not a late cut."""
    await add_account(ledger, balance_micros=1 * EUR)
    s1 = await two_calls(sessions, clock)
    clock.now_ms = ANSWER_MS + 75_200
    assert await sessions.cutter.run_once() == 1
    clock.now_ms = ANSWER_MS + 90_000
    await sessions.account(usage(s1, UsageKind.INTERIM, 90, clock.now_ms))
    clock.now_ms = ANSWER_MS + 95_000
    assert await sessions.cutter.run_once() == 1
    assert [ref.session_id for ref, _ in cutter.disconnects] == ["s1", "s1"]
    await stop(sessions, clock, s1, 96)
    cdr = next(c for c in await read_cdrs(redis) if c.call_id == "s1")
    assert (cdr.status, cdr.charged_micros) == ("overrun", 96 * PER_S)
