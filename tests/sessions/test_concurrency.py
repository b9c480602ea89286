"""200 simultaneous calls on one prepaid account from 2 daemon processes (DESIGN invariants)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import EUR, Clock, add_account, call_worker, make_ledger, read_cdrs

from chargingd.core.redisconn import EmbeddedRedis

PROCESSES = 2
CALLS_PER_PROCESS = 100


@pytest.mark.slow
async def test_200_calls_two_processes_one_prepaid_account(
    redis: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    ledger = await make_ledger(redis, Clock())
    # 40 EUR cannot pay for 200 calls of 30..150 s at 0.60 a minute: many are
    # refused or cut short by their grants, all at once from two processes.
    await add_account(ledger, "shared", balance_micros=40 * EUR, identities=("user:shared",))
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=call_worker,
            args=(redis_server.url, w, CALLS_PER_PROCESS, str(tmp_path / f"d{w}"), out),
        )
        for w in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    authorized = sorted(sid for _, sids, _, _ in results for sid in sids)
    refused = sum(r for _, _, r, _ in results)
    assert len(authorized) + refused == PROCESSES * CALLS_PER_PROCESS
    assert refused > 0 and len(authorized) > 0  # the money really ran out
    assert min(low for _, _, _, low in results) >= 0  # balance never below zero

    cdrs = await read_cdrs(redis)
    assert sorted(c.call_id for c in cdrs) == authorized  # exactly one CDR per call
    assert not [c for c in cdrs if c.status == "overrun"]
    # Some calls were stopped where their (partial) grants ended, not where they wanted.
    wanted = {c.call_id: 30 + (int(c.call_id.rsplit("c", 1)[1]) * 7) % 120 for c in cdrs}
    assert any(c.duration_s < wanted[c.call_id] for c in cdrs)
    account = await ledger.get_account("shared")
    assert account.balance_micros >= 0
    assert account.reserved_micros == 0
    assert sum(c.cost_micros for c in cdrs) == account.debits_micros
    assert account.balance_micros == 40 * EUR - account.debits_micros
