"""The fraud rules of a call whose accounting Start comes before its Access-Request
(FreeSWITCH: mod_radius_cdr's Start is a global routing handler's, the dialplan's
radius_auth runs after it). The Start adopts the call; the Access-Request that follows
is no retransmission, so the rules must decide it as any call: counted once, refused
(the adopted record then left as it was: its Stop charges it), live once for
concurrent. Real Redis (6.2 by EVALSHA, 7 by FCALL), Ledger, tariff and fraud engine;
three paths: fused with the rules decided in the daemon ([fraud] local_values), fused
with the rules in Lua, step by step (Redis Cluster's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fraud_harness import counted, fraud_value, live_calls, settle_alerts
from sessions_harness import call, read_cdrs, usage

from chargingd.sessions.ccapi import Authorized, CallInfo, RefusalCode, Refused, UsageKind
from chargingd.sessions.recordspec import ADOPTED
from chargingd.sessions.service import Sessions
from tests.sessions.test_fraud_hook import CONCURRENT, VELOCITY, build, settle

PATHS = ["local", "lua", "steps"]
SLOW_DOWN = Refused(RefusalCode.FRAUD, "slow down")


@pytest.fixture(params=["6.2", "7"])
async def any_redis(
    request: pytest.FixtureRequest, redis_server: Any, redis7_server: Any
) -> AsyncIterator[aioredis.Redis]:
    """The embedded Redis 6.2 (EVALSHA), or a Redis 7 (FCALL: the fused libraries)."""
    seven = request.param == "7"
    client = aioredis.Redis.from_url((redis7_server if seven else redis_server).url)
    await client.flushall()
    if seven:
        await client.execute_command("FUNCTION", "FLUSH")
    yield client
    await settle_alerts()
    await client.aclose()


async def start(
    redis: aioredis.Redis,
    tmp_path: Path,
    rules: list[dict[str, Any]],
    path: str,
    *,
    compact: bool = True,
) -> tuple[aioredis.Redis, Sessions, Any]:
    """``path`` local: fused, the rules decided in the daemon; lua: fused, the rules in
    Lua; steps: step by step. ``compact``: the records' layout (else LEGACY)."""
    cfg: dict[str, Any] = {"local_values": 0} if path == "lua" else {}
    sessions, fraud, _, _ = await build(redis, tmp_path, rules, fused=path != "steps", **cfg)
    if not compact:
        legacy = replace(sessions.cfg, compact_records=False)
        sessions = Sessions(
            redis=redis,
            ledger=sessions.ledger,
            pricer=sessions.pricer,
            cfg=legacy,
            clock_ms=sessions.clock_ms,
            data_dir=tmp_path,
            fraud=fraud,
        )
        await sessions.store.load_scripts()
        if path == "steps":
            sessions.step_by_step()
    return redis, sessions, fraud


async def start_first(sessions: Sessions, info: CallInfo) -> Authorized | Refused:
    """The call's Start (at routing: it adopts the call), then its Access-Request."""
    await sessions.account(usage(info, UsageKind.START, 0, sessions.clock_ms(), answer_ms=0))
    return await sessions.authorize(info)


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


@pytest.mark.parametrize("compact", [True, False])
@pytest.mark.parametrize("path", PATHS)
async def test_a_retransmission_after_the_start_first_call_is_authorized_is_not_counted(
    any_redis: aioredis.Redis, tmp_path: Path, path: str, compact: bool
) -> None:
    redis, sessions, _ = await start(any_redis, tmp_path, [VELOCITY], path, compact=compact)
    first = [call("v0"), call("v1")]
    answers = [await start_first(sessions, info) for info in first]
    assert all(isinstance(a, Authorized) for a in answers)
    assert counted(await fraud_value(redis)) == 2
    # The records are the authorized calls now (adopted 0): their repeats are
    # retransmissions, answered as before and not counted again.
    for info, answer in zip(first, answers, strict=True):
        stored = await sessions.store.get("acc1", info.session_id)
        assert stored is not None and stored.adopted == 0
        for _ in range(2):
            assert await sessions.authorize(info) == answer
    assert counted(await fraud_value(redis)) == 2
    # So the third call is still within VELOCITY's 3, the fourth is over it.
    assert isinstance(await start_first(sessions, call("v2")), Authorized)
    assert await start_first(sessions, call("v3")) == SLOW_DOWN
    assert counted(await fraud_value(redis)) == 4
    assert len(await redis.hgetall("{a:acc1}:holds")) == 3


@pytest.mark.parametrize("path", PATHS)
async def test_a_start_first_call_the_rules_refuse_is_refused_and_its_stop_charges_it(
    any_redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    redis, sessions, fraud = await start(any_redis, tmp_path, [VELOCITY], path)
    for i in range(3):
        assert isinstance(await start_first(sessions, call(f"v{i}")), Authorized)
    over = call("v3")
    assert await start_first(sessions, over) == SLOW_DOWN
    await settle(sessions)
    assert fraud.counters["refused"] == 1
    # Nothing held for it; its record is the Start's, as it was: adopted.
    assert sorted(await redis.hkeys("{a:acc1}:holds")) == [b"v0", b"v1", b"v2"]
    stored = await sessions.store.get("acc1", "v3")
    assert stored is not None and (stored.adopted, stored.held_micros) == (ADOPTED, 0)
    # Its retransmission: the same refusal, not counted again.
    before = counted(await fraud_value(redis))
    assert await sessions.authorize(over) == SLOW_DOWN
    assert counted(await fraud_value(redis)) == before
    # The gateway connected it anyway: its Stop charges the adopted call in full.
    now = sessions.clock_ms()
    await sessions.account(usage(over, UsageKind.STOP, 30, now + 30_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.duration_s) == ("v3", 30)
    assert cdr.charged_micros > 0


@pytest.mark.parametrize("path", PATHS)
async def test_concurrent_counts_start_first_calls_once(
    any_redis: aioredis.Redis, tmp_path: Path, path: str
) -> None:
    # CONCURRENT: at most 2 live calls.
    redis, sessions, fraud = await start(any_redis, tmp_path, [CONCURRENT], path)
    assert isinstance(await start_first(sessions, call("c1")), Authorized)
    # one whose Access-Request comes first, as ever, between them
    assert isinstance(await sessions.authorize(call("c2")), Authorized)
    assert live_calls(await fraud_value(redis)) == ["c1", "c2"]
    # A retransmission of a Start-first call is the same live call, not a third one.
    assert isinstance(await sessions.authorize(call("c1")), Authorized)
    assert await start_first(sessions, call("c3")) == Refused(RefusalCode.FRAUD, "call not allowed")
    await settle(sessions)
    assert live_calls(await fraud_value(redis)) == ["c1", "c2"]
    # c1 ends (its CDR's event takes it out of the live calls): room for one more.
    now = sessions.clock_ms()
    await sessions.account(usage(call("c1"), UsageKind.STOP, 10, now + 10_000))
    (cdr,) = await read_cdrs(redis)
    await fraud.cdr(cdr, "1-0")
    assert isinstance(await start_first(sessions, call("c4")), Authorized)
    assert live_calls(await fraud_value(redis)) == ["c2", "c4"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_repeat_before_the_adopted_record_became_the_call_is_not_counted(
    any_redis: aioredis.Redis, tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rules admitted the call, but its record is still the Start's (the write that
    # makes it the authorized call comes after their script: lost here, as a daemon
    # that died in between loses it): its repeat is known by the answer the admission
    # remembered, not counted again.
    redis, sessions, _ = await start(any_redis, tmp_path, [VELOCITY], path)
    info = call("v0")
    set_grant = sessions.store.set_grant

    async def lost(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(sessions.store, "set_grant", lost)
    assert isinstance(await start_first(sessions, info), Authorized)
    stored = await sessions.store.get("acc1", "v0")
    assert stored is not None and stored.adopted == ADOPTED
    assert counted(await fraud_value(redis)) == 1
    monkeypatch.setattr(sessions.store, "set_grant", set_grant)
    assert isinstance(await sessions.authorize(info), Authorized)
    stored = await sessions.store.get("acc1", "v0")
    assert stored is not None and stored.adopted == 0
    assert counted(await fraud_value(redis)) == 1
