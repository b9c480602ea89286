"""An Interim that says when the call connected moves the answer a Start at setup gave
it (the Cisco VSA dialect: docs/radius.md "Start at setup"), later only, and the
deadline with it. Both paths apply one rule: the Interim noted on a record the process
holds (sessions/noting.py) and session_touch.lua (a record it does not hold: another
daemon's call). Real Redis, real Ledger; two Sessions objects stand for two daemons."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from sessions_harness import BERLIN_PER_S, add_account, call, make_ledger, make_sessions, usage

from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions


async def _daemon(redis: aioredis.Redis, clock: Clock, path: Path) -> Sessions:
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, path)
    await sessions.store.load_scripts()
    return sessions


# (seconds after the Start the Interim comes, its usage, the answer it says in ms after
# the Start (0: none), usage reported before it) -> the answer after it, ms after the Start
CASES = {
    "connect_interim_moves": (4, 0, 3_500, 0, 3_500),
    "talk_interim_moves": (9, 5, 3_000, 0, 3_000),
    "never_past_now_minus_talk": (9, 5, 6_000, 0, 4_000),  # a gateway clock ahead of ours
    "never_earlier": (4, 0, -500, 0, 0),
    "no_news_once_talk_is_on_record": (20, 0, 19_000, 5, 0),
    "nothing_said": (4, 3, 0, 0, 0),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_an_interim_moves_the_answer_the_same_on_both_paths(
    redis: aioredis.Redis, tmp_path: Path, case: str
) -> None:
    after_s, usage_s, said_ms, before_s, expected_ms = CASES[case]
    clock = Clock()
    a = await _daemon(redis, clock, tmp_path / "a")
    b = await _daemon(redis, clock, tmp_path / "b")
    # money for 30 s each: the first grant is partial, the call has a deadline
    calls = {"held": call("held"), "touched": call("touched", user="bob")}
    await add_account(a.ledger, "acc1", balance_micros=30 * BERLIN_PER_S)
    await add_account(a.ledger, "acc2", balance_micros=30 * BERLIN_PER_S, identities=("user:bob",))
    for info in calls.values():
        assert isinstance(await a.authorize(info), Authorized)
    clock.advance(1)
    start_ms = clock.now_ms
    for info in calls.values():
        clock.now_ms = start_ms
        await a.account(usage(info, UsageKind.START, 0, start_ms))
        if before_s:
            clock.now_ms = start_ms + (before_s + 1) * 1000
            await a.account(usage(info, UsageKind.INTERIM, before_s, clock.now_ms))
    clock.now_ms = start_ms + after_s * 1000
    said = start_ms + said_ms if said_ms else -1
    report = usage(calls["held"], UsageKind.INTERIM, usage_s, clock.now_ms, answer_ms=said)
    await a.account(report)  # noted on the record A holds
    b.store.uncache("touched")
    await b.account(report.replace(call=calls["touched"]))  # session_touch.lua
    for account_id, sid in (("acc1", "held"), ("acc2", "touched")):
        rec = await a.store.get(account_id, sid)
        assert rec is not None
        assert rec.answer_ms - start_ms == expected_ms, sid
        # the deadline is the end of the 30 paid seconds, counted from that answer
        assert rec.paid_usage_s == 30
        deadline = await redis.zscore("sess:deadlines", f"{account_id}\0{sid}")
        assert deadline == rec.answer_ms + 30_000, sid
