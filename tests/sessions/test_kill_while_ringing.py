"""own_timer: a kill sent while the call rings cannot be confirmed (Kamailio's
dlg.end_dlg ends confirmed dialogs only); once the Start comes the kill is sent
again (with its retries), and a call whose kill was never sent keeps its own timer.
From the reviewer's reproducer."""

from __future__ import annotations

import redis.asyncio as aioredis
from sessions_harness import EUR, T0_MS, Clock, RecordingCutter, add_account, call, read_cdrs

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import DEADLINES, member
from tests.sessions.test_credit_modes import answer, cutter, sessions, stop  # noqa: F401


async def test_own_timer_call_killed_while_ringing_is_killed_once_answered(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=int(0.40 * EUR))
    info = call("o1", client="own")
    assert isinstance(await sessions.authorize(info), Authorized)
    cutter.fail_next = 3  # disconnect_retries = 3: every attempt unconfirmed (early dialog)
    assert not await sessions.kill_session("o1")
    for second in range(1, 30):  # the cutter retries with back-off, then gives up
        clock.now_ms = T0_MS + second * 1000
        await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 3
    answer_ms = T0_MS + 30_000  # now the call is answered
    clock.now_ms = answer_ms
    await answer(sessions, info, answer_ms)
    # Something is due for this call again after the answer: the kill, sent again.
    score = await redis.zscore(DEADLINES, member("acc1", "o1"))
    assert score is not None and score > answer_ms, score
    clock.now_ms = int(score)
    await sessions.cutter.run_once()
    assert [why for _, why in cutter.disconnects] == ["killed"] * 4
    await stop(sessions, clock, info, answer_ms, 2)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.extra["cut_confirmed"]) == ("killed", "1")


async def test_own_timer_call_answered_gets_its_timer_at_the_end_of_its_money(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=int(0.40 * EUR))
    info = call("o1", client="own")
    assert isinstance(await sessions.authorize(info), Authorized)
    answer_ms = T0_MS + 30_000
    clock.now_ms = answer_ms
    await answer(sessions, info, answer_ms)
    # 40 s held at authorize; the timer at its end (whole-second answer time: +999 ms).
    assert await redis.zscore(DEADLINES, member("acc1", "o1")) == answer_ms + 40_999
