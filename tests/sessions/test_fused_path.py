"""The one-round-trip path (sessionfast.py) against the step-by-step path: same money,
same records, same CDRs, same audit trail (real Redis, real Ledger, real tariff)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    MUNICH,
    T0_MS,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.ledger import Status
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from chargingd.sessions.service import Sessions


def stepwise(sessions: Sessions) -> Sessions:
    """The same Sessions on the Redis-Cluster path (no fused scripts)."""
    sessions.step_by_step()
    assert sessions.authorizer.fused is None and sessions.closer.fused is None
    return sessions


async def _whole_call(sessions: Sessions, clock: Clock, sid: str, called: str) -> None:
    info = call(sid, called=called)
    assert isinstance(await sessions.authorize(info), Authorized)
    answer_ms = clock.advance(2)
    await sessions.account(usage(info, UsageKind.START, 0, answer_ms))
    for usage_s in (60, 120, 181):
        clock.advance(60)
        await sessions.account(usage(info, UsageKind.INTERIM, usage_s, answer_ms + usage_s * 1000))
    await sessions.account(usage(info, UsageKind.STOP, 200, answer_ms + 200_000))


@pytest.mark.parametrize("called", ["030123456", MUNICH])
async def test_fused_and_stepwise_paths_agree(
    redis: aioredis.Redis, tmp_path: Path, called: str
) -> None:
    results = []
    for fused in (True, False):
        await redis.flushall()
        clock = Clock()
        ledger = await make_ledger(redis, clock)
        sessions = make_sessions(redis, ledger, clock, tmp_path)
        assert sessions.fused is not None
        if not fused:
            stepwise(sessions)
        await add_account(ledger, balance_micros=10 * EUR)
        await _whole_call(sessions, clock, "s1", called)
        account = await ledger.get_account("acc1")
        (cdr,) = await read_cdrs(redis)
        raw = await sessions.store.get("acc1", "s1")
        audit = [(e.what, e.details.get("amount")) for e in await ledger.audit("acc1")]
        results.append((account, cdr, raw, audit))
    (acc_f, cdr_f, raw_f, audit_f), (acc_s, cdr_s, raw_s, audit_s) = results
    assert acc_f.balance_micros == acc_s.balance_micros < 10 * EUR
    assert acc_f.reserved_micros == acc_s.reserved_micros == 0
    assert dataclasses.replace(acc_f, updated_ms=0) == dataclasses.replace(acc_s, updated_ms=0)
    assert cdr_f == cdr_s and cdr_f.status == CdrStatus.NORMAL and cdr_f.duration_s == 200
    assert raw_f == raw_s and raw_f is not None and raw_f.state == "closed"
    assert audit_f == audit_s  # same reserve/commit/release entries, same amounts


async def test_one_round_trip_per_step_once_the_caller_is_known(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await sessions.store.load_scripts()  # as a daemon's start (Functions libraries too)
    await add_account(ledger)
    batcher = sessions.store._batcher
    assert batcher is not None and batcher is ledger._batcher  # one pipeline for both
    before = batcher.batches
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    assert batcher.batches - before == 3  # identity; account read; reserve + record
    before = batcher.batches
    assert isinstance(await sessions.authorize(call("s2")), Authorized)
    assert batcher.batches - before == 1  # checked account + reserve + record + indexes
    info = call("s2")
    before = batcher.batches
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    assert batcher.batches - before == 1  # touch only: the locator is known
    before = batcher.batches
    await sessions.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    assert batcher.batches - before == 1  # the interim noted + commit + renew + record
    before = batcher.batches
    await sessions.account(usage(info, UsageKind.STOP, 70, T0_MS + 70_000))
    assert batcher.batches - before == 1  # the Stop noted + lease + release + CDR + close
    rec = await sessions.store.get("acc1", "s2")
    assert rec is not None and rec.state == "closed" and rec.last_usage_s == 70


async def test_moved_identity_is_not_served_from_the_cache(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, "acc1")
    first = await sessions.authorize(call("s1"))
    assert isinstance(first, Authorized) and first.account_id == "acc1"
    await ledger.update_account("acc1", identities=(), who="test")
    await add_account(ledger, "acc2", identities=("user:alice",))
    second = await sessions.authorize(call("s2"))
    assert isinstance(second, Authorized) and second.account_id == "acc2"


async def test_close_rerates_when_a_packet_moved_the_usage(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger)
    info = call("s1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    stale = await sessions.store.get("acc1", "s1")
    assert stale is not None
    # Another daemon's interim raised the usage after this closer read the record.
    await sessions.store.touch("acc1", "s1", usage_s=100, now_ms=T0_MS + 100_000)
    cdr = await sessions.close_session(
        stale, usage_s=50, end_ms=T0_MS + 100_000, status=CdrStatus.NORMAL
    )
    assert cdr is not None and cdr.duration_s == 100
    assert cdr.cost_micros == 100 * 10_000  # Berlin: per second, rated on 100 s
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - cdr.cost_micros and account.reserved_micros == 0
    assert (
        await sessions.close_session(stale, usage_s=50, end_ms=0, status=CdrStatus.NORMAL) is None
    )
    assert len(await read_cdrs(redis)) == 1


async def test_fused_scripts_reload_after_script_flush(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger)
    await redis.script_flush()
    await _whole_call(sessions, clock, "s1", "030123456")
    (cdr,) = await read_cdrs(redis)
    assert cdr.duration_s == 200 and cdr.cost_micros == 200 * 10_000
    assert (await ledger.get_account("acc1")).reserved_micros == 0


async def test_known_caller_rechecked_on_every_authorize(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """What this process remembers (identity -> account, tariff, currency) is checked by
    the script each time: a suspension, a tariff change or a closure is seen at once."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger)
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    await ledger.set_status("acc1", Status.SUSPENDED, who="test")
    assert await sessions.authorize(call("s2")) == Refused(
        RefusalCode.SUSPENDED, "account suspended"
    )
    await ledger.set_status("acc1", Status.ACTIVE, who="test")
    await ledger.update_account("acc1", tariff="", who="test")  # the default plan now
    answer = await sessions.authorize(call("s3"))
    assert isinstance(answer, Authorized)
    rec = await sessions.store.get("acc1", "s3")
    assert rec is not None and rec.plan == "default"
    await ledger.update_account("acc1", tariff="missing", who="test")
    assert await sessions.authorize(call("s4")) == Refused(
        RefusalCode.SYSTEM_ERROR, "tariff not available"
    )
    assert await sessions.store.get("acc1", "s4") is None
    account = await ledger.get_account("acc1")
    assert account.live_sessions == 2  # s1 and s3 hold; s2 and s4 reserved nothing


async def test_reused_session_id_reaches_its_new_account_on_another_daemon(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Daemon B remembers s1 -> acc1; after s1 is reused for acc2 (a gateway bug, RFC
    2866 §5.5), B's accounting for it must still charge acc2, not the closed record."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    daemon_a = make_sessions(redis, ledger, clock, tmp_path / "a")
    daemon_b = make_sessions(redis, await make_ledger(redis, clock), clock, tmp_path / "b")
    await add_account(ledger, "acc1")
    await add_account(ledger, "acc2", identities=("user:bob",))
    first = call("s1")
    assert isinstance(await daemon_a.authorize(first), Authorized)
    await daemon_b.account(usage(first, UsageKind.START, 0, T0_MS))
    await daemon_a.account(usage(first, UsageKind.STOP, 10, T0_MS + 10_000))
    second = call("s1", user="bob")
    answer = await daemon_a.authorize(second)
    assert isinstance(answer, Authorized) and answer.account_id == "acc2"
    await daemon_b.account(usage(second, UsageKind.START, 0, T0_MS + 20_000))
    await daemon_b.account(usage(second, UsageKind.INTERIM, 60, T0_MS + 80_000))
    assert (await ledger.get_account("acc2")).debits_micros == 60 * 10_000
    assert (await ledger.get_account("acc1")).debits_micros == 10 * 10_000


async def test_noscript_storm_loads_the_scripts_once(redis: aioredis.Redis, tmp_path: Path) -> None:
    """Many requests meeting NOSCRIPT together (Redis restarted) share one reload."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, balance_micros=100 * EUR)
    await sessions.store.load_scripts()
    assert isinstance(await sessions.authorize(call("s0")), Authorized)  # caller now known
    await redis.script_flush()
    await redis.config_resetstat()
    answers = await asyncio.gather(*(sessions.authorize(call(f"s{i}")) for i in range(1, 21)))
    assert all(isinstance(a, Authorized) for a in answers)
    stats = await redis.info("commandstats")
    loads = stats.get("cmdstat_script", {}).get("calls", 0)  # none on Redis 7: FCALL
    assert loads <= 2 * len(sessions.store.scripts)  # not one full reload per request
    assert (await ledger.get_account("acc1")).live_sessions == 21
