"""The Interim's fused script (session_renew.lua) runs the ledger's commit and then its
reserve; the reserve decides with the account's fields as the commit read and wrote
them (commit.lua leaves them in ARGV.account) instead of reading the account again.
The same calls give the same money, records, CDRs and audit as the step-by-step path
(whose reserve reads the account), also where the commit changes what the reserve
decides (money running out: partial and refused renewals; a postpaid account suspended
at its floor), and concurrent Interims, authorizes and Stops keep the books."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger, Mode
from chargingd.ledger import keys as K
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions


async def _books(redis: aioredis.Redis, ledger: Ledger, mode: Mode) -> None:
    acc = await ledger.get_account("acc1")
    holds: Any = await redis.hgetall(K.holds_key("acc1"))
    leases: Any = await redis.zrange(K.leases_key("acc1"), 0, -1)
    assert acc.reserved_micros == sum(int(v) for v in holds.values())
    assert set(holds) == set(leases)
    assert acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros
    assert mode in (Mode.PREPAID, Mode.POSTPAID)  # a gateway here ignores cuts: debt may be


async def _calls(sessions: Sessions, clock: Clock, redis: aioredis.Redis, mode: Mode) -> None:
    """Three calls, their packets interleaved in one order, until money runs out."""
    infos = [call(f"s{i}") for i in range(3)]
    answers = [await sessions.authorize(info) for info in infos]
    live = [i for i, a in zip(infos, answers, strict=True) if isinstance(a, Authorized)]
    assert live
    answer_ms = clock.advance(1)
    for info in live:
        await sessions.account(usage(info, UsageKind.START, 0, answer_ms))
    for usage_s in (60, 120, 180, 240, 300):
        clock.advance(60)
        for info in live:
            await sessions.account(
                usage(info, UsageKind.INTERIM, usage_s, answer_ms + usage_s * 1000)
            )
        await _books(redis, sessions.ledger, mode)
    for info in live:
        await sessions.account(usage(info, UsageKind.STOP, 310, answer_ms + 310_000))


@pytest.mark.parametrize(
    ("mode", "balance"),
    [(Mode.PREPAID, EUR // 2), (Mode.PREPAID, 2 * EUR), (Mode.POSTPAID, -EUR // 5)],
)
async def test_fused_renewals_agree_with_the_stepwise_path(
    redis: aioredis.Redis, tmp_path: Path, mode: Mode, balance: int
) -> None:
    results = []
    for fused in (True, False):
        await redis.flushall()
        clock = Clock()
        ledger = await make_ledger(redis, clock)
        sessions = make_sessions(redis, ledger, clock, tmp_path)
        if not fused:
            sessions.step_by_step()
        if mode == Mode.POSTPAID:
            await ledger.create_account(
                "acc1",
                mode=mode,
                currency="EUR",
                balance_micros=balance,
                credit_limit_micros=EUR // 2,
                tariff="retail",
                identities=("user:alice",),
                who="test",
            )
        else:
            await add_account(ledger, balance_micros=balance)
        await _calls(sessions, clock, redis, mode)
        account = await ledger.get_account("acc1")
        cdrs = sorted(await read_cdrs(redis), key=lambda c: c.call_id)
        audit = [
            (e.what, e.details.get("session"), e.details.get("amount"))
            for e in await ledger.audit("acc1", count=10_000)
        ]
        results.append((account, cdrs, audit))
    (acc_f, cdrs_f, audit_f), (acc_s, cdrs_s, audit_s) = results
    assert dataclasses.replace(acc_f, updated_ms=0) == dataclasses.replace(acc_s, updated_ms=0)
    assert acc_f.reserved_micros == 0 and acc_f.debits_micros > 0
    assert [(c.cost_micros, c.charged_micros) for c in cdrs_f] == [
        (c.cost_micros, c.charged_micros) for c in cdrs_s
    ]
    assert acc_f.debits_micros == sum(c.charged_micros for c in cdrs_f)
    assert audit_f == audit_s


async def test_concurrent_interims_authorizes_and_stops_keep_the_books(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, balance_micros=3 * EUR)
    infos = [call(f"c{i}") for i in range(12)]
    answers = await asyncio.gather(*(sessions.authorize(i) for i in infos[:8]))
    live = [i for i, a in zip(infos[:8], answers, strict=True) if isinstance(a, Authorized)]
    assert live
    answer_ms = clock.advance(1)
    await asyncio.gather(*(sessions.account(usage(i, UsageKind.START, 0, answer_ms)) for i in live))
    for n, usage_s in enumerate((60, 120, 180, 240)):
        clock.advance(60)
        packets = [
            sessions.account(usage(i, UsageKind.INTERIM, usage_s, answer_ms + usage_s * 1000))
            for i in live
        ]
        # retransmissions of each Interim, a new call, and a Stop of one call
        packets += [
            sessions.account(usage(i, UsageKind.INTERIM, usage_s, answer_ms + usage_s * 1000))
            for i in live[:3]
        ]
        packets.append(sessions.authorize(infos[8 + n]))
        await asyncio.gather(*packets)
        await _books(redis, ledger, Mode.PREPAID)
    for info in infos:
        await sessions.account(usage(info, UsageKind.STOP, 250, answer_ms + 250_000))
    account = await ledger.get_account("acc1")
    cdrs = await read_cdrs(redis)
    assert account.reserved_micros == 0
    assert account.debits_micros == sum(c.charged_micros for c in cdrs) > 0
    await _books(redis, ledger, Mode.PREPAID)
