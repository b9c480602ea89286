"""own_timer tells each call a Session-Timeout backed by money no other call was told
(held at authorize, as hold_all): a cut backend that never confirms (Kamailio
JSON-RPC down) leaves every call running to what it was told, and a prepaid account
still never ends below zero (DESIGN invariant 2). From the reviewer's reproducer."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from sessions_harness import EUR, T0_MS, Clock, RecordingCutter, add_account, call, read_cdrs

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.service import Sessions
from tests.sessions.test_credit_modes import PER_S, answer, balance, cutter, sessions, stop  # noqa: F401


async def test_own_timer_calls_obeying_their_session_timeouts_never_take_prepaid_below_zero(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)  # 100 s; max_session_s 60
    cutter.fail_next = 10_000  # the cut backend never answers
    infos = [call("o1", client="own"), call("o2", client="own")]
    answers = await asyncio.gather(*(sessions.authorize(i) for i in infos))
    assert all(isinstance(a, Authorized) for a in answers)
    told = [a.session_timeout_s for a in answers]  # type: ignore[union-attr]
    # Never the same money told twice: the Session-Timeouts sum to what 1.00 pays for.
    assert sorted(told) == [40, 60]
    assert sum(a.credit_micros for a in answers) == 1 * EUR  # type: ignore[union-attr]
    assert await balance(ledger) == (1 * EUR, 1 * EUR, 2)
    recs = [await sessions.store.find(i.session_id) for i in infos]
    assert sum(r.credit_micros for r in recs if r is not None) == 1 * EUR
    for info in infos:
        await answer(sessions, info, T0_MS)
    for second in range(1, 70):
        clock.now_ms = T0_MS + second * 1000
        await sessions.cutter.run_once()
    # Each gateway ends its call at the Session-Timeout it was told (as Kamailio does
    # with its dialog timeout): it obeyed everything it heard.
    for info, t in zip(infos, told, strict=True):
        await stop(sessions, clock, info, T0_MS, t)
    cdrs = await read_cdrs(redis)
    assert {c.charge_reason for c in cdrs} == {""}, [(c.status, c.charge_reason) for c in cdrs]
    assert sorted(c.charged_micros for c in cdrs) == [40 * PER_S, 60 * PER_S]
    assert await balance(ledger) == (0, 0, 0)
