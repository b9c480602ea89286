#!/usr/bin/env python3
"""The RADIUS frontend alone, with a CreditControl that answers at once (no Redis).

    radius_echo_server.py [--procs 2] [--auth-port 1812] [--acct-port 1813]

Measures the frontend's ceiling: decode, verify, duplicate cache, reply encoding
and the UDP path. Several processes share the ports with SO_REUSEPORT. Prints the
counters of each process at exit (SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import time

from chargingd.core.config import config_from_dict
from chargingd.radius.server import RadiusFrontend
from chargingd.sessions.ccapi import Authorized, CallInfo, Refused, UsageReport

GRANT = Authorized("echo", 3600, 60, 10_000_000, "EUR")


class EchoCredit:
    """Authorizes everything, accounts nothing: the frontend's cost only."""

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        return GRANT

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        return GRANT

    async def account(self, report: UsageReport) -> None:
        return None

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        return None


async def serve(args: argparse.Namespace) -> None:
    cfg = config_from_dict(
        {
            "radius": {
                "bind": args.host,
                "auth_port": args.auth_port,
                "acct_port": args.acct_port,
                "worker_tasks": args.tasks,
                "queue_size": args.queue,
                "clients": [{"name": "loadgen", "address": args.client, "secret": args.secret}],
            }
        }
    ).radius
    frontend = RadiusFrontend(cfg, EchoCredit())
    await frontend.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cpu0 = time.process_time()
    await stop.wait()
    await frontend.stop()
    counters = {k: v for k, v in frontend.counters.as_dict().items() if v}
    cpu_s = time.process_time() - cpu0
    per_request_us = 1e6 * cpu_s / max(frontend.counters.received, 1)
    print(f"cpu_s={cpu_s:.2f} cpu_us/request={per_request_us:.1f} {counters}", flush=True)


def _child(args: argparse.Namespace) -> None:
    if not args.asyncio:
        import uvloop

        uvloop.install()
    asyncio.run(serve(args))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--auth-port", type=int, default=1812)
    p.add_argument("--acct-port", type=int, default=1813)
    p.add_argument("--client", default="127.0.0.0/8")
    p.add_argument("--secret", default="testing123")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--tasks", type=int, default=64)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--asyncio", action="store_true", help="the default loop instead of uvloop")
    args = p.parse_args()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_child, args=(args,)) for _ in range(args.procs)]
    for proc in procs:
        proc.start()

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
