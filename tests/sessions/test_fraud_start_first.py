"""The fraud rules of a call whose accounting Start comes before its Access-Request
(FreeSWITCH: mod_radius_cdr's Start is a global routing handler's, the dialplan's
radius_auth runs after it). The Start adopts the call; the Access-Request that follows
is no retransmission, so the rules must decide it as any call. Real Redis, Ledger,
tariff and fraud engine, both paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import call, usage

from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from tests.sessions.test_fraud_hook import VELOCITY, build


@pytest.mark.xfail(
    strict=True,
    reason="not fixed: fraud_seen (fraud.lua) and session_authorize.lua take any record "
    "of the call, an adopted one too, for a retransmission: no rule runs, nothing counted",
)
@pytest.mark.parametrize("fused", [True, False])
async def test_rules_decide_a_call_whose_start_came_first(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    # VELOCITY lets 3 calls through and refuses the next: so it does when each call's
    # Access-Request comes first; with each call's Start first, all 5 were authorized.
    sessions, _, _, _ = await build(redis, tmp_path, [VELOCITY], fused=fused)
    answers = []
    for i in range(5):
        info = call(f"v{i}")
        await sessions.account(usage(info, UsageKind.START, 0, sessions.clock_ms(), answer_ms=0))
        answers.append(await sessions.authorize(info))
    assert all(isinstance(a, Authorized) for a in answers[:3])
    assert answers[3:] == [Refused(RefusalCode.FRAUD, "slow down")] * 2
