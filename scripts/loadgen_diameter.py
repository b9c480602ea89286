#!/usr/bin/env python3
"""Diameter Credit-Control load generator: calls of CCR-I, CCR-U, CCR-T over several
TCP connections, many in flight, several processes.

    loadgen_diameter.py --port 3868 [--procs 2] [--connections 4] [--inflight 32] [--seconds 10]

Each process opens --connections connections (CER first, as --origin-host) and keeps
--inflight calls running; a call sends its next CCR when the answer to the last
arrives (CCR-I requesting 60 s, CCR-U using 30 s, CCR-T using 10 s). The CCRs of a
call are encoded before the clock starts. Prints CCRs/s, calls/s, p50/p99/max latency
per CCR, and the generator's CPU. --mode initial sends CCR-I + CCR-T only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc

RESULT_AT = 20  # the first AVP of our answers is Session-Id; Result-Code is looked up


@dataclass
class Result:
    requests: int = 0
    calls: int = 0
    failed: int = 0
    latencies_us: list[int] = field(default_factory=list)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0


def encode_calls(args: argparse.Namespace, proc: int, count: int) -> list[list[bytes]]:
    """The CCRs of ``count`` calls, each with its own Session-Id and ids."""
    me = cl.ClientIdentity(args.origin_host, args.origin_realm)
    ids = itertools.count((os.getpid() << 20) & 0x7FFFFFFF)
    calls = []
    for n in range(count):
        sid = f"{args.origin_host};{os.getpid()};{proc};{n}"
        call = cl.Call(sid, calling=args.calling, called=args.called)
        steps = [cl.ccr(me, call, 1, 0, *(next(ids),) * 2, requested_s=60)]
        if args.mode == "call":
            steps.append(cl.ccr(me, call, 2, 1, *(next(ids),) * 2, used_s=30, requested_s=60))
        steps.append(cl.ccr(me, call, 3, len(steps), *(next(ids),) * 2, used_s=10))
        calls.append(steps)
    return calls


class Link(asyncio.Protocol):
    """One TCP connection: requests matched to their answers by Hop-by-Hop id."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.framer = dc.Framer(1 << 20)
        self.waiting: dict[int, asyncio.Future[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for frame in self.framer.feed(data):
            fut = self.waiting.pop(int.from_bytes(frame[12:16], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(frame)

    async def ask(self, data: bytes) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiting[int.from_bytes(data[12:16], "big")] = fut
        assert self.transport is not None
        self.transport.write(data)
        return await asyncio.wait_for(fut, 10.0)


def result_code(frame: bytes) -> int:
    rc = dc.decode(frame).get(268)
    return rc.u32() if rc is not None else 0


async def _run(args: argparse.Namespace, proc: int, barrier: object) -> Result:
    loop = asyncio.get_running_loop()
    me = cl.ClientIdentity(args.origin_host, args.origin_realm)
    links = []
    for i in range(args.connections):
        _, link = await loop.create_connection(Link, args.host, args.port)
        cea = await link.ask(cl.cer(me, 1 + i, (proc << 24) + i + 1))
        if result_code(cea) != 2001:
            raise SystemExit(f"CER refused: {result_code(cea)}")
        links.append(link)
    calls = encode_calls(args, proc, args.pool)
    next_call = iter(calls)
    result = Result()
    running = True

    async def slot(link: Link) -> None:
        while running:
            steps = next(next_call, None)
            if steps is None:
                return
            ok = True
            for data in steps:
                t0 = time.perf_counter_ns()
                answer = await link.ask(data)
                if running:
                    result.latencies_us.append((time.perf_counter_ns() - t0) // 1000)
                    result.requests += 1
                ok = ok and result_code(answer) == 2001
            if running:
                result.calls += 1
                result.failed += not ok

    if barrier is not None:
        barrier.wait(timeout=120)  # type: ignore[attr-defined]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(slot(links[i % len(links)])) for i in range(args.inflight)]
    await asyncio.wait(tasks, timeout=args.seconds)
    running = False
    result.elapsed_s = time.perf_counter() - t0
    result.cpu_s = time.process_time() - cpu0
    await asyncio.wait(tasks, timeout=15)  # the calls in flight end (CCR-T) untimed
    for link in links:
        if link.transport is not None:
            link.transport.close()
    return result


def _child(args: argparse.Namespace, proc: int, barrier: object, out: object) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_run(args, proc, barrier)))  # type: ignore[attr-defined]


def _percentile(values: list[int], q: float) -> int:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["call", "initial"], default="call")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3868)
    p.add_argument("--origin-host", default="load.ims.test")
    p.add_argument("--origin-realm", default="ims.test")
    p.add_argument("--calling", default="+4930555000", help="END_USER_E164 Subscription-Id")
    p.add_argument("--called", default="tel:+442079460000")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--connections", type=int, default=4, help="TCP connections per process")
    p.add_argument("--inflight", type=int, default=32, help="calls in flight per process")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--pool", type=int, default=60_000, help="calls encoded per process")
    args = p.parse_args(argv)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.procs + 1)
    pipes, procs = [], []
    for i in range(args.procs):
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(args, i, barrier, send_end))
        proc.start()
        send_end.close()
        pipes.append(recv_end)
        procs.append(proc)
    barrier.wait(timeout=300)
    results: list[Result] = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    _report(args, results)
    return 0


def _report(args: argparse.Namespace, results: list[Result]) -> None:
    latencies = sorted(v for r in results for v in r.latencies_us)
    requests = sum(r.requests for r in results)
    calls = sum(r.calls for r in results)
    elapsed = max(r.elapsed_s for r in results)
    cpu = sum(r.cpu_s for r in results)
    print(
        f"mode={args.mode} procs={args.procs} connections/proc={args.connections} "
        f"inflight/proc={args.inflight} seconds={elapsed:.1f} ccrs={requests} calls={calls} "
        f"failed_calls={sum(r.failed for r in results)}"
    )
    print(f"ccr/s={requests / elapsed:,.0f} calls/s={calls / elapsed:,.0f}")
    print(
        f"latency_ms p50={_percentile(latencies, 0.50) / 1000:.3f} "
        f"p99={_percentile(latencies, 0.99) / 1000:.3f} "
        f"max={(latencies[-1] if latencies else 0) / 1000:.3f}"
    )
    print(f"generator_cpu_s={cpu:.2f} ({100 * cpu / elapsed if elapsed else 0:.0f}% of one core)")


if __name__ == "__main__":
    sys.exit(main())
