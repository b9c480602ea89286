"""Benchmark authorize with the default fraud rule set on and off (issue 13: throughput
and p99 with the rules on within 10 % of off).

Sessions on a real (embedded) Redis, the fused path as on a single Redis, uvloop as
the daemon runs. Calls are spread over many accounts, each calling one destination
(UK, France, Germany, US, fixed and mobile; with --new-numbers a number not dialled
before each call, as real traffic dials), so no rule fires (an honest population: the
cost measured is evaluating the rules, not raising alerts). Rounds alternate off/on
(each on a flushed Redis); the median round of each is reported, with the ratio.

On a shared machine wall-clock rates swing with the neighbours' load, so each round
also reports the CPU one authorize costs: this process's CPU time plus Redis's
(INFO cpu), divided by the authorizes: what capacity the rules take, load or not.

    .venv/bin/python scripts/bench_fraud.py --calls 5000 --inflight 32 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from bench_common import default_fraud, seed_prepaid

from chargingd.core.config import SessionsConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, CallInfo
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"
CALLED = ("00442079460000", "00447700900123", "0033142685300", "0033612345678",
          "030123456", "015112345678", "0012025550123")  # fmt: skip


_NUMBERS = itertools.count()  # across rounds: the number types are cached per process


@dataclass
class Round:
    rate: float  # authorizes per second
    p50_ms: float
    p99_ms: float
    cpu_us: float  # client + Redis CPU per authorize
    redis_us: float  # of which Redis


async def _round(
    url: str, calls: int, inflight: int, accounts: int, fraud_on: bool, new_numbers: bool = False
) -> Round:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    clock = lambda: int(time.time() * 1000)  # noqa: E731
    ledger = Ledger(client, clock_ms=clock)
    await ledger.load_scripts()
    await seed_prepaid(ledger, accounts)
    fraud = None
    if fraud_on:  # the default rule set, as [fraud] enabled = true ships it
        fraud = await default_fraud(client, ledger, clock)
    sessions = Sessions(
        redis=client,
        ledger=ledger,
        pricer=Pricer({"retail": load_plan(TARIFF)}),
        cfg=SessionsConfig(),
        clock_ms=clock,
        data_dir=Path(tempfile.gettempdir()),
        fraud=fraud,
    )
    await sessions.store.load_scripts()
    sem = asyncio.Semaphore(inflight)
    latencies: list[float] = []

    async def authorize(i: int) -> None:
        a = i % accounts  # each account calls its own country (no new-country alert)
        called = CALLED[a % len(CALLED)]
        if new_numbers:  # the last 4 digits vary: a number not dialled before, each call
            called = f"{called[:-4]}{next(_NUMBERS) % 10_000:04d}"
        info = CallInfo(f"s{i}", f"u{a}", "", called, "10.0.0.1", "gw1")
        async with sem:
            t0 = time.perf_counter()
            answer = await sessions.authorize(info)
            latencies.append(time.perf_counter() - t0)
        assert isinstance(answer, Authorized), answer

    # Warm-up: every account once (the process learns each caller: the fused path).
    await asyncio.gather(*(authorize(-1 - a) for a in range(accounts)))
    latencies.clear()
    redis_cpu = await _redis_cpu(client)
    cpu = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(authorize(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    redis_cpu = await _redis_cpu(client) - redis_cpu
    cpu = time.process_time() - cpu + redis_cpu
    if fraud is not None:
        assert fraud.counters["fired"] == 0, fraud.counters  # an honest population
        assert fraud.counters["checked"] >= calls
        assert sessions.fraud is not None
        await sessions.fraud.settle()
    await client.aclose()
    lat = sorted(latencies)
    p99 = lat[int(len(lat) * 0.99)] * 1e3
    return Round(
        calls / elapsed,
        statistics.median(lat) * 1e3,
        p99,
        cpu / calls * 1e6,
        redis_cpu / calls * 1e6,
    )


async def _redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _median(rounds: list[Round]) -> Round:
    return Round(
        statistics.median(r.rate for r in rounds),
        statistics.median(r.p50_ms for r in rounds),
        statistics.median(r.p99_ms for r in rounds),
        statistics.median(r.cpu_us for r in rounds),
        statistics.median(r.redis_us for r in rounds),
    )


def _line(r: Round) -> str:
    return (
        f"{r.rate:,.0f}/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
        f"{r.cpu_us:.0f} us CPU each ({r.redis_us:.0f} of it Redis)"
    )


async def _run(url: str, args: argparse.Namespace) -> None:
    results: dict[bool, list[Round]] = {False: [], True: []}
    for n in range(args.rounds):
        for on in (False, True) if n % 2 == 0 else (True, False):
            r = await _round(url, args.calls, args.inflight, args.accounts, on, args.new_numbers)
            results[on].append(r)
            print(f"round {n + 1} rules {'on ' if on else 'off'}: {_line(r)}")
    off, on = _median(results[False]), _median(results[True])
    load = os.getloadavg()
    print(
        f"\nmedian of {args.rounds} rounds, {args.calls} authorizes, {args.inflight} in flight, "
        f"{args.accounts} accounts (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):"
    )
    print(f"  rules off: {_line(off)}")
    print(f"  rules on:  {_line(on)}")
    print(
        f"  on/off: throughput {on.rate / off.rate:.3f}, p99 {on.p99_ms / off.p99_ms:.3f}, "
        f"CPU per authorize {on.cpu_us / off.cpu_us:.3f} "
        "(goal: throughput >= 0.90, p99 <= 1.10)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis-url", default="", help="default: an embedded redis-server")
    parser.add_argument(
        "--new-numbers",
        action="store_true",
        help="each call dials a new number of its account's range (real traffic: the "
        "number types are not in the per-number cache)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.redis_url
        if not url:
            server = EmbeddedRedis(Path(tmp), appendfsync="no")
            server.start()
            url = server.url
        try:
            uvloop.run(_run(url, args))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
