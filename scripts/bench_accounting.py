"""Benchmark accounting (Start, Interim, Stop) of the credit-control path on a real Redis,
without RADIUS: CPU per packet of this process and of redis-server, by phase.

Authorizes N calls over 1,000 accounts (not measured), then sends their Starts, their
Interims and their Stops, each phase at ``--inflight`` packets in flight, and prints
per packet: this process's CPU (time.process_time), redis-server's CPU (INFO cpu),
EVALSHA calls and their server time, all commands run (INFO commandstats: the
commands inside scripts count), and socket writes (round trips, shared by concurrent
packets). The figures the kit's acct32w1 cell shows without the RADIUS frontend and
the load generator, so steadier on a shared box (run it twice, compare CPU).

    .venv/bin/python scripts/bench_accounting.py --calls 20000 --inflight 32
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import uvloop
from bench_common import RoundTrips, bench_redis, seed_prepaid

from chargingd.core.config import SessionsConfig
from chargingd.ledger import Ledger
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind, UsageReport
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"
ACCOUNTS = 1000
PHASES = ((UsageKind.START, 0), (UsageKind.INTERIM, 30), (UsageKind.STOP, 95))


def _call(i: int) -> CallInfo:
    return CallInfo(f"c{i}", f"u{i % ACCOUNTS}", "", f"0301234{i % 1000:03d}", "10.0.0.1", "gw1")


async def _redis_figures(client: aioredis.Redis) -> tuple[float, dict[str, Any]]:
    cpu = await client.info("cpu")
    stats = await client.info("commandstats")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), stats


async def _run(
    url: str, calls: int, inflight: int, data_dir: Path, show_commands: bool = False
) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    ledger = Ledger(client, audit_holds=False)  # [ledger] audit_holds default, as the daemon
    await ledger.load_scripts()
    await seed_prepaid(ledger, ACCOUNTS)
    sessions = Sessions(
        redis=client,
        ledger=ledger,
        pricer=Pricer({"retail": load_plan(TARIFF)}),
        cfg=SessionsConfig(),
        clock_ms=lambda: int(time.time() * 1000),
        data_dir=data_dir,
    )
    await sessions.store.load_scripts()
    sem = asyncio.Semaphore(inflight)
    infos = [_call(i) for i in range(calls)]

    async def authorize(info: CallInfo) -> None:
        async with sem:
            assert isinstance(await sessions.authorize(info), Authorized)

    await asyncio.gather(*(authorize(info) for info in infos))
    start_ms = int(time.time() * 1000)

    async def account(info: CallInfo, kind: UsageKind, usage_s: int) -> None:
        async with sem:
            await sessions.account(UsageReport(info, kind, usage_s, start_ms + usage_s * 1000))

    for kind, usage_s in PHASES:
        redis_cpu, stats = await _redis_figures(client)
        writes, cpu, t0 = RoundTrips.count(), time.process_time(), time.perf_counter()
        await asyncio.gather(*(account(info, kind, usage_s) for info in infos))
        cpu, elapsed = time.process_time() - cpu, time.perf_counter() - t0
        writes = RoundTrips.count() - writes
        redis_cpu2, stats2 = await _redis_figures(client)

        def delta(name: str, field: str, after: Any = stats2, before: Any = stats) -> float:
            return float(after.get(name, {}).get(field, 0) - before.get(name, {}).get(field, 0))

        commands = sum(delta(k, "calls") for k in stats2 if not k.endswith(("_info", "_config")))
        print(
            f"{kind.value:8s} {calls / elapsed:7,.0f}/s  daemon CPU {cpu / calls * 1e6:6.1f} us  "
            f"Redis CPU {(redis_cpu2 - redis_cpu) / calls * 1e6:5.1f} us  "
            f"EVALSHA {delta('cmdstat_evalsha', 'calls') / calls:.2f} "
            f"({delta('cmdstat_evalsha', 'usec') / calls:4.1f} us)  "
            f"FCALL {delta('cmdstat_fcall', 'calls') / calls:.2f} "
            f"({delta('cmdstat_fcall', 'usec') / calls:4.1f} us)  "
            f"commands {commands / calls:5.1f}  socket writes {writes / calls:.2f}  per packet"
        )
        if show_commands:
            rows = [
                (k.removeprefix("cmdstat_"), delta(k, "calls"), delta(k, "usec")) for k in stats2
            ]
            for name, n, usec in sorted(rows, key=lambda r: -r[2]):
                if n / calls >= 0.01 and name not in ("info", "config|resetstat"):
                    print(f"    {name:<18} calls {n / calls:5.2f}  usec {usec / calls:6.2f}")
    cdrs = await client.xlen("cdr:stream")
    account = await ledger.get_account("acc0")
    print(f"{cdrs} CDRs; acc0 reserved {account.reserved_micros} (0 expected)")
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--redis-url", default="", help="default: an embedded redis-server")
    parser.add_argument("--commands", action="store_true", help="each phase's commands")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_redis(args.redis_url, Path(tmp)) as url:
        RoundTrips.install()
        uvloop.run(_run(url, args.calls, args.inflight, Path(tmp), args.commands))


if __name__ == "__main__":
    main()
