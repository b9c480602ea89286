"""A top-up answers the operator while the CoA to a silent gateway goes on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    usage,
)

from chargingd.admin.sessions import SessionHooks
from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, SessionRef, UsageKind

ANSWER_MS = T0_MS + 2_000
SILENT_S = 3.0  # how long the gateway leaves each CoA unanswered


class SilentGateway(RecordingCutter):
    """A gateway that never acknowledges a CoA: each one waits out its retransmissions."""

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        await asyncio.sleep(SILENT_S)
        return await super().change_timeout(ref, session_timeout_s)


async def test_topup_answers_before_a_silent_gateway_gives_up(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    gateway = SilentGateway()
    sessions = make_sessions(redis, ledger, clock, tmp_path, gateway)
    await add_account(ledger, balance_micros=1 * EUR)  # 1 EUR pays 100 s: a deadline
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")

    hooks = SessionHooks(sessions, kill_wait_s=0.5)
    started = time.monotonic()
    await hooks.after_topup("acc1")
    assert time.monotonic() - started < SILENT_S / 2  # the answer did not wait for the CoA
    assert gateway.timeouts == []
    # The CoA still goes out, in the background.
    for _ in range(100):
        if gateway.timeouts:
            break
        await asyncio.sleep(0.1)
    assert [ref.session_id for ref, _ in gateway.timeouts] == ["s1"]
