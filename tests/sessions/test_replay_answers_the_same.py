"""A retransmitted Access-Request answers what the first answer said (DESIGN invariant
3), on any daemon, whatever the account's other calls did in between.

Seen in the money soak: a call was authorized on daemon b (25 s held + 5 s available:
Session-Timeout 30 s, the record's credit_micros 300000), another call of the account
then took the 5 s, and the retransmission on daemon a answered 25 s. The gateway kept
the first answer it got (a's, 25 s), ran to it and stopped a second later; the record
allowed 30 s, so the call was closed ``normal`` (capped) instead of ``credit_cut``.
A retransmission must also leave the call's hold as it is (never re-reserve it).
Real Redis, real Ledger, two Sessions (two daemons) on it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import EUR, Clock, add_account, call, make_ledger, make_sessions, usage

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions

PER_S_BERLIN = 10_000  # 0.60 EUR a minute, per second


async def two_daemons(
    redis: aioredis.Redis, tmp_path: Path, clock: Clock, *, fused: bool
) -> tuple[Sessions, Sessions]:
    daemons = []
    for name in ("a", "b"):
        ledger = await make_ledger(redis, clock)
        sessions = make_sessions(redis, ledger, clock, tmp_path / name)
        if not fused:
            sessions.step_by_step()
        daemons.append(sessions)
    return daemons[0], daemons[1]


async def holds(redis: aioredis.Redis) -> dict[str, int]:
    raw = await redis.hgetall("{a:acc1}:holds")
    return {k.decode(): int(v) for k, v in raw.items()}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stepwise"])
async def test_retransmission_on_another_daemon_answers_the_first_timeout(
    redis: aioredis.Redis, tmp_path: Path, fused: bool
) -> None:
    clock = Clock()
    a, b = await two_daemons(redis, tmp_path, clock, fused=fused)
    # 1 EUR: the first grant (75 s = 0.75) is held in full, 0.25 is still available.
    await add_account(a.ledger, balance_micros=EUR)
    first = await b.authorize(call("s1"))
    assert isinstance(first, Authorized)
    assert first.session_timeout_s == 100 and first.credit_micros == EUR
    other = await b.authorize(call("s2"))  # takes the 0.25 that was available
    assert isinstance(other, Authorized) and other.credit_micros == EUR // 4
    assert await holds(redis) == {"s1": 75 * PER_S_BERLIN, "s2": 25 * PER_S_BERLIN}

    again = await a.authorize(call("s1"))  # the gateway's copy to the other daemon
    assert again == first
    again_b = await b.authorize(call("s1"))
    assert again_b == first
    assert await holds(redis) == {"s1": 75 * PER_S_BERLIN, "s2": 25 * PER_S_BERLIN}
    rec = await a.store.get("acc1", "s1")
    assert rec is not None and rec.credit_micros == first.credit_micros

    # The gateway ran to the Session-Timeout it was told and stopped a second later:
    # within the cut tolerance past what it was allowed, the money's end.
    info = call("s1")
    clock.advance(1)
    answer_ms = clock() - 100_000
    await a.account(usage(info, UsageKind.START, 0, answer_ms))
    await a.account(usage(info, UsageKind.STOP, 101, answer_ms + 101_000))
    closed = await a.store.get("acc1", "s1")
    assert closed is not None and closed.status == CdrStatus.CREDIT_CUT


async def test_concurrent_copies_to_two_daemons_answer_alike(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Many calls of one account, each Access-Request sent to both daemons at once and
    retransmitted: every copy of a call gets the same answer, its record says what that
    answer stands for, and its hold is what the record says."""
    clock = Clock()
    a, b = await two_daemons(redis, tmp_path, clock, fused=True)
    await add_account(a.ledger, balance_micros=4 * EUR)  # ~5 first grants of 75 s
    sids = [f"c{i}" for i in range(12)]

    async def copies(sid: str) -> list[object]:
        info = call(sid)
        first = await asyncio.gather(a.authorize(info), b.authorize(info))
        later = await asyncio.gather(b.authorize(info), a.authorize(info))
        return [*first, *later]

    answers = dict(zip(sids, await asyncio.gather(*(copies(s) for s in sids)), strict=True))
    held = await holds(redis)
    accepted = 0
    for sid, got in answers.items():
        assert all(x == got[0] for x in got), (sid, got)
        if not isinstance(got[0], Authorized):
            continue
        accepted += 1
        rec = await a.store.get("acc1", sid)
        assert rec is not None and rec.credit_micros == got[0].credit_micros, sid
        assert held[sid] == rec.held_micros, sid
    assert accepted >= 5
    account = await a.ledger.get_account("acc1")
    assert account.reserved_micros == sum(held.values()) <= 4 * EUR
