"""A top-up between two attempts of a credit cut extends the call (issue 4 item 5).

The gateway did not confirm the first Disconnect-Request (a NAK such as 506, or the
datagram lost); the cutter retries after its back-off. Money that arrives meanwhile
must stop the retries and move the deadline, like a top-up before the first attempt:
the cutter re-checks the money before each attempt of a credit cut, and the top-up
re-times such a call (CoA). Real Redis and Ledger, a moved clock.
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
from chargingd.sessions.store import DEADLINES, member

PER_S = 10_000  # 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def sessions(on_both_paths: MakeSessions, cutter: RecordingCutter) -> Sessions:
    return on_both_paths(cutter, disconnect_retries=5, disconnect_backoff_s=1.0)


async def cut_refused_once(sessions: Sessions, clock: Clock, cutter: RecordingCutter) -> CallInfo:
    """1 EUR pays 100 s; the cut at 100 s is not confirmed (retry due at 101 s)."""
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    cutter.fail_next = 1
    clock.now_ms = ANSWER_MS + 100_000
    assert await sessions.cutter.run_once() == 1
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut"]
    return info


async def test_topup_on_another_daemon_stops_the_retries_of_a_credit_cut(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """No on_topup here (the money came through another daemon): the retry re-checks."""
    info = await cut_refused_once(sessions, clock, cutter)
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    for at_s in (101, 103, 107, 115):  # when the retries would have gone out
        clock.now_ms = ANSWER_MS + at_s * 1000
        await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 1
    moved = await redis.zscore(DEADLINES, member("acc1", "s1"))
    assert moved is not None and moved > clock.now_ms
    clock.now_ms = ANSWER_MS + 150_000
    await sessions.account(usage(info, UsageKind.STOP, 150, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros) == ("normal", 150 * PER_S)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (6 * EUR - 150 * PER_S, 0)


async def test_topup_retimes_a_call_whose_credit_cut_is_unconfirmed(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await cut_refused_once(sessions, clock, cutter)
    clock.now_ms = ANSWER_MS + 100_500
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 1
    assert [ref.session_id for ref, _ in cutter.timeouts] == ["s1"]  # the CoA
    clock.now_ms = ANSWER_MS + 101_000
    await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 1


async def test_a_confirmed_credit_cut_is_not_retimed_by_a_topup(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter
) -> None:
    """The gateway acknowledged the cut: the call is ending, nothing to tell it."""
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.now_ms = ANSWER_MS + 100_000
    assert await sessions.cutter.run_once() == 1
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 0
    assert cutter.timeouts == []


@pytest.fixture(autouse=True)
async def _account(ledger: Ledger) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
