"""What one reaper pass and one monitoring sample cost with G gateways (the readers of
every gateway's last-seen shards), independent of the number of calls.

On a private redis-server: G gateways, each with a few live calls (not due), the
deployment's shard count. Times ``passes`` reaper passes (Reaper.run_once: spool replay,
registry, old-index drain, the oldest due entries) and as many monitoring samples
(ClusterSampler.sample), and reports per pass: client CPU (process time), commands the
client sent (counted where they are packed), Redis CPU (INFO used_cpu_user+sys, whole
run / passes). Run: ``python scripts/bench_shard_readers.py --gateways 100 500``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import hiredis
import redis.asyncio as aioredis
from bench_common import bench_redis

from chargingd.ledger import Ledger
from chargingd.ledger.batch import CommandBatcher
from chargingd.monitoring.sampler import ClusterSampler
from chargingd.monitoring.windows import KpiStore
from chargingd.sessions.reaper import Reaper
from chargingd.sessions.record import member
from chargingd.sessions.shards import SHARDS_KEY
from chargingd.sessions.spool import Spool
from chargingd.sessions.store import GATEWAYS, SessionStore


class Sent:
    """Commands the client sends: redis-py packs with hiredis (pipelines and single
    commands); the batchers' thin connections pack their own (ledger/thin.py, compiled:
    no hook), so theirs are counted by the batchers (`commands`) that have them."""

    count = 0
    batchers: ClassVar[list[CommandBatcher]] = []

    @classmethod
    def total(cls) -> int:
        return cls.count + sum(b.commands for b in cls.batchers if b.thin is not None)

    @classmethod
    def install(cls) -> None:
        pack = hiredis.pack_command

        def counted(command: Any) -> Any:
            cls.count += 1
            return pack(command)

        hiredis.pack_command = counted


async def _redis_cpu_s(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _seed(redis: aioredis.Redis, store: SessionStore, gateways: int, calls: int) -> None:
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for g in range(gateways):
        gateway = f"10.{g // 250}.{g % 250}.1"
        pipe.sadd(GATEWAYS, gateway)
        for c in range(calls):
            sid = f"call-{g}-{c}@{gateway}"
            pipe.zadd(store.lastseen(gateway, sid), {member(f"acc{g}", sid): now_ms})
    await pipe.execute()


async def _measure(name: str, run: Any, redis: aioredis.Redis, passes: int) -> dict[str, Any]:
    await run()  # warm: scripts loaded, connections open
    cpu: list[float] = []
    sent: list[int] = []
    redis_before = await _redis_cpu_s(redis)
    for _ in range(passes):
        before = Sent.total()
        started = time.process_time()
        await run()
        cpu.append(time.process_time() - started)
        sent.append(Sent.total() - before)
    redis_cpu = (await _redis_cpu_s(redis) - redis_before) / passes
    return {
        "what": name,
        "client_cpu_ms_median": round(statistics.median(cpu) * 1000, 2),
        "client_cpu_ms_min": round(min(cpu) * 1000, 2),
        "commands": statistics.median(sent),
        "redis_cpu_ms": round(redis_cpu * 1000, 2),
    }


async def _run(url: str, gateways: int, calls: int, shards: int, passes: int) -> None:
    redis = aioredis.Redis.from_url(url)
    await redis.flushall()
    await redis.set(SHARDS_KEY, shards)
    store = SessionStore(redis, session_ttl_s=86400, closed_ttl_s=3600, shards=shards)
    await store.load_scripts()
    await _seed(redis, store, gateways, calls)
    with tempfile.TemporaryDirectory() as spool_dir:

        async def never_closes(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("nothing is due in this benchmark")

        async def no_replay(entry: dict[str, Any]) -> None:
            return None

        reaper = Reaper(
            store=store,
            close=never_closes,
            clock_ms=lambda: int(time.time() * 1000),
            stale_ms=60_000,
            spool=Spool(Path(spool_dir), max_entries=1000),
            replay=no_replay,
        )
        ledger = Ledger(redis)
        Sent.batchers = [b for b in (store._batcher, ledger.batcher) if b is not None]
        sampler = ClusterSampler(
            redis,
            ledger,
            KpiStore(redis, max_groups=100),
            min_samples=10,
            exporter_group="exporter",
            dead_letter_stream="cdr:dead",
            kpis=False,
        )

        async def reaper_pass() -> None:
            assert await reaper.run_once() == 0

        async def sample() -> None:
            await sampler.sample()
            assert sampler.live["active_calls"] == gateways * calls

        results = [
            await _measure("reaper pass", reaper_pass, redis, passes),
            await _measure("monitoring sample", sample, redis, passes),
        ]
    load = os.getloadavg()
    for r in results:
        print(
            f"G={gateways} calls/gw={calls} shards={shards} {r['what']}: client CPU "
            f"{r['client_cpu_ms_median']} ms (min {r['client_cpu_ms_min']}), "
            f"{r['commands']:.0f} commands, Redis CPU {r['redis_cpu_ms']} ms "
            f"(load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})"
        )
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--calls", type=int, default=3, help="live calls per gateway")
    parser.add_argument("--shards", type=int, default=128)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--redis-url", default="", help="default: an embedded redis-server")
    args = parser.parse_args()
    Sent.install()
    with tempfile.TemporaryDirectory() as tmp, bench_redis(args.redis_url, Path(tmp)) as url:
        for gateways in args.gateways:
            asyncio.run(_run(url, gateways, args.calls, args.shards, args.passes))


if __name__ == "__main__":
    main()
