"""The plain authorize and the accounting scripts (renew, close, stop) as Redis Functions
libraries (sessions/fusedlib.py, sessions/fused.py) on a real redis-server 7: each step
goes by FCALL (counted in INFO commandstats, so a silent fall back to EVALSHA fails
here), a lost library is loaded again under concurrent calls without a micro-unit lost
or charged twice, a daemon still on EVALSHA (an older version, or a Redis 6) works
beside one on FCALL, and a Redis without Functions (the embedded 6.2) gets EVALSHA."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    _worker_calls,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.core import redisconn
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.fusedlib import FusedLibrary
from chargingd.sessions.service import Sessions


async def stats(redis: aioredis.Redis) -> dict[str, int]:
    """Calls so far of FCALL and EVALSHA (INFO commandstats)."""
    info: dict[str, Any] = await redis.info("commandstats")
    return {c: int(info.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("fcall", "evalsha")}


async def delta(redis: aioredis.Redis, before: dict[str, int]) -> dict[str, int]:
    after = await stats(redis)
    return {c: after[c] - before[c] for c in after}


async def started(redis: aioredis.Redis, tmp_path: Path, *, evalsha: bool = False) -> Sessions:
    """A daemon's Sessions after its start (scripts and libraries loaded); ``evalsha``:
    as a version without the libraries (or on a Redis without Functions) calls."""
    ledger = await make_ledger(redis, Clock())
    sessions = make_sessions(redis, ledger, Clock(), tmp_path)
    await sessions.store.load_scripts()
    if evalsha:
        for library in libraries(sessions):
            library.available = False
    return sessions


async def library_names(redis: aioredis.Redis) -> set[str]:
    """The libraries loaded (FUNCTION LIST)."""
    listed = await redis.function_list()
    return {_text(dict(zip(e[::2], e[1::2], strict=True))[b"library_name"]) for e in listed}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def libraries(sessions: Sessions) -> tuple[FusedLibrary, ...]:
    assert sessions.fused is not None
    return sessions.fused.libraries


async def steps(redis: aioredis.Redis, sessions: Sessions, sid: str) -> list[dict[str, int]]:
    """One call, step by step: the FCALL/EVALSHA counts of its authorize, Start,
    Interim, Stop; then of a close by the closer (another call, its record read)."""
    counts = []
    info = call(sid)
    before = await stats(redis)
    assert isinstance(await sessions.authorize(info), Authorized)
    counts.append(await delta(redis, before))
    for kind, usage_s in ((UsageKind.START, 0), (UsageKind.INTERIM, 60), (UsageKind.STOP, 70)):
        before = await stats(redis)
        await sessions.account(usage(info, kind, usage_s, T0_MS + usage_s * 1000))
        counts.append(await delta(redis, before))
    other = call(f"{sid}-closed")
    assert isinstance(await sessions.authorize(other), Authorized)
    await sessions.account(usage(other, UsageKind.START, 0, T0_MS))
    rec = await sessions.store.get("acc1", other.session_id)
    assert rec is not None
    before = await stats(redis)
    cdr = await sessions.close_session(rec, usage_s=30, end_ms=T0_MS, status=CdrStatus.NORMAL)
    assert cdr is not None and cdr.duration_s == 30
    counts.append(await delta(redis, before))
    return counts


async def test_every_fused_step_goes_by_fcall(redis7: aioredis.Redis, tmp_path: Path) -> None:
    """authorize, Interim (renew), Stop (stop) and a closer's close: one FCALL each,
    where the same steps by EVALSHA send one EVALSHA more each; the Start (a touch)
    is no fused script."""
    old = await started(redis7, tmp_path / "old", evalsha=True)
    await add_account(old.ledger, balance_micros=100 * EUR)
    assert isinstance(await old.authorize(call("warm")), Authorized)  # caller known
    by_evalsha = await steps(redis7, old, "e1")
    new = await started(redis7, tmp_path / "new")
    assert all(library.available for library in libraries(new))
    assert isinstance(await new.authorize(call("warm2")), Authorized)
    by_fcall = await steps(redis7, new, "f1")
    assert [c["fcall"] for c in by_evalsha] == [0, 0, 0, 0, 0]
    assert [c["fcall"] for c in by_fcall] == [1, 0, 1, 1, 1]
    for e, f in zip(by_evalsha, by_fcall, strict=True):
        assert e["evalsha"] - f["evalsha"] == f["fcall"]
    account = await new.ledger.get_account("acc1")
    cdrs = await read_cdrs(redis7)
    assert len(cdrs) == 4  # e1, e1-closed, f1, f1-closed
    assert account.debits_micros == sum(c.cost_micros for c in cdrs) > 0
    assert account.live_sessions == 2  # the two warm-up calls


async def test_on_redis_without_functions_every_step_goes_by_evalsha(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The embedded 6.2: the libraries are found unusable at start, or (a daemon that
    did not load them) at the first call of each, which then goes by EVALSHA."""
    info = await redis.info("server")
    if int(str(info["redis_version"]).split(".")[0]) >= 7:
        pytest.skip("this Redis has Functions")
    sessions = await started(redis, tmp_path / "a")
    assert not any(library.available for library in libraries(sessions))
    await add_account(sessions.ledger, balance_micros=100 * EUR)
    assert isinstance(await sessions.authorize(call("warm")), Authorized)
    counts = await steps(redis, sessions, "s1")
    assert all(c["fcall"] == 0 for c in counts)
    assert [c["evalsha"] > 0 for c in counts] == [True, True, True, True, True]
    cold = make_sessions(redis, sessions.ledger, Clock(), tmp_path / "b")  # no start
    assert isinstance(await cold.authorize(call("s2")), Authorized)
    assert not libraries(cold)[0].available and libraries(cold)[0].loads == 0
    assert (await sessions.ledger.get_account("acc1")).live_sessions == 2


async def test_function_flush_under_two_daemons_keeps_the_books(
    redis7: aioredis.Redis, redis7_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Two daemons' calls at once on one prepaid account that cannot pay for all of
    them (authorize, Start, Interim and its retransmission, a duplicated Stop), the
    libraries flushed three times meanwhile: every call ends in one CDR, nothing is
    left reserved, the debits are the CDRs' costs and the balance never goes below 0."""
    ledger = await make_ledger(redis7, Clock())
    await add_account(ledger, "shared", balance_micros=20 * EUR, identities=("user:shared",))

    async def flusher() -> None:  # each time 20 more FCALLs went through, reloaded
        for _ in range(3):
            mark = (await stats(redis7))["fcall"]
            while (await stats(redis7))["fcall"] < mark + 20 or not await library_names(redis7):
                await asyncio.sleep(0.002)
            await redis7.execute_command("FUNCTION", "FLUSH")

    await redis7.config_resetstat()
    before = await stats(redis7)
    results = await asyncio.gather(
        _worker_calls(redis7_server.url, 0, 60, tmp_path / "d0"),
        _worker_calls(redis7_server.url, 1, 60, tmp_path / "d1"),
        flusher(),
    )
    used = await delta(redis7, before)
    assert used["fcall"] > 100  # the calls went by FCALL (a flush costs a reload each)
    info: dict[str, Any] = await redis7.info("commandstats")
    assert info["cmdstat_fcall"]["failed_calls"] >= 3  # "Function not found" after each
    authorized = sorted(sid for r in results[:2] for sid in r[1])
    refused = sum(r[2] for r in results[:2])
    assert len(authorized) + refused == 120
    assert refused > 0 and authorized  # the money really ran out
    assert min(r[3] for r in results[:2]) >= 0
    cdrs = await read_cdrs(redis7)
    assert sorted(c.call_id for c in cdrs) == authorized  # one CDR per call
    assert not [c for c in cdrs if c.status == "overrun"]
    account = await ledger.get_account("shared")
    assert account.reserved_micros == 0 and account.live_sessions == 0
    assert account.debits_micros == sum(c.cost_micros for c in cdrs)
    assert account.balance_micros == 20 * EUR - account.debits_micros >= 0


async def test_a_daemon_on_evalsha_beside_one_on_fcall(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """A rolling upgrade: the older daemon sends the scripts (EVALSHA), the newer one
    calls the library, another version's library of the same kind stays loaded; the
    same calls, interleaved, retransmitted from one to the other: charged once."""
    older = "local function older() return 2 end"
    other = FusedLibrary(redis7, older, "return older()", prefix="chargingd_a_")
    await other.load()
    old = await started(redis7, tmp_path / "old", evalsha=True)
    new = await started(redis7, tmp_path / "new")
    await add_account(old.ledger, balance_micros=10 * EUR)
    sids = [f"s{i}" for i in range(10)]
    first = await asyncio.gather(*(old.authorize(call(s)) for s in sids))
    again = await asyncio.gather(*(new.authorize(call(s)) for s in sids))  # retransmitted
    assert all(isinstance(a, Authorized) for a in first + again)
    for i, sid in enumerate(sids):
        a, b = (old, new) if i % 2 else (new, old)
        info = call(sid)
        await a.account(usage(info, UsageKind.START, 0, T0_MS))
        interim = usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000)
        await asyncio.gather(a.account(interim), b.account(interim))
        stop = usage(info, UsageKind.STOP, 90, T0_MS + 90_000)
        await asyncio.gather(b.account(stop), a.account(stop))
    cdrs = await read_cdrs(redis7)
    assert sorted(c.call_id for c in cdrs) == sorted(sids)
    assert {c.cost_micros for c in cdrs} == {90 * 10_000}  # Berlin, per second
    account = await old.ledger.get_account("acc1")
    assert account.reserved_micros == 0 and account.live_sessions == 0
    assert account.debits_micros == 10 * 90 * 10_000
    names = await library_names(redis7)
    assert other.name in names
    assert {lib.name for lib in libraries(new)} - {libraries(new)[1].name} <= names


async def test_calls_go_on_after_redis_restarts(tmp_path: Path) -> None:
    """A redis-server 7 restarted without the libraries (flushed before: its AOF says
    so): the daemon's calls meet "Function not found", load them again and go on by
    FCALL (a call in flight while Redis was down may fail, as any command)."""
    from conftest import redis7_binary, start_redis7

    server = start_redis7(tmp_path / "redis")
    client = aioredis.Redis.from_url(server.url)
    try:
        sessions = await started(client, tmp_path / "d")
        await add_account(sessions.ledger, balance_micros=10 * EUR)
        assert isinstance(await sessions.authorize(call("s1")), Authorized)
        await client.execute_command("FUNCTION", "FLUSH")
        server.stop()
        with pytest.MonkeyPatch.context() as patch:  # the same redis-server 7 again
            patch.setattr(redisconn, "redis_server_binary", lambda: redis7_binary())
            server.start()
        with contextlib.suppress(redis.exceptions.ConnectionError):
            await client.ping()  # the client's connection from before the restart
        loads = sum(lib.loads for lib in libraries(sessions))
        assert await library_names(client) == set()
        counts = await steps(client, sessions, "s2")
        # each fused step's first FCALL met "Function not found" (a call, failed),
        # its library was loaded and the FCALL sent again
        assert [c["fcall"] for c in counts] == [2, 0, 2, 2, 2]
        assert sum(lib.loads for lib in libraries(sessions)) - loads == 4  # a, r, s, c
        assert (await sessions.ledger.get_account("acc1")).live_sessions == 1
    finally:
        await client.aclose()
        server.stop()
