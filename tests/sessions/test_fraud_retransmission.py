"""A retransmitted Access-Request meets the fraud rules (sessions/fraudhook.py), on both
paths: it is answered as the first one was (DESIGN invariant 3) and not counted again.
The RADIUS duplicate cache does not always catch it: a gateway that fails over to
another chargingd, a retry after an answer that was not cached. And a refused call
teaches the rules nothing on either path. Real Redis, Ledger, tariff and fraud engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fraud_harness import counted, fraud_value, live_calls
from sessions_harness import add_account, call

from chargingd.sessions.ccapi import Authorized, CallInfo, RefusalCode, Refused
from tests.sessions.test_fraud_hook import CONCURRENT, VELOCITY, build, settle

NEW_COUNTRY = {"name": "nc", "kind": "new_country", "action": "refuse"}


@pytest.mark.parametrize("fused", [True, False])
async def test_retransmission_of_a_granted_call_is_granted_again_not_refused_by_a_rule(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, fraud, _, _ = await build(redis, tmp_path, [VELOCITY], fused=fused)
    for i in range(3):
        assert isinstance(await sessions.authorize(call(f"v{i}")), Authorized)
    assert await sessions.authorize(call("v3")) == Refused(RefusalCode.FRAUD, "slow down")
    await settle(sessions)
    refused = fraud.counters["refused"]
    # v2 is granted, held and live; its Access-Request comes again (first Accept lost,
    # or the gateway failed over to a second chargingd: no shared RADIUS cache).
    again = await sessions.authorize(call("v2"))
    assert isinstance(again, Authorized), again
    assert await redis.hget("{a:acc1}:holds", "v2")
    assert await sessions.store.find("v2") is not None
    await settle(sessions)
    assert fraud.counters["refused"] == refused  # no rule decided it again
    # Counted once: the account's velocity counter still holds four calls, v2 once.
    assert counted(await fraud_value(redis)) == 4


@pytest.mark.parametrize("fused", [True, False])
async def test_retransmission_of_a_granted_call_is_not_a_second_live_call(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, _, _, _ = await build(redis, tmp_path, [CONCURRENT], fused=fused)
    for sid in ("c1", "c2"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    for _ in range(3):  # a burst of retransmissions: each is the same granted call
        assert isinstance(await sessions.authorize(call("c1")), Authorized)
    assert await sessions.authorize(call("c3")) == Refused(RefusalCode.FRAUD, "call not allowed")
    await settle(sessions)
    assert live_calls(await fraud_value(redis)) == ["c1", "c2"]


@pytest.mark.parametrize("fused", [True, False])
async def test_retransmission_of_a_refused_call_gets_the_same_refusal(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    half_minute = {**VELOCITY, "window_s": 30}  # shorter than a refusal is remembered (60 s)
    sessions, _, _, _ = await build(redis, tmp_path, [half_minute], fused=fused)
    for i in range(3):
        assert isinstance(await sessions.authorize(call(f"v{i}")), Authorized)
    first = await sessions.authorize(call("v3"))
    assert first == Refused(RefusalCode.FRAUD, "slow down")
    # The window has passed for the rules (a new call is allowed again), but the
    # retransmission of v3 is the same request: the refusal is remembered.
    sessions.clock_ms.advance(31)  # type: ignore[attr-defined]
    assert await sessions.authorize(call("v3")) == first
    assert await redis.hget("{a:acc1}:holds", "v3") is None
    assert isinstance(await sessions.authorize(call("v4")), Authorized)
    await settle(sessions)


@pytest.mark.parametrize("fused", [True, False])
async def test_retransmission_of_a_call_refused_for_credit_is_not_turned_into_a_fraud_refusal(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, _, ledger, _ = await build(redis, tmp_path, [VELOCITY], fused=fused)
    await add_account(ledger, "poor", identities=("user:poor",), balance_micros=0)
    first = await sessions.authorize(call("p0", user="poor"))
    assert first == Refused(RefusalCode.INSUFFICIENT_CREDIT, "insufficient credit")
    for i in range(1, 4):  # three more calls: velocity is over its limit from now on
        await sessions.authorize(call(f"p{i}", user="poor"))
    assert await sessions.authorize(call("p4", user="poor")) == Refused(
        RefusalCode.FRAUD, "slow down"
    )
    assert await sessions.authorize(call("p0", user="poor")) == first
    await settle(sessions)


@pytest.mark.parametrize("fused", [True, False])
async def test_a_call_refused_for_credit_teaches_the_rules_no_country(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    """Both paths admit a call (its country known) only once its reserve granted it."""
    sessions, _, ledger, _ = await build(redis, tmp_path, [NEW_COUNTRY], fused=fused)
    await add_account(ledger, "poor", identities=("user:poor",), balance_micros=0)
    refused = await sessions.authorize(call("p1", user="poor"))
    assert refused == Refused(RefusalCode.INSUFFICIENT_CREDIT, "insufficient credit")
    await settle(sessions)
    poor = await fraud_value(redis, "poor")
    assert not poor.get("c") and not live_calls(poor)
    # A granted call is learnt.
    assert isinstance(await sessions.authorize(call("a1")), Authorized)
    assert list((await fraud_value(redis))["c"]) == ["DE"]


@pytest.mark.parametrize(("fused", "single_redis"), [(True, True), (False, True), (False, False)])
async def test_retransmissions_and_the_per_ip_rule_of_their_own_slot(
    redis: aioredis.Redis, tmp_path: Path, fused: bool, single_redis: bool
) -> None:
    """On Redis Cluster the per-IP counts run in their own script (their own slot),
    after the account's check: a repeat skips them, their refusal is remembered."""
    per_ip = {"name": "ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 2,
              "window_s": 30, "action": "refuse"}  # fmt: skip
    sessions, _, _, _ = await build(
        redis, tmp_path, [per_ip], fused=fused, single_redis=single_redis
    )

    def from_ip(sid: str) -> CallInfo:
        return call(sid).replace(caller_ip="192.0.2.7")

    for sid in ("i0", "i1"):
        assert isinstance(await sessions.authorize(from_ip(sid)), Authorized)
    refused = await sessions.authorize(from_ip("i2"))
    assert refused == Refused(RefusalCode.FRAUD, "call not allowed")
    assert isinstance(await sessions.authorize(from_ip("i1")), Authorized)  # granted before
    sessions.clock_ms.advance(31)  # type: ignore[attr-defined]
    assert await sessions.authorize(from_ip("i2")) == refused  # remembered
    assert isinstance(await sessions.authorize(from_ip("i3")), Authorized)  # a new window
    await settle(sessions)
