"""hold_all: the hold behind the Session-Timeout is leased again at the Start, so a
call that rang longer than the stale window keeps its money until its Session-Timeout
(counted from the answer) plus reap_grace_s; that money is never given to another
call meanwhile. From the reviewer's reproducer."""

from __future__ import annotations

import redis.asyncio as aioredis
from sessions_harness import EUR, T0_MS, Clock, RecordingCutter, add_account, call

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.service import Sessions
from tests.sessions.test_credit_modes import answer, cutter, sessions  # noqa: F401


async def test_hold_all_hold_outlives_the_session_timeout_counted_from_the_answer(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=int(0.60 * EUR))  # 60 s = max_session_s
    first = await sessions.authorize(call("c1", client="kam"))
    assert isinstance(first, Authorized) and first.session_timeout_s == 60
    answer_ms = T0_MS + 40_000  # rang 40 s (stale window here: 2 x 10 s)
    clock.now_ms = answer_ms
    await answer(sessions, call("c1", client="kam"), answer_ms)
    # 55 s into c1's 60 s Session-Timeout (the reaper would not touch it before 70 s):
    clock.now_ms = answer_ms + 55_000
    await sessions.reaper.run_once()
    assert (await sessions.store.find("c1")).state == "live"  # type: ignore[union-attr]
    second = await sessions.authorize(call("c2", client="kam"))
    # c1's money is still promised to c1: nothing is left for c2.
    assert not isinstance(second, Authorized), second
