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
from sessions_harness import EUR, Clock, add_account, call, make_sessions, read_cdrs, usage

from chargingd.ledger import Ledger
from chargingd.ledger import keys as K
from chargingd.sessions.ccapi import Authorized, UsageKind
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


# Round 17a (docs/performance.md): the Interim's and the Stop's fused scripts take this
# process's values from their code too (session_renew.lua: RENEW_COMMIT, RENEW_RESERVE;
# session_stop.lua: STOP_LEASE_S, STOP_RELEASE): 11 and 7 arguments, not 27 and 12.


async def _accounting_side_by_side(redis: aioredis.Redis, tmp_path: Path) -> dict[str, Any]:
    """Two daemons of different ledger configurations (audit of holds, the ledger
    session's ttl) each authorize, start, renew twice and stop calls of one account."""
    clock = Clock()
    daemons = {}
    for who, audit_holds, ttl_s in (("a", True, 3_600), ("b", False, 5_400)):
        ledger = Ledger(redis, clock_ms=clock, audit_holds=audit_holds, session_ttl_s=ttl_s)
        await ledger.load_scripts()
        sessions = make_sessions(redis, ledger, clock, tmp_path / who)
        await sessions.store.load_scripts()
        daemons[who] = sessions
    a, b = daemons["a"], daemons["b"]
    assert a.fused is not None and b.fused is not None
    assert a.fused.renew_library.name != b.fused.renew_library.name
    assert a.fused.stop_library.name != b.fused.stop_library.name
    await add_account(a.ledger, balance_micros=100 * EUR)
    for n in range(2):
        for who, sessions in daemons.items():
            info = call(f"{who}{n}")
            assert isinstance(await sessions.authorize(info), Authorized)
            await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
    seen: dict[str, Any] = {"a": a, "b": b}
    for usage_s in (60, 120):
        clock.advance(60_000)
        for who, sessions in daemons.items():
            for n in range(2):
                info = call(f"{who}{n}")
                await sessions.account(usage(info, UsageKind.INTERIM, usage_s, clock.now_ms))
    # the renewals' ledger sessions expire after their own daemon's session ttl
    seen["ls_ttl"] = {
        who: {await redis.ttl(K.session_key("acc1", f"{who}{n}")) for n in range(2)}
        for who in daemons
    }
    clock.advance(10_000)
    for who, sessions in daemons.items():
        for n in range(2):
            info = call(f"{who}{n}")
            await sessions.account(usage(info, UsageKind.STOP, 130, clock.now_ms))
    # (the close lease is dropped with the closed mark: its seconds read in the code)
    seen["code"] = {who: sessions.fused.stop_library.code for who, sessions in daemons.items()}
    seen["stopped_ttl"] = {
        who: {await redis.ttl(K.session_key("acc1", f"{who}{n}")) for n in range(2)}
        for who in daemons
    }
    audit = await a.ledger.audit("acc1", count=1_000)
    seen["audit"] = sorted(
        (e.what, e.details.get("session"), e.who) for e in audit if e.what != "create"
    )
    acct = await a.ledger.get_account("acc1")
    seen["money"] = (acct.reserved_micros, acct.debits_micros, acct.live_sessions)
    seen["cdrs"] = sorted((c.call_id, c.charged_micros) for c in await read_cdrs(redis))
    return seen


def _check_accounting(seen: dict[str, Any]) -> None:
    assert all(3_500 < t <= 3_600 for t in seen["ls_ttl"]["a"]), seen["ls_ttl"]
    assert all(5_300 < t <= 5_400 for t in seen["ls_ttl"]["b"]), seen["ls_ttl"]
    assert all(3_500 < t <= 3_600 for t in seen["stopped_ttl"]["a"]), seen["stopped_ttl"]
    assert all(5_300 < t <= 5_400 for t in seen["stopped_ttl"]["b"]), seen["stopped_ttl"]
    for who, ttl_ms in (("a", "3600000"), ("b", "5400000")):
        code = seen["code"][who]
        assert "local STOP_LEASE_S = '30'\n" in code
        assert f"local STOP_RELEASE = {{'sessions', '100000', '{ttl_ms}', '8'}}\n" in code
    audit = seen["audit"]
    assert {who for _, _, who in audit} == {"sessions"}
    for sid in ("a0", "a1", "b0", "b1"):
        assert [w for w, s, _ in audit if s == sid and w in ("commit", "release")] == [
            "commit",
            "commit",
            "release",
        ], audit
    # the holds audited on a only: its authorizes' and both renewals' reserves
    reserves = sorted(s for w, s, _ in audit if w == "reserve")
    assert reserves == ["a0", "a0", "a0", "a1", "a1", "a1"], reserves
    reserved, debits, live = seen["money"]
    assert (reserved, live) == (0, 0)
    assert debits == sum(charged for _, charged in seen["cdrs"]) > 0
    assert len(seen["cdrs"]) == 4


async def test_accounting_of_two_configurations_side_by_side_by_fcall(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    await redis7.config_resetstat()
    seen = await _accounting_side_by_side(redis7, tmp_path)
    _check_accounting(seen)
    info: Any = await redis7.info("commandstats")
    assert int(info["cmdstat_fcall"]["calls"]) >= 16  # 4 authorizes, 8 Interims, 4 Stops
    libraries = [s.fused.renew_library for s in (seen["a"], seen["b"])]
    libraries += [s.fused.stop_library for s in (seen["a"], seen["b"])]
    assert all(lib.available and lib.loads for lib in libraries)


async def test_accounting_of_two_configurations_side_by_side_by_evalsha(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    info: Any = await redis.info("server")
    if int(str(info["redis_version"]).split(".")[0]) >= 7:
        pytest.skip("the fixture's Redis has Functions (CHARGINGD_TEST_REDIS=7)")
    _check_accounting(await _accounting_side_by_side(redis, tmp_path))
