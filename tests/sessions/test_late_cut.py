"""A credit cut that leaves late (issue 9 finding 1, the cut tolerance "after a cut").

The cutter can send a cut seconds after the paid second: it waited on another
gateway's Disconnect exchange (1 + 2 + 4 + 8 s when that gateway does not answer), or
the daemon was busy. A gateway that obeys such a cut at once reports more than the paid
usage + the tolerance; it ran to the cut chargingd sent, so it pays what was paid and a
prepaid account ends at zero, not in debt. A gateway that confirmed a cut and talked on
is still an overrun, even when a later cut is sent again. Real Redis and Ledger, a moved
clock, both paths (fused scripts, step by step).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind
from chargingd.sessions.service import Sessions

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def cutter() -> RecordingCutter:
    return RecordingCutter()


@pytest.fixture(params=["fused", "stepwise"])
def sessions(
    request: pytest.FixtureRequest,
    redis: aioredis.Redis,
    ledger: Ledger,
    clock: Clock,
    tmp_path: Path,
    cutter: RecordingCutter,
) -> Sessions:
    made = make_sessions(redis, ledger, clock, tmp_path, cutter)
    if request.param == "stepwise":
        made.step_by_step()
    return made


async def cut_late(sessions: Sessions, clock: Clock, sid: str, cut_at_ms: int) -> CallInfo:
    """1 EUR pays 100 s (deadline at answer + 100 s); the cutter fires at ``cut_at_ms``."""
    info = call(sid)
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.now_ms = cut_at_ms
    assert await sessions.cutter.run_once() == 1
    return info


async def test_obeying_a_cut_that_left_late_is_charged_what_was_paid(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = await cut_late(sessions, clock, "s1", ANSWER_MS + 109_600)  # 9.6 s late
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut"]
    clock.now_ms = ANSWER_MS + 110_000
    await sessions.account(usage(info, UsageKind.STOP, 111, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("credit_cut", 111, 111 * PER_S)
    assert (cdr.charged_micros, cdr.charge_reason) == (1 * EUR, "cut_tolerance")
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)


async def test_past_the_tolerance_after_a_late_cut_is_an_overrun(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = await cut_late(sessions, clock, "s1", ANSWER_MS + 109_600)
    clock.now_ms = ANSWER_MS + 113_000
    await sessions.account(usage(info, UsageKind.STOP, 112, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == (
        "overrun",
        112 * PER_S,
        "overrun",
    )
    account = await ledger.get_account("acc1")
    assert account.balance_micros == -12 * PER_S


async def test_a_cut_sent_again_after_one_confirmed_keeps_the_first_cut_time(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """The gateway acknowledged the cut at the paid second and talked on; its next
    Interim makes the cutter cut again at 130 s, and it stops right after that second
    cut: it ran 30 s past the cut it confirmed, an overrun (debt), not a late cut."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = await cut_late(sessions, clock, "s1", ANSWER_MS + 100_200)
    clock.now_ms = ANSWER_MS + 120_000
    await sessions.account(usage(info, UsageKind.INTERIM, 120, clock.now_ms))
    clock.now_ms = ANSWER_MS + 130_000
    assert await sessions.cutter.run_once() == 1
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut", "credit_cut"]
    clock.now_ms = ANSWER_MS + 131_000
    await sessions.account(usage(info, UsageKind.STOP, 131, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros) == ("overrun", 131 * PER_S)
    account = await ledger.get_account("acc1")
    assert account.balance_micros == -31 * PER_S
