"""The batcher's thin Redis connection (ledger.thin) against real redis-servers: kills,
restarts, a stopped server, NOSCRIPT, error replies, AUTH, SELECT, TCP and unix."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import ports
import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import AuthenticationError, DataError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chargingd.core.redisconn import EmbeddedRedis, redis_server_binary
from chargingd.ledger.batch import CommandBatcher, CommandNotSent
from chargingd.ledger.thin import pack_batch, pack_command

# Runs ~ARGV[1] ms inside Redis (a command still being run when the test acts).
BUSY = """
local t = redis.call('TIME')
local until_us = t[1] * 1000000 + t[2] + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 'done'
"""


def free_tcp_port() -> int:
    return ports.free_port(socket.SOCK_STREAM)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "r", appendfsync="no")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
async def client(server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    yield client
    await client.aclose()


def started(args: list[str]) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own, answering PING on its TCP port."""
    proc = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--save", "", *args],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    port = int(args[args.index("--port") + 1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


async def test_used_for_a_unix_socket_and_one_connection_keeps_a_batchs_order(
    client: aioredis.Redis,
) -> None:
    batcher = CommandBatcher(client)
    assert batcher.thin is not None and batcher.thin.settings.path is not None
    commands: list[tuple[Any, ...]] = []
    for i in range(50):
        commands += [("RPUSH", "order", i), ("CLIENT", "ID")]
    replies = await asyncio.gather(*batcher.submit_many([(c, None) for c in commands]))
    assert replies[0::2] == list(range(1, 51))  # each RPUSH saw the ones before it
    assert len(set(replies[1::2])) == 1  # all on one connection
    assert await client.lrange("order", 0, -1) == [str(i).encode() for i in range(50)]
    assert batcher.batches == 1


async def test_batches_in_flight_at_once_each_have_a_connection(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client)
    busy = batcher.submit(("EVAL", BUSY, 0, 150))
    await asyncio.sleep(0.02)  # the first batch is out, its reply not yet in
    second = batcher.submit(("CLIENT", "ID"))
    first_id = batcher.submit(("CLIENT", "ID"))  # same tick as `second`: same batch
    assert await busy == b"done"
    assert await second == await first_id
    assert batcher.thin is not None and len(batcher.thin.open) == 2
    await batcher.submit(("CLIENT", "ID"))  # idle connections are reused
    assert len(batcher.thin.open) == 2 and len(batcher.thin.idle) == 2


async def test_a_failing_command_fails_alone(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client)
    await client.set("str", "x")
    futures = batcher.submit_many(
        [(("INCR", "n"), None), (("HGET", "str", "f"), None), (("INCR", "n"), None)]
    )
    assert await futures[0] == 1
    with pytest.raises(ResponseError, match="WRONGTYPE") as info:
        await futures[1]
    assert not isinstance(info.value, RedisConnectionError)
    assert await futures[2] == 2
    assert await batcher.submit(("GET", "n")) == b"2"  # the connection was kept
    assert batcher.thin is not None and len(batcher.thin.open) == 1


@pytest.mark.parametrize("thin", [True, False])
async def test_a_command_that_cannot_be_sent_fails_alone(
    client: aioredis.Redis, thin: bool
) -> None:
    """An argument Redis cannot take (None, an int subclass) in one caller's command:
    that command fails with DataError at once, nothing of it sent; the other callers'
    commands of the same tick are sent and answered (they used to wait with it for the
    socket timeout, then fail: the batch was never written)."""
    batcher = CommandBatcher(client, thin=thin)
    assert (batcher.thin is not None) == thin

    class Micros(int):
        pass

    futures = batcher.submit_many(
        [
            (("INCR", "n"), None),
            (("SET", "who", None), None),
            (("INCRBY", "n", Micros(5)), None),
            (("INCR", "n"), None),
        ]
    )
    started = time.monotonic()
    assert await futures[0] == 1
    for bad in futures[1:3]:
        with pytest.raises(DataError):
            await bad
    assert await futures[3] == 2
    assert time.monotonic() - started < 0.4  # not the socket timeout (0.5 s)
    assert await client.get("n") == b"2" and await client.exists("who") == 0
    only_bad = batcher.submit(("SET", "who", None))  # a batch of it alone
    with pytest.raises(DataError):
        await only_bad
    assert await batcher.submit(("GET", "n")) == b"2"  # the connection is fine
    assert batcher.batches == 3


def test_commands_pack_to_hiredis_bytes_and_errors() -> None:
    """thin's own RESP writer (round 10b) against hiredis.pack_command on random
    commands: the same bytes, or the same error class and message (a float, a
    memoryview, a bool, None, an int subclass, a surrogate, no argument, 64+ arguments,
    lengths across the header tables)."""
    import random

    import hiredis

    class Micros(int):
        pass

    rng = random.Random(5)
    edges: list[Any] = [0, -1, 127, 2**63, -(2**70), 1.5, float("nan"), True, None]
    edges += [Micros(3), bytearray(b"x"), memoryview(b"mv"), "a\udcff", "é中😀", ""]

    def arg() -> Any:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.choice([0, 1, 511, 512, 513, 70_000]))
        if kind == 1:
            return "x" * rng.choice([0, 31, 511, 512, 600]) + rng.choice(["", "é", "中"])
        if kind == 2:
            return rng.randrange(-(2**70), 2**70)
        if kind == 3 and rng.random() < 0.3:
            return rng.choice(edges)
        return rng.choice(["FCALL", "ZADD", "{a:1}:h", "0", 42, -7])

    def packed(pack: Any, command: tuple[Any, ...]) -> tuple[object, ...]:
        try:
            return ("ok", pack(command))
        except Exception as exc:
            return ("error", type(exc), str(exc))

    commands = []
    for _ in range(1500):
        size = rng.choice([0, 1, 2, 3, 17, 63, 64, 70])
        command = tuple(arg() for _ in range(size))
        assert packed(pack_command, command) == packed(hiredis.pack_command, command)
        if packed(hiredis.pack_command, command)[0] == "ok":
            commands.append(command)
    batch: Any = [(c, None, None) for c in commands[:200]]
    assert pack_batch(batch) == b"".join(hiredis.pack_command(c) for c in commands[:200])


def test_batches_pack_to_hiredis_bytes_and_errors() -> None:
    """pack_batch (the C packer where built, else the parts) against the bytes
    hiredis.pack_command writes, on random batches of the arguments the hot path sends
    (ASCII str, int, binary bytes) with non-ASCII str, surrogates and other types mixed
    in: the same bytes, or the same error."""
    import random

    import hiredis

    rng = random.Random(12)

    def arg(odd: bool) -> Any:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.choice([0, 1, 9, 200, 511, 512, 513, 4000]))
        if kind == 1:
            return rng.randrange(-(2**70), 2**70) if rng.random() < 0.2 else rng.randrange(10**9)
        if kind == 2:
            return "".join(chr(rng.randrange(128)) for _ in range(rng.choice([0, 1, 27, 511, 512])))
        if odd and kind == 3:
            return rng.choice(["é", "x中", "a\udcff", "\x80", 1.5, True, None, bytearray(b"b")])
        return rng.choice(["FCALL", "chargingd_a_1", "{a:000000000042}:r:m-1", "sess:lc:7", "0"])

    for _ in range(2000):
        odd = rng.random() < 0.3
        commands = [
            tuple(arg(odd) for _ in range(rng.choice([1, 2, 3, 12, 25, 63])))
            for _ in range(rng.choice([1, 1, 2, 3, 6]))
        ]
        try:
            want: Any = b"".join(hiredis.pack_command(c) for c in commands)
        except Exception as exc:
            want = type(exc)
        batch: Any = [(c, None, None) for c in commands]
        try:
            got: Any = pack_batch(batch)
        except Exception as exc:
            got = type(exc)
        assert got == want, commands


def test_the_c_packer_packs_as_hiredis_or_declines() -> None:
    """ledger/_resp.c's pack_batch (round 12a) against hiredis.pack_command's bytes on
    random batches: the same bytes when every argument is exactly bytes, an ASCII str
    or a 64-bit int; None (thin.py packs it) for a batch with any other argument,
    command or entry; never an error of its own."""
    import random

    import hiredis

    from chargingd.ledger import thin

    packer = thin._load_packer()
    if packer is None:
        pytest.skip("ledger/_resp.c not built (make compiled)")
    assert thin._PACK_C is not None
    rng = random.Random(21)
    odd_values: list[Any] = ["é", "x中", "a\udcff", "\x80", 2**63, -(2**63) - 1, 1.5, True]
    odd_values += [None, bytearray(b"b"), memoryview(b"m")]

    def arg(odd: bool) -> Any:
        kind = rng.randrange(6)
        if kind == 0:
            return rng.randbytes(rng.choice([0, 1, 9, 511, 512, 70_000]))
        if kind == 1:
            return rng.choice([0, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**63), 2**63)])
        if kind == 2:
            return "".join(chr(rng.randrange(128)) for _ in range(rng.choice([0, 1, 27, 600])))
        if odd and kind == 3:
            return rng.choice(odd_values)
        return rng.choice(["FCALL", "{a:000000000042}:r:m-1", "sess:lc:7", "", 42])

    packed = declined = 0
    for _ in range(3000):
        odd = rng.random() < 0.3
        commands = [
            tuple(arg(odd) for _ in range(rng.choice([1, 2, 12, 63] + [0, 64] * odd)))
            for _ in range(rng.choice([0, 1, 2, 5]))
        ]
        batch: Any = [(c, None, None) for c in commands]
        if odd and commands and rng.random() < 0.1:
            batch[0] = (list(commands[0]), None, None)  # not a tuple: declined
        plain = all(type(c) is tuple for c, _, _ in batch) and all(
            0 < len(c) < 64
            and all(
                type(a) is bytes
                or (type(a) is str and a.isascii())
                or (type(a) is int and -(2**63) <= a < 2**63)
                for a in c
            )
            for c, _, _ in batch
        )
        got = packer(batch)
        if plain:
            assert got == b"".join(hiredis.pack_command(c) for c in commands)
            assert pack_batch(batch) == got
            packed += 1
        else:
            assert got is None
            declined += 1
    assert packed > 1000 and declined > 300
    assert packer(()) is None and packer([]) == b""


async def test_noscript_runs_the_retry_after_script_flush(client: aioredis.Redis) -> None:
    batcher = CommandBatcher(client)
    sha = await client.script_load("return ARGV[1]")
    assert await batcher.submit(("EVALSHA", sha, 0, "a")) == b"a"
    await client.script_flush()
    retried: list[str] = []

    async def retry() -> Any:
        retried.append("yes")
        await client.script_load("return ARGV[1]")
        return await client.evalsha(sha, 0, "b")

    ok = batcher.submit(("EVALSHA", sha, 0, "b"), retry=retry)
    bare = batcher.submit(("EVALSHA", sha, 0, "c"))  # no retry: the error itself
    after = batcher.submit(("INCR", "n"))
    assert await ok == b"b" and retried == ["yes"]
    with pytest.raises(NoScriptError):
        await bare
    assert await after == 1


async def test_redis_killed_mid_batch_fails_every_command_as_maybe_run(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"
    futures = batcher.submit_many(
        [(("SET", "k", "1"), None), (("EVAL", BUSY, 0, 2000), None), (("INCR", "n"), None)]
    )
    await asyncio.sleep(0.1)  # the script runs
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert failed and all(isinstance(o, RedisConnectionError) for o in failed), outcomes
    assert not any(isinstance(o, CommandNotSent) for o in failed)  # it may have run
    assert isinstance(outcomes[1], RedisConnectionError)
    with pytest.raises(CommandNotSent):  # nothing to connect to: never sent
        await batcher.submit(("PING",))


async def test_next_batch_after_a_restart_works(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("INCR", "n")) == 1
    assert batcher.thin is not None and len(batcher.thin.idle) == 1
    server.stop()  # the idle connection's server goes away (no loop turn between)
    with pytest.raises(CommandNotSent):
        await batcher.submit(("INCR", "n"))
    server.start()
    assert await batcher.submit(("SET", "m", "1")) == b"OK"
    server.stop()
    server.start()  # again, this time with no call in between
    assert await batcher.submit(("GET", "m")) == b"1"  # AOF: still there


async def test_a_stopped_redis_times_the_batch_out(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"  # an idle connection to reuse
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        futures = batcher.submit_many([(("INCR", "n"), None), (("INCR", "n"), None)])
        outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
        waited = time.monotonic() - t0
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        assert 0.4 <= waited < 2.0  # one deadline for the batch: the socket timeout
        assert batcher.thin is not None and not batcher.thin.open  # dropped
        # No idle connection left: a new one cannot finish its HELLO, so nothing was sent.
        with pytest.raises(CommandNotSent):
            await batcher.submit(("INCR", "n"))
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert await batcher.submit(("INCR", "n")) == 3  # the timed-out batch ran late
    assert await client.get("n") == b"3"


async def test_each_batch_has_its_own_full_deadline(client: aioredis.Redis) -> None:
    """The connection's timer, armed by an earlier batch, does not cut a later one short."""
    batcher = CommandBatcher(client)  # socket timeout 0.5 s
    assert await batcher.submit(("PING",)) == b"PONG"  # arms the timer: t + 0.5
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    assert await batcher.submit(("EVAL", BUSY, 0, 350)) == b"done"  # answered at ~0.65
    # The earlier batch's timer would have cut it ~0.2 s after t0. Not >= 0.35: the
    # script counts Redis's wall clock, this the monotonic one (CI read 0.3488 s once).
    assert time.monotonic() - t0 >= 0.3
    with pytest.raises(RedisTimeoutError):  # and a batch past its own deadline fails
        await batcher.submit(("EVAL", BUSY, 0, 700))
    assert await batcher.submit(("GET", "absent")) is None  # on a new connection


async def test_cancellation_cancels_the_batch_and_drops_its_connection(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        futures = batcher.submit_many([(("INCR", "n"), None), (("INCR", "n"), None)])
        await asyncio.sleep(0.05)
        batcher.close()  # the daemon stopping (or the client's aclose)
        assert all(f.cancelled() for f in futures)
        assert batcher.thin is not None and not batcher.thin.open
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert await batcher.submit(("GET", "n")) in (b"2", None)  # a new connection
    assert await batcher.submit(("INCR", "n")) == 3  # the cancelled batch had run


async def test_the_clients_aclose_closes_the_thin_connections(server: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(server.url)
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"
    assert batcher.thin is not None and len(batcher.thin.open) == 1
    await client.aclose()
    assert not batcher.thin.open


async def test_auth_select_and_tcp(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = started(["--port", str(port), "--requirepass", "s3cret"])
    try:
        url = f"redis://:s3cret@127.0.0.1:{port}/2"
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1)
        batcher = CommandBatcher(client)
        assert batcher.thin is not None and batcher.thin.settings.port == port
        assert await batcher.submit(("SET", "in2", "yes")) == b"OK"
        assert await client.get("in2") == b"yes"  # redis-py's view: db 2
        await client.execute_command("ACL", "SETUSER", "alice", "on", ">pw2", "~*", "+@all")
        # An error reply of a ConnectionError class (WRONGPASS; LOADING, NOAUTH) fails the
        # rest of its batch and drops the connection, as redis-py's read_response does.
        for each in (CommandBatcher(client, thin=False), batcher):
            futures = each.submit_many(
                [(("INCR", "x"), None), (("AUTH", "wrong"), None), (("INCR", "x"), None)]
            )
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            assert isinstance(outcomes[0], int), outcomes
            assert all(type(o) is AuthenticationError for o in outcomes[1:]), outcomes
        assert len(batcher.thin.open) == 0
        assert await client.get("x") == b"4"  # the third INCRs ran (they are "maybe run")
        await client.aclose()

        alice = aioredis.Redis.from_url(f"redis://alice:pw2@127.0.0.1:{port}/2")
        batcher = CommandBatcher(alice)
        assert await batcher.submit(("ACL", "WHOAMI")) == b"alice"
        assert await batcher.submit(("GET", "in2")) == b"yes"
        await alice.aclose()

        wrong = aioredis.Redis.from_url(f"redis://:nope@127.0.0.1:{port}/0")
        batcher = CommandBatcher(wrong)
        with pytest.raises(CommandNotSent) as info:
            await batcher.submit(("PING",))
        assert isinstance(info.value.__cause__, AuthenticationError)
        with pytest.raises(CommandNotSent):
            await CommandBatcher(wrong, thin=False).submit(("PING",))
        await wrong.aclose()

        none = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
        batcher = CommandBatcher(none)  # no password: HELLO refused (NOAUTH), as redis-py's
        with pytest.raises(CommandNotSent) as noauth:
            await batcher.submit(("PING",))
        assert isinstance(noauth.value.__cause__, AuthenticationError)
        with pytest.raises(CommandNotSent):  # redis-py's own connection: the same
            await CommandBatcher(none, thin=False).submit(("PING",))
        await none.aclose()
    finally:
        proc.kill()
        proc.wait()


async def test_redis_without_hello_gets_resp2(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc = started(["--port", str(port), "--rename-command", "HELLO", '""'])
    try:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/1")
        batcher = CommandBatcher(client)
        assert batcher.thin is not None and batcher.thin.settings.resp3
        assert await batcher.submit(("SET", "k", "v")) == b"OK"
        assert not batcher.thin.settings.resp3  # fell back, as redis-py does
        assert await batcher.submit(("GET", "k")) == b"v"
        await client.aclose()
    finally:
        proc.kill()
        proc.wait()


def test_tls_and_resp2_settings() -> None:
    tls = aioredis.Redis.from_url("rediss://127.0.0.1:6380/0")
    assert CommandBatcher(tls).thin is None  # TLS: redis-py's connections
    resp2 = aioredis.Redis.from_url("redis://127.0.0.1:6380/0", protocol=2)
    batcher = CommandBatcher(resp2)
    assert batcher.thin is not None and not batcher.thin.settings.resp3
    assert batcher.thin.settings.handshake() == []


@pytest.mark.parametrize(
    "scenario",
    [
        test_next_batch_after_a_restart_works,
        test_a_stopped_redis_times_the_batch_out,
        test_redis_killed_mid_batch_fails_every_command_as_maybe_run,
    ],
    ids=["restart", "stopped", "killed"],
)
def test_under_uvloop(server: EmbeddedRedis, scenario: Any) -> None:
    """The daemon's loop (uvloop: its transports, its socket objects) does the same."""

    async def run() -> None:
        client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            await scenario(server, client)
        finally:
            await client.aclose()

    uvloop.run(run())


@pytest.mark.parametrize("thin", [True, False], ids=["thin", "redis-py"])
async def test_a_group_resolves_once_with_every_outcome_in_its_place(
    client: aioredis.Redis, thin: bool
) -> None:
    """submit_group (one future for commands sent together, round 19a): the replies in
    order, a failing command's error in its place (WRONGTYPE, NOSCRIPT without a retry,
    an argument no Redis type takes), a NOSCRIPT with its retry answered by the retry;
    the others ran; the same outcomes as a future per command (submit_many)."""
    batcher = CommandBatcher(client, thin=thin)
    sha = await client.script_load("return ARGV[1]")
    await client.set("str", "x")
    await client.script_flush()
    retried: list[str] = []

    async def retry() -> Any:
        retried.append("yes")
        await client.script_load("return ARGV[1]")
        return await client.evalsha(sha, 0, "b")

    commands: list[tuple[tuple[Any, ...], Any]] = [
        (("INCR", "n"), None),
        (("HGET", "str", "f"), None),  # WRONGTYPE
        (("EVALSHA", sha, 0, "b"), retry),  # NOSCRIPT, then its retry's reply
        (("EVALSHA", sha, 0, "c"), None),  # NOSCRIPT, no retry: the error itself
        (("SET", "who", None), None),  # never sent: DataError
        (("INCR", "n"), None),
    ]
    group = batcher.submit_group(commands)
    assert not group.done()
    outcomes = await group
    assert outcomes[0] == 1 and outcomes[5] == 2
    assert isinstance(outcomes[1], ResponseError) and "WRONGTYPE" in str(outcomes[1])
    assert outcomes[2] == b"b" and retried == ["yes"]
    assert isinstance(outcomes[3], NoScriptError)
    assert isinstance(outcomes[4], DataError)
    assert await client.exists("who") == 0
    # as a future per command answers them
    await client.script_flush()
    futures = batcher.submit_many(commands)
    each = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o) for o in each] == [type(o) for o in outcomes]
    assert (each[0], each[2], each[5]) == (3, b"b", 4)
    assert await batcher.submit_group([]) == []


async def test_a_group_in_a_batch_redis_dropped_fails_every_command_in_its_place(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"
    group = batcher.submit_group(
        [(("SET", "k", "1"), None), (("EVAL", BUSY, 0, 2000), None), (("INCR", "n"), None)]
    )
    await asyncio.sleep(0.1)  # the script runs
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    outcomes = await group  # resolved (not raised), each command's outcome in its place
    assert len(outcomes) == 3
    # (the SET's reply is written by Redis after the script, with it, or not at all)
    assert outcomes[0] == b"OK" or isinstance(outcomes[0], RedisConnectionError)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes[1:]), outcomes
    assert not any(isinstance(o, CommandNotSent) for o in outcomes)  # they may have run


async def test_a_group_is_cancelled_with_its_batch(
    server: EmbeddedRedis, client: aioredis.Redis
) -> None:
    batcher = CommandBatcher(client)
    assert await batcher.submit(("PING",)) == b"PONG"
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        group = batcher.submit_group([(("INCR", "n"), None), (("INCR", "n"), None)])
        await asyncio.sleep(0.05)
        batcher.close()
        assert group.cancelled()
        assert batcher.thin is not None and not batcher.thin.open
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert await batcher.submit(("GET", "n")) in (b"2", None)  # a new connection
    assert await batcher.submit(("INCR", "n")) == 3  # the cancelled batch had run
