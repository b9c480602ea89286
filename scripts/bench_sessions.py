"""Benchmark the credit-control path (sessions.py) on a real Redis, without RADIUS.

Measures authorize (account lookup, rating, reserve, session record) at N requests
in flight, then whole calls (authorize, Start, Interim, Stop with its CDR).

    .venv/bin/python scripts/bench_sessions.py --calls 5000 --inflight 32
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from chargingd.balance import Ledger, Mode
from chargingd.ccapi import Authorized, CallInfo, UsageKind, UsageReport
from chargingd.config import SessionsConfig
from chargingd.redisconn import EmbeddedRedis
from chargingd.sessionrating import Pricer
from chargingd.sessions import Sessions
from chargingd.tariffs import load_plan

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"


def _call(sid: str) -> CallInfo:
    return CallInfo(sid, "bench", "", "030123456", "10.0.0.1", "gw1")


async def _run(url: str, calls: int, inflight: int, data_dir: Path, batch: bool) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    ledger = Ledger(client)
    await ledger.load_scripts()
    await ledger.create_account(
        "bench",
        mode=Mode.PREPAID,
        currency="EUR",
        balance_micros=10**12,
        tariff="retail",
        identities=("user:bench",),
        who="bench",
    )
    sessions = Sessions(
        redis=client,
        ledger=ledger,
        pricer=Pricer({"retail": load_plan(TARIFF)}),
        cfg=SessionsConfig(),
        clock_ms=lambda: int(time.time() * 1000),
        data_dir=data_dir,
    )
    if not batch:  # redis-py pipelines instead of the per-tick command batcher
        sessions.store._batcher = None
    sem = asyncio.Semaphore(inflight)
    latencies: list[float] = []

    async def authorize(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            answer = await sessions.authorize(_call(f"a{i}"))
            latencies.append(time.perf_counter() - t0)
            assert isinstance(answer, Authorized), answer

    before = await _commands(client)
    t0 = time.perf_counter()
    await asyncio.gather(*(authorize(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    per_auth = (await _commands(client) - before - 1) / calls
    lat = sorted(latencies)
    print(
        f"authorize: {calls / elapsed:,.0f}/s, p50 {statistics.median(lat) * 1e3:.2f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms "
        f"({inflight} in flight), {per_auth:.1f} Redis commands each"
    )

    async def whole_call(i: int) -> None:
        async with sem:
            info = _call(f"c{i}")
            now = int(time.time() * 1000)
            assert isinstance(await sessions.authorize(info), Authorized)
            for kind, usage_s in ((UsageKind.START, 0), (UsageKind.INTERIM, 60)):
                await sessions.account(UsageReport(info, kind, usage_s, now + usage_s * 1000))
            await sessions.account(UsageReport(info, UsageKind.STOP, 95, now + 95_000))

    before = await _commands(client)
    t0 = time.perf_counter()
    await asyncio.gather(*(whole_call(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    per_call = (await _commands(client) - before - 1) / calls
    cdrs = await client.xlen("cdr:stream")
    print(
        f"whole calls (auth+start+interim+stop): {calls / elapsed:,.0f}/s, {cdrs} CDRs, "
        f"{per_call:.1f} Redis commands each"
    )
    await client.aclose()


async def _commands(client: aioredis.Redis) -> int:
    info = await client.info("stats")
    return int(info["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--redis-url", default="", help="default: an embedded redis-server")
    parser.add_argument("--no-batch", action="store_true", help="session keys without batching")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.redis_url
        if not url:
            server = EmbeddedRedis(Path(tmp), appendfsync="no")
            server.start()
            url = server.url
        try:
            asyncio.run(_run(url, args.calls, args.inflight, Path(tmp), not args.no_batch))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
