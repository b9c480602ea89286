"""Microbenchmark: Pricer per call as an authorize asks it (price the first grant, then
paid_s twice), calls to many numbers at increasing starts (issue #15 round 7c).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_pricer.py [calls] [runs]

Prints us per call (min and median of the runs); run beside `uptime`.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

from chargingd.rating.loaders import load_plan
from chargingd.sessions.pricing import Pricer

REPO = Path(__file__).resolve().parent.parent


def calls(count: int) -> list[tuple[str, str, int]]:
    rng = random.Random(7)
    prefixes = ["44207946", "447700900", "3361234", "1212555", "4930123"]
    start = 1_799_150_400_000  # Mon 2027-01-04 12:00 UTC: peak, 19:00 off-peak
    out = []
    for i in range(count):
        start += rng.randrange(1, 60)  # ~30 calls/s: an afternoon crosses 19:00
        number = rng.choice(prefixes) + f"{rng.randrange(100_000):05d}"  # like the kit's
        out.append((f"acc{i % 1000}", number, start))
    return out


def run(work: list[tuple[str, str, int]]) -> float:
    pricer = Pricer({}, default=load_plan(REPO / "config" / "tariffs" / "sample.toml"))
    began = time.perf_counter()
    for subject, number, start_ms in work:
        pricer.price("default", subject=subject, number=number, start_ms=start_ms, usage_s=60)
        pricer.paid_s(
            "default", subject=subject, number=number, start_ms=start_ms, amount_micros=70_000
        )
        pricer.paid_s(
            "default", subject=subject, number=number, start_ms=start_ms, amount_micros=5_000_000
        )
    return (time.perf_counter() - began) / len(work) * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    work = calls(count)
    times = [run(work) for _ in range(runs)]
    median = statistics.median(times)
    print(f"{count} calls x {runs}: min {min(times):.2f} us/call, median {median:.2f}")


if __name__ == "__main__":
    main()
