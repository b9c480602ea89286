"""What counting costs per request, by approach (the choice in docs/monitoring.md).

    .venv/bin/python scripts/bench_metrics.py

Per operation, in one process: chargingd's in-process meters (a dict increment, a
bucket histogram, the MeteredCredit wrapper around an authorize), prometheus-client's
Counter/Histogram in-process, and prometheus-client's multiprocess mode (every
increment written to a memory-mapped file shared with the scraper); then the scrape
side: chargingd's exposition of a host view vs MultiProcessCollector reading the
files of 2 processes. Prints nanoseconds per operation (best of 5).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable

N = 200_000


def per_op_ns(fn: Callable[[], object], n: int = N) -> float:
    return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9


def ours() -> None:
    from chargingd.monitoring.host import HostView
    from chargingd.monitoring.metered import MeteredCredit
    from chargingd.monitoring.meters import ProcessMeters
    from chargingd.sessions.ccapi import Authorized, CallInfo

    meters = ProcessMeters("main")
    key = ("radius", "authorize", "accepted")
    hist = meters.histogram("radius", "authorize")
    print(
        f"chargingd meters: counter increment      {per_op_ns(lambda: meters.count(key)):7.0f} ns"
    )
    observe_ns = per_op_ns(lambda: hist.observe_ns(1_234_567))
    print(f"chargingd meters: histogram observe      {observe_ns:7.0f} ns")

    answer = Authorized("a", 60, 60, 1, "EUR")
    call = CallInfo("s", "u", "1", "2", "10.0.0.1", "gw")

    class Inner:
        async def authorize(self, c: CallInfo) -> Authorized:
            return answer

    inner = Inner()
    metered = MeteredCredit(inner, meters, "radius")  # type: ignore[arg-type]

    async def loop(target: object, n: int) -> None:
        auth = target.authorize  # type: ignore[attr-defined]
        for _ in range(n):
            await auth(call)

    def timed(target: object) -> float:
        best = float("inf")
        for _ in range(5):
            start = timeit.default_timer()
            asyncio.run(loop(target, N))
            best = min(best, timeit.default_timer() - start)
        return best / N * 1e9

    bare, wrapped = timed(inner), timed(metered)
    print(f"authorize through MeteredCredit: +{wrapped - bare:6.0f} ns per request "
          f"({bare:.0f} ns bare coroutine, {wrapped:.0f} ns metered)")  # fmt: skip
    host = HostView(lambda: {"role": "main", "meters": meters.snapshot(), "status": {}})
    from chargingd.monitoring.exposition import render

    scrape_us = per_op_ns(lambda: render(host.totals), 200) / 1000
    print(f"chargingd scrape (render of the host view):  {scrape_us:7.0f} us")


def prometheus_in_process() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    reg = CollectorRegistry()
    c = Counter("x_total", "x", ["a", "b", "c"], registry=reg).labels("radius", "authorize", "ok")
    h = Histogram("y_seconds", "y", registry=reg)
    print(f"prometheus-client in-process: Counter.inc {per_op_ns(c.inc):7.0f} ns")
    print(
        f"prometheus-client in-process: Histogram   {per_op_ns(lambda: h.observe(0.0012)):7.0f} ns"
    )


MULTIPROCESS = """
import timeit
from prometheus_client import Counter, Histogram
c = Counter("x_total", "x", ["a", "b", "c"]).labels("radius", "authorize", "ok")
h = Histogram("y_seconds", "y")
n = 200_000
for name, fn in (("Counter.inc", c.inc), ("Histogram ", lambda: h.observe(0.0012))):
    ns = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9
    print(f"prometheus-client multiprocess: {name} {ns:7.0f} ns")
"""


def prometheus_multiprocess() -> None:
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=folder)
        for _ in range(2):  # two processes' files, as two workers would leave
            subprocess.run([sys.executable, "-c", MULTIPROCESS], env=env, check=True)
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        reg = CollectorRegistry()
        MultiProcessCollector(reg, path=folder)
        scrape_us = per_op_ns(lambda: generate_latest(reg), 200) / 1000
        print(f"prometheus-client multiprocess scrape (2 processes' files): {scrape_us:7.0f} us")


if __name__ == "__main__":
    ours()
    prometheus_in_process()
    prometheus_multiprocess()
