"""Benchmark the credit-control path (sessions/service.py) on a real Redis, without RADIUS.

Measures authorize (account lookup, rating, reserve, session record) at N requests
in flight, then whole calls (authorize, Start, Interim, Stop with its CDR). Prints
requests/s, latency p50/p99, Redis socket writes per request (with --inflight 1 that is
the sequential round trips; pipelines are shared by concurrent requests), and the
server time per script (SLOWLOG) and of all EVALSHAs (INFO commandstats).

    .venv/bin/python scripts/bench_sessions.py --calls 5000 --inflight 32 --uvloop
    .venv/bin/python scripts/bench_sessions.py --calls 300 --inflight 1 --stepwise
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
import uvloop
from bench_common import RoundTrips, bench_redis

from chargingd.core.config import SessionsConfig
from chargingd.ledger import Ledger, Mode
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind, UsageReport
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"


def _call(sid: str) -> CallInfo:
    return CallInfo(sid, "bench", "", "030123456", "10.0.0.1", "gw1")


async def _run(
    url: str, calls: int, inflight: int, data_dir: Path, batch: bool, fused: bool
) -> None:
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
    if not fused or not batch:  # the step-by-step path (as on Redis Cluster)
        sessions.step_by_step()
    if not batch:  # redis-py pipelines instead of the per-tick command batcher
        sessions.store._batcher = None
    # Scripts loaded up front, as a daemon does at start (not a NOSCRIPT storm at load).
    load = getattr(sessions.store, "load_scripts", None) or sessions.store._load_scripts
    await load()
    shas = _script_names(ledger, sessions)
    sem = asyncio.Semaphore(inflight)
    latencies: list[float] = []

    async def authorize(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            answer = await sessions.authorize(_call(f"a{i}"))
            latencies.append(time.perf_counter() - t0)
            assert isinstance(answer, Authorized), answer

    before = await _commands(client)
    await _reset_stats(client)
    trips = RoundTrips.count()
    t0 = time.perf_counter()
    await asyncio.gather(*(authorize(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    trips = RoundTrips.count() - trips
    per_auth = (await _commands(client) - before - 5) / calls
    lat = sorted(latencies)
    print(
        f"authorize: {calls / elapsed:,.0f}/s, p50 {statistics.median(lat) * 1e3:.2f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms, max {lat[-1] * 1e3:.2f} ms "
        f"({inflight} in flight), {per_auth:.1f} Redis commands each, "
        f"{trips / calls:.2f} socket writes each"
    )
    await _print_stats(client, shas, calls)

    async def whole_call(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            info = _call(f"c{i}")
            now = int(time.time() * 1000)
            assert isinstance(await sessions.authorize(info), Authorized)
            for kind, usage_s in ((UsageKind.START, 0), (UsageKind.INTERIM, 60)):
                await sessions.account(UsageReport(info, kind, usage_s, now + usage_s * 1000))
            await sessions.account(UsageReport(info, UsageKind.STOP, 95, now + 95_000))
            latencies.append(time.perf_counter() - t0)

    before = await _commands(client)
    await _reset_stats(client)
    trips = RoundTrips.count()
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(whole_call(i) for i in range(calls)))
    elapsed = time.perf_counter() - t0
    trips = RoundTrips.count() - trips
    per_call = (await _commands(client) - before - 5) / calls
    lat = sorted(latencies)
    cdrs = await client.xlen("cdr:stream")
    print(
        f"whole calls (auth+start+interim+stop): {calls / elapsed:,.0f}/s, {cdrs} CDRs, "
        f"{per_call:.1f} Redis commands each, {trips / calls:.2f} socket writes each, "
        f"p50 {statistics.median(lat) * 1e3:.2f} ms, p99 {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms"
    )
    await _print_stats(client, shas, calls)
    await client.aclose()


def _script_names(ledger: Ledger, sessions: Sessions) -> dict[bytes, str]:
    """SHA1 -> script name, for the per-script figures."""
    names = {s.sha.encode(): name for name, s in ledger._scripts.items()}
    for owner, prefix in ((sessions.store, "store"), (getattr(sessions, "fused", None), "fused")):
        for attr in dir(owner):
            script = getattr(owner, attr)
            if hasattr(script, "sha") and hasattr(script, "script"):
                names[script.sha.encode()] = prefix + attr
    return names


async def _reset_stats(client: aioredis.Redis) -> None:
    await client.config_resetstat()
    await client.config_set("slowlog-max-len", 1_000_000)
    await client.config_set("slowlog-log-slower-than", 0)  # log every command: per-script cost
    await client.slowlog_reset()


async def _print_stats(client: aioredis.Redis, shas: dict[bytes, str], requests: int) -> None:
    """Server-side cost per command (INFO commandstats) and per script (SLOWLOG)."""
    await client.config_set("slowlog-log-slower-than", 10_000)
    stats = await client.info("commandstats")
    own = ("cmdstat_config", "cmdstat_info", "cmdstat_slowlog", "cmdstat_xlen")
    total_us = sum(row["usec"] for key, row in stats.items() if not key.startswith(own))
    print(f"    Redis server time, all commands: {total_us / requests:.1f} us per request")
    evalsha = stats.get("cmdstat_evalsha", {})
    print(
        f"    EVALSHA (all scripts): calls {evalsha.get('calls', 0)}, "
        f"usec_per_call {evalsha.get('usec_per_call', 0.0):.2f}"
    )
    per_script: dict[str, list[int]] = {}
    for entry in await client.slowlog_get(1_000_000):
        command = entry["command"].split()
        if command and command[0].upper() == b"EVALSHA":
            name = shas.get(command[1], command[1].decode()[:8])
            per_script.setdefault(name, []).append(int(entry["duration"]))
    for name, durations in sorted(per_script.items()):
        print(
            f"    {name:<20} calls {len(durations):>7}  "
            f"usec_per_call {sum(durations) / len(durations):.2f}"
        )


async def _commands(client: aioredis.Redis) -> int:
    info = await client.info("stats")
    return int(info["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--redis-url", default="", help="default: an embedded redis-server")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (as the daemon)")
    parser.add_argument("--no-batch", action="store_true", help="session keys without batching")
    parser.add_argument(
        "--stepwise", action="store_true", help="no fused scripts (as on a cluster)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, bench_redis(args.redis_url, Path(tmp)) as url:
        RoundTrips.install()
        run = uvloop.run if args.uvloop else asyncio.run
        fused = not args.stepwise
        run(_run(url, args.calls, args.inflight, Path(tmp), not args.no_batch, fused))


if __name__ == "__main__":
    main()
