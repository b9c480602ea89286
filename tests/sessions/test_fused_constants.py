"""The plain fused authorize takes the arguments that are the same on every call of a
process (its configuration: partial grants, audit of holds, audit length, reclaims per
reserve, refusal and record ttl, who, new session) from its own code, as the table
ARGV.c (sessions/fused.py _constants): 15 arguments instead of 23. Two daemons of
different configurations side by side each run their own script (library name and
sha differ: its code's hash), each with its own values, by FCALL (redis 7) and by
EVALSHA (the embedded 6.2); the fraud wrapper still passes every argument."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sessions_harness import EUR, Clock, add_account, call, make_sessions

from chargingd.ledger import Ledger
from chargingd.ledger import keys as K
from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import record_key


async def _daemon(
    redis: aioredis.Redis, tmp_path: Path, *, audit_holds: bool, ttl_s: int
) -> Sessions:
    ledger = Ledger(redis, clock_ms=Clock(), audit_holds=audit_holds)
    await ledger.load_scripts()
    sessions = make_sessions(redis, ledger, Clock(), tmp_path, session_ttl_s=ttl_s)
    await sessions.store.load_scripts()
    return sessions


async def _two_configurations(redis: aioredis.Redis, tmp_path: Path) -> dict[str, Any]:
    a = await _daemon(redis, tmp_path / "a", audit_holds=True, ttl_s=7_200)
    b = await _daemon(redis, tmp_path / "b", audit_holds=False, ttl_s=9_000)
    assert a.fused is not None and b.fused is not None
    assert a.fused.library.name != b.fused.library.name
    await add_account(a.ledger, balance_micros=100 * EUR)
    for n in range(3):
        for who, sessions in (("a", a), ("b", b)):
            assert isinstance(await sessions.authorize(call(f"{who}{n}")), Authorized)
    ttls = {}
    for who in ("a", "b"):
        ttls[who] = {await redis.ttl(record_key("acc1", f"{who}{n}")) for n in range(3)}
    audited = [e.details["session"] for e in await a.ledger.audit("acc1") if e.what == "reserve"]
    acct = await a.ledger.get_account("acc1")
    holds: Any = await redis.hgetall(K.holds_key("acc1"))
    assert acct.reserved_micros == sum(int(v) for v in holds.values()) > 0
    assert acct.live_sessions == 6
    # a retransmission of each answered from its record, nothing reserved again
    for who, sessions in (("a", a), ("b", b)):
        assert isinstance(await sessions.authorize(call(f"{who}0")), Authorized)
    assert (await a.ledger.get_account("acc1")).reserved_micros == acct.reserved_micros
    return {"ttls": ttls, "audited": sorted(audited), "a": a, "b": b}


def _check(seen: dict[str, Any]) -> None:
    ttls = seen["ttls"]
    assert all(7_100 < t <= 7_200 for t in ttls["a"]), ttls
    assert all(8_900 < t <= 9_000 for t in ttls["b"]), ttls
    assert seen["audited"] == ["a0", "a1", "a2"]  # audit_holds on a only


async def test_two_configurations_side_by_side_by_fcall(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    await redis7.config_resetstat()
    seen = await _two_configurations(redis7, tmp_path)
    _check(seen)
    info: Any = await redis7.info("commandstats")
    assert int(info["cmdstat_fcall"]["calls"]) >= 6
    assert all(lib.available for lib in (seen["a"].fused.library, seen["b"].fused.library))


async def test_two_configurations_side_by_side_by_evalsha(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    info: Any = await redis.info("server")
    if int(str(info["redis_version"]).split(".")[0]) >= 7:
        pytest.skip("the fixture's Redis has Functions (CHARGINGD_TEST_REDIS=7)")
    _check(await _two_configurations(redis, tmp_path))


def test_the_constants_are_lua_text() -> None:
    from chargingd.sessions.fused import _lua_text

    assert _lua_text("sessions") == "'sessions'"
    assert _lua_text("a'b\\") == "'a\\039b\\092'"
    assert _lua_text("é") == "'\\195\\169'"
