"""The fraud rules in authorize (sessions/fraudhook.py), on both paths: the fused script
(rules, hold and record in one round trip) and step by step (the Redis-Cluster path).
Real Redis, real Ledger, real tariff, real fraud engine; the cutter records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import fraud_value, live_calls, make_fraud
from sessions_harness import (
    MUNICH,
    RecordingCutter,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.fraud import Fraud
from chargingd.ledger import Ledger, Status
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from chargingd.sessions.service import Sessions

VELOCITY = {"name": "fast", "kind": "velocity", "scope": "account", "max_calls": 3,
            "window_s": 60, "action": "refuse", "message": "slow down"}  # fmt: skip
CONCURRENT = {"name": "many", "kind": "concurrent", "max_calls": 2, "action": "refuse"}
RISKY = {"name": "risky", "kind": "destination", "match": ["high_risk_prefix"],
         "max_calls": 2, "window_s": 600, "action": "block"}  # fmt: skip


async def build(
    redis: aioredis.Redis,
    tmp_path: Path,
    rules: list[dict[str, Any]],
    *,
    fused: bool,
    **fraud_cfg: Any,
) -> tuple[Sessions, Fraud, Ledger, RecordingCutter]:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    fraud = await make_fraud(redis, clock, rules, ledger=ledger, **fraud_cfg)
    cutter = RecordingCutter()
    sessions = make_sessions(redis, ledger, clock, tmp_path, cutter)
    sessions = Sessions(
        redis=redis,
        ledger=ledger,
        pricer=sessions.pricer,
        cfg=sessions.cfg,
        clock_ms=clock,
        data_dir=tmp_path,
        call_cutter=cutter,
        fraud=fraud,
    )
    await sessions.store.load_scripts()
    if not fused:
        sessions.step_by_step()
    await add_account(ledger, "acc1", identities=("user:alice",))
    await add_account(ledger, "acc2", identities=("user:bob",))
    return sessions, fraud, ledger, cutter


async def settle(sessions: Sessions) -> None:
    assert sessions.fraud is not None
    await sessions.fraud.settle()


@pytest.mark.parametrize("fused", [True, False])
async def test_velocity_refuses_the_call_over_the_limit_with_its_message(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, fraud, _, _ = await build(redis, tmp_path, [VELOCITY], fused=fused)
    answers = [await sessions.authorize(call(f"v{i}")) for i in range(5)]
    assert [type(a) for a in answers] == [Authorized] * 3 + [Refused] * 2
    assert answers[3] == Refused(RefusalCode.FRAUD, "slow down")
    # Another account calling meanwhile is untouched.
    assert isinstance(await sessions.authorize(call("b1", user="bob")), Authorized)
    # The refused calls hold nothing: only the three granted ones are held.
    assert len(await redis.hgetall("{a:acc1}:holds")) == 3
    await settle(sessions)
    assert fraud.counters["refused"] == 2


@pytest.mark.parametrize("fused", [True, False])
async def test_accounting_of_a_call_a_rule_refused_makes_no_session_and_no_cdr(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    """A gateway that accounts its refused calls (a Start, a Stop of no usage): a call a
    rule refused is remembered by the rules, not the ledger, and was adopted (a live
    session, then an 'unanswered' CDR for a call never authorized). A refused call the
    gateway connected anyway reports usage: adopted and charged, as ever."""
    sessions, _, _, _ = await build(redis, tmp_path, [VELOCITY], fused=fused)
    calls = [call(f"v{i}") for i in range(5)]
    answers = [await sessions.authorize(c) for c in calls]
    assert [type(a) for a in answers] == [Authorized] * 3 + [Refused] * 2
    now = sessions.clock_ms()
    await sessions.account(usage(calls[3], UsageKind.START, 0, now))
    await sessions.account(usage(calls[3], UsageKind.STOP, 0, now))
    await sessions.account(usage(calls[4], UsageKind.START, 0, now))
    await sessions.account(usage(calls[4], UsageKind.STOP, 30, now + 30_000))
    live = sorted(r.session_id for r in await sessions.list_sessions())
    assert live == ["v0", "v1", "v2"]
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.duration_s) == ("v4", 30)
    assert cdr.charged_micros > 0
    # refused by a rule, connected anyway: it was allowed nothing (overrun, in full)
    assert (cdr.status, cdr.charge_reason, cdr.extra.get("refused_here")) == (
        "overrun",
        "overrun",
        "1",
    )


@pytest.mark.parametrize("fused", [True, False])
async def test_concurrent_counts_live_calls_and_forgets_refused_ones(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, _, ledger, _ = await build(redis, tmp_path, [CONCURRENT], fused=fused)
    await add_account(ledger, "poor", identities=("user:poor",), balance_micros=0)
    # A call refused for credit after the rules admitted it is not live.
    assert isinstance(await sessions.authorize(call("p1", user="poor")), Refused)
    await settle(sessions)
    assert live_calls(await fraud_value(redis, "poor")) == []
    assert isinstance(await sessions.authorize(call("c1")), Authorized)
    assert isinstance(await sessions.authorize(call("c2")), Authorized)
    third = await sessions.authorize(call("c3"))
    assert third == Refused(RefusalCode.FRAUD, "call not allowed")
    # A retransmission of a live call is the same call, not a third one.
    assert isinstance(await sessions.authorize(call("c2")), Authorized)


@pytest.mark.parametrize("fused", [True, False])
async def test_block_refuses_cuts_live_calls_and_later_calls_get_the_block_message(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, fraud, ledger, cutter = await build(
        redis, tmp_path, [RISKY], fused=fused, high_risk_prefixes=["+4989"]
    )
    live = call("berlin-1")
    assert isinstance(await sessions.authorize(live), Authorized)
    for i in range(2):
        assert isinstance(await sessions.authorize(call(f"m{i}", called=MUNICH)), Authorized)
    blocked = await sessions.authorize(call("m2", called=MUNICH))
    assert blocked == Refused(RefusalCode.FRAUD, "account blocked")
    await settle(sessions)
    acc = await ledger.get_account("acc1")
    assert (acc.status, acc.status_reason) == (Status.BLOCKED, "fraud")
    # Its three live calls were cut (Disconnect-Request through the frontend).
    cut = sorted(ref.session_id for ref, _ in cutter.disconnects)
    assert cut == ["berlin-1", "m0", "m1"]
    # A later call, anywhere: refused with the block message; bob is untouched.
    later = await sessions.authorize(call("later"))
    assert later == Refused(RefusalCode.FRAUD, "account blocked")
    assert isinstance(await sessions.authorize(call("b1", user="bob")), Authorized)
    assert fraud.counters["blocked"] == 1
    # Until an operator unblocks it.
    await fraud.unblock("acc1", who="ops", why="customer confirmed")
    assert isinstance(await sessions.authorize(call("after")), Authorized)


@pytest.mark.parametrize("fused", [True, False])
async def test_shadow_changes_nothing_but_records_the_alert(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    sessions, fraud, ledger, cutter = await build(
        redis, tmp_path, [RISKY], fused=fused, high_risk_prefixes=["+4989"], shadow=True
    )
    answers = [await sessions.authorize(call(f"m{i}", called=MUNICH)) for i in range(4)]
    assert all(isinstance(a, Authorized) for a in answers), answers
    await settle(sessions)
    acc = await ledger.get_account("acc1")
    assert acc.status is Status.ACTIVE
    assert cutter.disconnects == []
    assert fraud.alerts is not None
    incidents = await fraud.alerts.incidents()
    assert [(i.key, i.count) for i in incidents] == [("fraud.risky:acc1", 2)]
    assert incidents[0].details["shadow"] is True


@pytest.mark.parametrize("fused", [True, False])
async def test_refusals_feed_failed_attempts(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    failed = {"name": "failed", "kind": "failed_attempts", "max_calls": 2, "window_s": 300}
    sessions, fraud, ledger, _ = await build(redis, tmp_path, [failed], fused=fused)
    await add_account(ledger, "poor", identities=("user:poor",), balance_micros=0)
    for i in range(3):
        assert isinstance(await sessions.authorize(call(f"p{i}", user="poor")), Refused)
    for i in range(3):  # an identity no account has: counted per identity, alerts only
        assert isinstance(await sessions.authorize(call(f"x{i}", user="mallory")), Refused)
    await settle(sessions)
    assert fraud.alerts is not None
    keys = sorted(i.key for i in await fraud.alerts.incidents())
    assert keys == ["fraud.failed:poor", "fraud.failed:user:mallory"]


@pytest.mark.parametrize("fused", [True, False])
async def test_refusals_count_with_the_overrides_of_the_accounts_tariff(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    """failed_attempts fed by Access-Rejects took the [fraud] rules without the account's
    tariff overrides (authorize and the CDRs take them): a wholesale trunk refused for
    credit hit the retail limit that `ctl fraud rules --account` said it did not have."""
    failed = {"name": "failed", "kind": "failed_attempts", "max_calls": 2, "window_s": 300,
              "action": "refuse"}  # fmt: skip
    # the harness's plans: "retail", and the same plan as the default one (tariff "")
    overrides = {"retail": {"failed": {"max_calls": 4}}, "default": {"failed": {"max_calls": 3}}}
    sessions, _, ledger, _ = await build(
        redis, tmp_path, [failed], fused=fused, tariff_overrides=overrides
    )
    await add_account(ledger, "trunk", identities=("user:trunk",), balance_micros=0)
    await add_account(ledger, "plain", identities=("user:plain",), balance_micros=0, tariff="")

    async def fraud_refused(user: str, n: int) -> list[bool]:
        out = []
        for i in range(n):
            answer = await sessions.authorize(call(f"{user}{i}", user=user))
            assert isinstance(answer, Refused)
            out.append(answer.code is RefusalCode.FRAUD)
            await settle(sessions)  # the refusal is counted in the background
        return out

    assert await fraud_refused("trunk", 6) == [False] * 5 + [True]  # fires at the 5th
    assert await fraud_refused("plain", 5) == [False] * 4 + [True]  # tariff "default"


@pytest.mark.parametrize("fused", [True, False])
async def test_velocity_per_caller_ip_counts_every_account_from_that_address(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    per_ip = {"name": "ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 3,
              "window_s": 60, "action": "refuse"}  # fmt: skip
    sessions, _, _, _ = await build(redis, tmp_path, [per_ip], fused=fused)

    def from_ip(sid: str, user: str, ip: str) -> Any:
        return call(sid, user=user).replace(caller_ip=ip)

    users = ["alice", "bob", "alice"]
    for i, user in enumerate(users):  # three calls from one address, two accounts
        assert isinstance(await sessions.authorize(from_ip(f"i{i}", user, "192.0.2.7")), Authorized)
    other = await sessions.authorize(from_ip("o1", "bob", "192.0.2.8"))
    assert isinstance(other, Authorized)  # another address: its own count
    fourth = await sessions.authorize(from_ip("i3", "bob", "192.0.2.7"))
    assert fourth == Refused(RefusalCode.FRAUD, "call not allowed")


@pytest.mark.parametrize("fused", [True, False])
async def test_every_fraud_key_of_a_call_expires(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    rules = [
        {"name": "fast", "kind": "velocity", "scope": "account", "max_calls": 9, "window_s": 60},
        {"name": "id", "kind": "velocity", "scope": "identity", "max_calls": 9, "window_s": 60},
        {"name": "many", "kind": "concurrent", "max_calls": 9},
        {"name": "nc", "kind": "new_country"},
        {"name": "rg", "kind": "same_destination", "max_calls": 9, "window_s": 600},
        {"name": "dd", "kind": "distinct_destinations", "max_destinations": 9, "window_s": 300},
    ]
    sessions, _, _, _ = await build(redis, tmp_path, rules, fused=fused)
    assert isinstance(await sessions.authorize(call("only-call")), Authorized)
    keys = [k.decode() for k in await redis.keys("{a:acc1}:fr:*")]
    assert keys == ["{a:acc1}:fr:v"]  # one value holds every authorize rule's state
    for key in keys:  # an account that calls once leaves nothing behind for ever
        assert await redis.pttl(key) > 0, key


async def test_the_fused_rules_check_the_known_caller_before_counting(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The fused authorize with the rules checks the account with the plain authorize's
    two packed arguments (status, tariff, identity): a suspended account is refused and
    nothing is counted; a changed tariff or a moved identity is re-resolved."""
    sessions, _, ledger, _ = await build(redis, tmp_path, [VELOCITY, CONCURRENT], fused=True)
    assert isinstance(await sessions.authorize(call("k1")), Authorized)
    before = await redis.get("{a:acc1}:fr:v")
    await ledger.set_status("acc1", Status.SUSPENDED, who="test")
    refused = await sessions.authorize(call("k2"))
    assert refused == Refused(RefusalCode.SUSPENDED, "account suspended")
    assert await redis.get("{a:acc1}:fr:v") == before  # the rules counted nothing
    await ledger.set_status("acc1", Status.ACTIVE, who="test")
    await ledger.update_account("acc1", tariff="", who="test")  # stale: resolved again
    assert isinstance(await sessions.authorize(call("k3")), Authorized)
    assert live_calls(await fraud_value(redis)) == ["k1", "k3"]
    await ledger.update_account("acc1", identities=(), who="test")
    await add_account(ledger, "acc3", identities=("user:alice",))
    moved = await sessions.authorize(call("k4"))
    assert isinstance(moved, Authorized) and moved.account_id == "acc3"
    assert live_calls(await fraud_value(redis, "acc3")) == ["k4"]
