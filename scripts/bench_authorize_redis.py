#!/usr/bin/env python3
"""Redis's side of an authorize on a private redis-server: CPU, commands and memory.

Starts its own redis-server (--redis-server, default the one on PATH: Debian's 7.0
as in the side-by-side kit; no persistence, a unix socket, nothing else uses it),
creates --accounts prepaid accounts and authorizes --calls calls spread over them
through Sessions (the fused path, as the daemon on a single Redis), --inflight at a
time (their commands share one pipeline per loop tick, as in the daemon). Prints, per
authorize: Redis CPU (INFO cpu delta, user + sys), each command's calls and usec (INFO
commandstats: the EVALSHA inclusive, the commands the script runs), and the
used_memory delta (the calls stay live: record, indexes, holds). The Python side's
cost is not counted (a separate process).

    PYTHONPATH=. .venv/bin/python scripts/bench_authorize_redis.py --calls 20000
    ... --echo-class     # the client echoes Class: no session locator per call
    ... --command-timeout 0   # no late-run check (no TIME in the reserve)
    ... --shards 256     # [sessions] lastseen_shards (the last-seen and locator shards)
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chargingd.core.config import RedisConfig, SessionsConfig
from chargingd.ledger import Ledger, Mode
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, CallInfo
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"


def _call(i: int, accounts: int) -> CallInfo:
    sid = f"m-{i:08X}-{(i * 2654435761) & 0xFFFFFFFF:08X}-{i & 0xFFFF:04X}"
    user = f"{i % accounts:012d}"
    called = f"004420798{i % 100000:05d}"
    return CallInfo(sid, user, f"3161234{i % 100000:05d}", called, "127.0.0.1", "load", sid)


async def _run(url: str, args: argparse.Namespace, data_dir: Path) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    # [ledger] audit_holds' default; [redis] command_timeout_s as the daemon passes it (a
    # new call's reserve checks on Redis's clock that it runs in time: TIME)
    timeout = args.command_timeout or None
    ledger = Ledger(client, audit_holds=False, request_timeout_s=timeout)
    await ledger.load_scripts()
    for n in range(args.accounts):
        await ledger.create_account(
            f"acc{n:04d}",
            mode=Mode.PREPAID,
            currency="EUR",
            balance_micros=10**15,
            tariff="retail",
            identities=(f"user:{n:012d}",),
            who="bench",
        )
    extra: dict[str, Any] = {}
    if args.echo_class:
        if "echo_class" not in inspect.signature(Sessions).parameters:
            raise SystemExit("this tree has no echo_class")
        extra["echo_class"] = ("load",)
    sessions = Sessions(
        redis=client,
        ledger=ledger,
        pricer=Pricer({"retail": load_plan(TARIFF)}),
        cfg=SessionsConfig(**({"lastseen_shards": args.shards} if args.shards else {})),
        clock_ms=lambda: int(time.time() * 1000),
        data_dir=data_dir,
        **extra,
    )
    await sessions.store.load_scripts()
    sem = asyncio.Semaphore(args.inflight)

    async def authorize(i: int) -> None:
        async with sem:
            answer = await sessions.authorize(_call(i, args.accounts))
            assert isinstance(answer, Authorized), answer

    # Warm: every account's identity and plan remembered, as in a running daemon.
    await asyncio.gather(*(authorize(i) for i in range(args.accounts)))
    await client.config_resetstat()
    mem0 = (await client.info("memory"))["used_memory"]
    cpu0 = await client.info("cpu")
    await asyncio.gather(*(authorize(i) for i in range(args.accounts, args.accounts + args.calls)))
    cpu1 = await client.info("cpu")
    mem1 = (await client.info("memory"))["used_memory"]
    stats = await client.info("commandstats")
    n = args.calls
    user = (cpu1["used_cpu_user"] - cpu0["used_cpu_user"]) / n * 1e6
    system = (cpu1["used_cpu_sys"] - cpu0["used_cpu_sys"]) / n * 1e6
    print(
        f"{n} authorizes over {args.accounts} accounts, {args.inflight} in flight"
        f"{', echo_class' if args.echo_class else ''}"
        f"{f', {args.shards} shards' if args.shards else ''}: Redis CPU {user + system:.1f} us "
        f"per authorize ({user:.1f} user + {system:.1f} sys), used_memory "
        f"{(mem1 - mem0) / n:.0f} bytes per live call"
    )
    rows = [(k.removeprefix("cmdstat_"), v) for k, v in stats.items() if k != "cmdstat_info"]
    inner = sum(
        row["calls"] for name, row in rows if name not in ("evalsha", "evalsha_ro", "fcall")
    )
    print(
        f"    commands per authorize (the script's redis.calls + the hold index): {inner / n:.2f}"
    )
    for name, row in sorted(rows, key=lambda kv: -kv[1]["usec"]):
        if row["calls"] / n >= 0.005:
            print(f"    {name:<14} calls {row['calls'] / n:5.2f}  usec {row['usec'] / n:6.2f}")
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--echo-class", action="store_true")
    parser.add_argument("--shards", type=int, default=0, help="lastseen_shards (0: default)")
    parser.add_argument(
        "--command-timeout",
        type=float,
        default=RedisConfig().command_timeout_s,
        help="[redis] command_timeout_s (0: none, no late-run check)",
    )
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "redis.sock"
        command = [args.redis_server, "--port", "0", "--unixsocket", str(sock)]
        command += ["--save", "", "--appendonly", "no", "--dir", tmp]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            asyncio.run(_run(f"unix://{sock}", args, Path(tmp)))
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
