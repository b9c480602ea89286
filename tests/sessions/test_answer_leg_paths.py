"""The answering side's Access-Request of a call keyed by its h323-conf-id (GNU
Gatekeeper's answerCall ARQ) on both paths of an authorize: the fused script of a single
Redis and the step-by-step path of Redis Cluster (Authorizer._answer_leg decides before
either). Calls run at once; the callee is never held nor charged for the caller's call,
the caller pays once and nothing is left held (tests/radius/test_h323_conf_id_e2e.py
plays the gatekeeper against the real daemon)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    BERLIN,
    BERLIN_PER_S,
    EUR,
    Clock,
    add_account,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, Refused, UsageKind
from chargingd.sessions.service import Sessions


async def _sessions(
    redis: aioredis.Redis, tmp_path: Path, clock: Clock, fused: bool
) -> tuple[Ledger, Sessions]:
    ledger = Ledger(redis, clock_ms=clock)
    await ledger.load_scripts()
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await sessions.store.load_scripts()
    if not fused:
        sessions.step_by_step()  # the Redis-Cluster path
    return ledger, sessions


def arq(conf: str, user: str, origin: str, gateway: str = "10.0.0.1") -> CallInfo:
    return CallInfo(
        session_id=conf,
        user_name=user,
        calling="",
        called=BERLIN,
        gateway=gateway,
        client="gnugk",
        conf_id=conf,
        call_origin=origin,
    )


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step_by_step"])
async def test_answer_leg_is_the_callers_call_on_both_paths(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    clock = Clock()
    ledger, sessions = await _sessions(redis, tmp_path, clock, fused)
    names = ("alice", "bob", "carol")
    for name in names:
        await add_account(ledger, name, identities=(f"user:{name}",))
    # (conf-id, caller, callee, usage): both ways at once, a callee that is no account
    calls = [(f"C{i} {i:X} 0 1", names[i % 3], names[(i + 1) % 3], 10 + i) for i in range(9)]
    calls.append(("C9 9 0 1", "alice", "reception", 7))

    async def one(
        conf: str, caller: str, callee: str, usage_s: int
    ) -> tuple[Authorized, Authorized]:
        first = await sessions.authorize(arq(conf, caller, "originate"))
        second = await sessions.authorize(arq(conf, callee, "answer"))
        assert isinstance(first, Authorized) and isinstance(second, Authorized), (first, second)
        acct = arq(conf, caller, "proxy")
        await sessions.account(usage(acct, UsageKind.START, 0, clock.now_ms))
        await sessions.account(usage(acct, UsageKind.STOP, usage_s, clock.now_ms + usage_s * 1000))
        return first, second

    answers = await asyncio.gather(*(one(*c) for c in calls))
    for first, second in answers:
        assert second.account_id == first.account_id
        assert second.session_timeout_s == first.session_timeout_s
    for name in names:
        paid = sum(u for _, caller, _, u in calls if caller == name) * BERLIN_PER_S
        account = await ledger.get_account(name)
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - paid, 0), name
    cdrs = sorted((c.call_id, c.account_id, c.duration_s) for c in await read_cdrs(redis))
    assert cdrs == sorted((conf, caller, u) for conf, caller, _, u in calls)
    assert await redis.xlen("cdr:orphans") == 0

    # another gateway's answer for a live conf-id (a terminating gateway's incoming
    # leg: the call's other end, nothing held), and one for a call that is over
    live = await sessions.authorize(arq("D1 0 0 1", "alice", "originate"))
    assert isinstance(live, Authorized)
    held = (await ledger.get_account("alice")).reserved_micros
    other_end = await sessions.authorize(arq("D1 0 0 1", "bob", "answer", "10.0.0.9"))
    assert isinstance(other_end, Authorized) and other_end.account_id == "alice"
    assert other_end.session_timeout_s == live.session_timeout_s
    refused = await sessions.authorize(arq(calls[0][0], "bob", "answer", "10.0.0.1"))
    assert isinstance(refused, Refused)
    assert (await ledger.get_account("alice")).reserved_micros == held
    bob = await ledger.get_account("bob")
    assert bob.reserved_micros == 0
