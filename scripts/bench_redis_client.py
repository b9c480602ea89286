#!/usr/bin/env python3
"""Client CPU per Redis call: redis-py vs the per-tick batcher vs a thin hiredis client.

PERFORMANCE.md: one awaited redis-py call costs ~57 us of client CPU, a pipelined one
~22 us. The hot path pipelines per loop tick (ledger.batch.CommandBatcher, redis-py's
connection with hiredis' packer and parser). This measures, from N concurrent tasks
each awaiting one EVALSHA of a reserve-sized script at a time, on one embedded
redis-server (unix socket, its own temp dir):

1. redis-py:   `await client.evalsha(...)` (a pooled connection per call)
2. batch-rp:   CommandBatcher.submit on redis-py's connections (thin=False: the path
               kept for TLS, before round 5 the daemon's)
3. batcher:    CommandBatcher.submit (what the daemon does on a single Redis: its thin
               connections, ledger.thin)
4. thin:       a bare asyncio.Protocol on hiredis.Reader: commands packed by
               hiredis.pack_command, written once per loop tick on one connection,
               replies parsed by hiredis and handed to futures in order (the floor)

For each: calls/s, the client's CPU per call (process time; the server's CPU is not
counted) and p50/p99 latency. The machine is shared: run it twice, compare columns.

Usage: scripts/bench_redis_client.py [--seconds 3] [--tasks 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import hiredis
import redis.asyncio as aioredis
import uvloop

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger.batch import CommandBatcher

# About what reserve.lua does to an account: read two fields, write two, one hash.
SCRIPT = """
local a = redis.call('HMGET', KEYS[1], 'balance', 'reserved')
local balance = tonumber(a[1] or '0')
local reserved = tonumber(a[2] or '0') + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'reserved', reserved, 'seen', ARGV[2])
return {'ok', balance - reserved}
"""


class ThinClient(asyncio.Protocol):
    """Pipelined RESP over one connection: write per tick, replies matched in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._scheduled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            future = self._waiting.popleft()
            if not future.done():
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def call(self, *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append(future)
        self._out.append(hiredis.pack_command(args))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        assert self._transport is not None
        self._transport.write(b"".join(self._out))
        self._out.clear()


async def measure(
    name: str, call: Callable[[int], Awaitable[Any]], tasks: int, seconds: float
) -> None:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await call(n * 1_000_000 + i)
            latencies.append(time.perf_counter() - t0)
            i += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(tasks)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    latencies.sort()
    count = len(latencies)
    p50, p99 = 1e3 * latencies[count // 2], 1e3 * latencies[int(count * 0.99)]
    print(
        f"{name:<9} {count / wall:9,.0f} calls/s  client {1e6 * cpu / count:6.1f} us/call  "
        f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
    )


async def main(seconds: float, tasks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp), appendfsync="no")
        server.start()
        try:
            await run(server, seconds, tasks)
        finally:
            server.stop()


async def run(server: EmbeddedRedis, seconds: float, tasks: int) -> None:
    client = aioredis.Redis.from_url(server.url)
    sha = await client.script_load(SCRIPT)
    keys = [f"{{a:bench{n}}}:acct" for n in range(1000)]

    async def plain(n: int) -> Any:
        return await client.evalsha(sha, 1, keys[n % 1000], 1, n)

    batcher_rp = CommandBatcher(client, thin=False)

    async def batched_rp(n: int) -> Any:
        return await batcher_rp.submit(("EVALSHA", sha, 1, keys[n % 1000], 1, n))

    batcher = CommandBatcher(client)

    async def batched(n: int) -> Any:
        return await batcher.submit(("EVALSHA", sha, 1, keys[n % 1000], 1, n))

    loop = asyncio.get_running_loop()
    _, thin = await loop.create_unix_connection(ThinClient, str(server.socket_path))

    async def thin_call(n: int) -> Any:
        return await thin.call("EVALSHA", sha, 1, keys[n % 1000], 1, n)

    print(f"{tasks} tasks, {seconds:.0f} s each, EVALSHA of a reserve-sized script")
    calls = (
        ("redis-py", plain),
        ("batch-rp", batched_rp),
        ("batcher", batched),
        ("thin", thin_call),
    )
    for name, call in calls:
        await measure(name, call, tasks, seconds)
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(main(args.seconds, args.tasks))
