"""What a new call's authorize runs inside Redis (the fused script, with and without the
fraud rules ahead of it): the commands it calls, counted by INFO commandstats on a real
Redis. The ledger's reserve inside it reads the account once (account_check's read),
reads no lease index when no lease of the account is due, and a retransmission or a
replay is still answered as before (tests/ledger, test_replay_answers_the_same.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import make_fraud
from sessions_harness import add_account, call, make_sessions

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.service import Sessions

CONCURRENT = {"name": "many", "kind": "concurrent", "max_calls": 50, "action": "refuse"}

# One new call's authorize, fused, no locator written (echo_class), request timeout set.
NEW_CALL = {
    "hmget": 2,  # the account (check + reserve), the ledger session hash
    "get": 1,  # the record: a retransmission is answered from it
    "time": 1,  # the late-run check (Redis's clock: a stalled Redis is caught)
    # no expired-lease sweep: no lease of the account is due (its lease_due field)
    # no HGET of the session's own hold: a new call has none (HSETNX tells otherwise)
    "hsetnx": 1,  # the hold
    "hset": 2,  # account, live ids
    "zadd": 2,  # leases, last-seen
    "set": 1,  # the record
}


LEDGER_READS = ("zscore", "zcard", "zrange", "zrangebyscore", "hgetall")


async def build(
    redis: aioredis.Redis, tmp_path: Path, *, fraud: bool, max_calls: int = 0
) -> tuple[Sessions, Ledger, Clock]:
    clock = Clock()
    ledger = Ledger(redis, clock_ms=clock, request_timeout_s=5.0)
    await ledger.load_scripts()
    base = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",))
    engine = await make_fraud(redis, clock, [CONCURRENT], ledger=ledger) if fraud else None
    sessions = Sessions(
        redis=redis,
        ledger=ledger,
        pricer=base.pricer,
        cfg=base.cfg,
        clock_ms=clock,
        data_dir=tmp_path,
        echo_class=("gw1",),
        fraud=engine,
    )
    await sessions.store.load_scripts()
    assert sessions.fused is not None
    await add_account(ledger, max_calls=max_calls)
    return sessions, ledger, clock


async def commands(redis: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def calls_of_one_authorize(redis: aioredis.Redis, sessions: Sessions, sid: str) -> Any:
    await redis.config_resetstat()
    answer = await sessions.authorize(call(sid))
    seen = await commands(redis)
    return answer, seen


@pytest.mark.parametrize("fraud", [False, True])
async def test_a_new_calls_authorize_reads_what_it_needs_once(
    redis: aioredis.Redis, tmp_path: Path, fraud: bool
) -> None:
    sessions, ledger, _ = await build(redis, tmp_path, fraud=fraud)
    # A caller this process does not know yet: its account read, then the fused script
    # (with the rules: never the step-by-step path's check.lua, reserve, record write)
    answer, first = await calls_of_one_authorize(redis, sessions, "s0")
    assert isinstance(answer, Authorized)  # caller known from now on
    assert first.get("evalsha", 0) + first.get("fcall", 0) == 2, first
    assert first.get("set", 0) == 1 + fraud  # the record; the rules' value
    assert first.get("mget", 0) == fraud  # the rules' value read first (Fraud.fetch)
    answer, seen = await calls_of_one_authorize(redis, sessions, "s1")
    assert isinstance(answer, Authorized)
    inner = {k: v for k, v in seen.items() if k in NEW_CALL or k in LEDGER_READS}
    expected = dict(NEW_CALL)
    # the straight first grant (reserve_first.lua): one EXISTS of the ledger session
    # and the record instead of their HMGET and GET
    expected["hmget"] -= 1
    expected["get"] = 0
    expected["exists"] = 1
    inner["exists"] = seen.get("exists", 0)
    inner["get"] = seen.get("get", 0)
    if fraud:  # the rules' value: one GET and one SET of {a:ID}:fr:v
        inner["get"] -= 1
        inner["set"] -= 1
        # decided in the daemon (fraud/local.py, [fraud] local_values: the first call
        # read the value first), so the plain authorize ran: no fraud_seen EXISTS
        assert sessions.fraud is not None
        local = sessions.fraud.fraud.local
        assert local is not None and local.counters["local"] == 2
    assert inner == expected
    account = await ledger.get_account("acc1")
    assert account.live_sessions == 2 and account.reserved_micros > 0


async def test_a_crashed_calls_hold_is_reclaimed_by_the_next_authorize(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A call whose daemon died (never closed): once its lease is over, the next
    authorize on the account reclaims its hold first, in one ZRANGE of the leases."""
    sessions, ledger, clock = await build(redis, tmp_path, fraud=False)
    assert isinstance(await sessions.authorize(call("s0")), Authorized)
    held = (await ledger.get_account("acc1")).reserved_micros
    clock.now_ms += 8 * 86400 * 1000  # past any lease
    answer, seen = await calls_of_one_authorize(redis, sessions, "s1")
    assert isinstance(answer, Authorized)
    assert seen.get("zrange") == 1 and "zrangebyscore" not in seen
    account = await ledger.get_account("acc1")
    assert account.reserved_micros == held  # s1's hold only: s0's came back
    reclaims = [e for e in await ledger.audit("acc1") if e.what == "reclaim"]
    assert [(e.details["session"], int(e.details["amount"])) for e in reclaims] == [("s0", held)]


async def test_with_a_call_limit_only_the_count_is_read(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """max_calls: the account's lease count (ZCARD); whether this session holds already
    is not asked (no ZSCORE): a new call does not, HSETNX would tell."""
    sessions, ledger, _ = await build(redis, tmp_path, fraud=False, max_calls=2)
    assert isinstance(await sessions.authorize(call("s0")), Authorized)
    answer, seen = await calls_of_one_authorize(redis, sessions, "s1")
    assert isinstance(answer, Authorized)
    assert seen.get("zcard") == 1 and "zscore" not in seen and "hget" not in seen
    refused, seen = await calls_of_one_authorize(redis, sessions, "s2")
    assert not isinstance(refused, Authorized)
    assert (await ledger.get_account("acc1")).live_sessions == 2
