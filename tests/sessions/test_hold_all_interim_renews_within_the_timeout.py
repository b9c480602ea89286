"""hold_all: an Interim (if a gateway sends one) commits and keeps the rest of the
Session-Timeout held, never asks for money past it: no deadline, no cut sent to a
client that cannot be cut. From the reviewer's reproducer."""

from __future__ import annotations

import redis.asyncio as aioredis
from sessions_harness import EUR, T0_MS, Clock, RecordingCutter, add_account, call, usage

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import DEADLINES
from tests.sessions.test_credit_modes import PER_S, answer, balance, cutter, sessions  # noqa: F401


async def test_hold_all_interim_near_the_end_sets_no_deadline(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=int(0.60 * EUR))  # exactly max_session_s
    info = call("k1", client="kam")
    assert isinstance(await sessions.authorize(info), Authorized)
    await answer(sessions, info, T0_MS)
    clock.now_ms = T0_MS + 50_000
    await sessions.account(usage(info, UsageKind.INTERIM, 50, T0_MS + 50_000))
    rec = await sessions.store.find("k1")
    assert rec is not None
    clock.now_ms = T0_MS + 61_000
    await sessions.cutter.run_once()
    assert (rec.limited, rec.deadline_ms, await redis.zcard(DEADLINES), cutter.disconnects) == (
        0,
        0,
        0,
        [],
    )
    # 50 s committed, the last 10 s of the Session-Timeout held, nothing past it.
    assert (rec.paid_usage_s, await balance(ledger)) == (60, (10 * PER_S, 10 * PER_S, 1))
