#!/usr/bin/env python3
"""Instructions per Session-Timeout (Pricer.paid_s) of calls that start within the 3 h
before a period boundary of the sample tariff, counted by callgrind (issue #15, round
18a: docs/performance.md).

The clock is fixed: the starts are drawn (seeded) in the 3 h (max_call_duration)
before four boundaries of config/tariffs/sample.toml in the week of Sunday 2026-12-06
(London = UTC then): Sunday 24:00 (weekend -> off-peak), Monday 08:00 (off-peak ->
peak), Monday 19:00 (peak -> off-peak), Friday 24:00 (off-peak -> weekend); the *far*
cases draw them where the next boundary is more than 3 h away (Monday 09:00-16:00,
Saturday 00:00-21:00). Each call is a new start to a number like the kit's
(UK fixed and mobile, FR, US, DE), asked once what an amount pays for:

- ``near-rich``/``far-rich``: 10**15 micro-units (the kit's accounts): the answer is
  the 3 h limit, so the walk prices all of it;
- ``near-mid``/``far-mid``: 0.5-30 EUR (seeded), an answer anywhere in the 3 h,
  before or past the boundary;
- ``near-held``: what the first grant (60 s) costs, as an Access-Request's hold
  (newrecord.py): an answer before the boundary, mostly.

The cards are warm (2,000 calls first in the same windows). Each case runs under
``valgrind --tool=callgrind`` twice, with N and 2N calls after the same set-up; the
difference over N is printed. String hashing is seeded (PYTHONHASHSEED, default 0);
runs of one tree still differ by up to ~0.6k (branch) to ~3k (main before round 18a)
per call (memory addresses: dicts keyed by id(), the collector's timing).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_rating_walk.py [--count 2000] [CASE...]

Compiled or not is whatever the tree holds (the .so files next to the modules).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = ("near-rich", "near-mid", "near-held", "far-rich", "far-mid")
H_MS = 3_600_000
SUN = 1_796_515_200_000  # Sunday 2026-12-06 00:00 UTC (London: GMT)
DAY_MS = 24 * H_MS
# The boundaries (epoch ms) whose 3 h before the near cases start in.
BOUNDARIES = (
    SUN + DAY_MS,  # Sunday 24:00: weekend -> off-peak
    SUN + DAY_MS + 8 * H_MS,  # Monday 08:00: off-peak -> peak
    SUN + DAY_MS + 19 * H_MS,  # Monday 19:00: peak -> off-peak
    SUN + 6 * DAY_MS,  # Friday 24:00: off-peak -> weekend
)
# Windows [from, to) (epoch ms) at least 3 h before the next boundary.
FAR = (
    (SUN + DAY_MS + 8 * H_MS, SUN + DAY_MS + 16 * H_MS),  # Monday 08:00-16:00 (peak)
    (SUN + 6 * DAY_MS, SUN + 6 * DAY_MS + 21 * H_MS),  # Saturday 00:00-21:00
)
PREFIXES = ("44207946", "447700900", "3361234", "1212555", "4930123")


def calls(case: str, count: int, seed: int) -> list[tuple[str, str, int, int]]:
    """(subject, number, start_ms, amount_micros) of `count` calls of a case: a pass over
    its windows in turn, each window's starts increasing (as the clock gives them: a
    card serves the later starts of its period, not earlier ones)."""
    rng = random.Random(f"{case}/{seed}")
    windows = [(b - 3 * H_MS, b) for b in BOUNDARIES] if case.startswith("near") else list(FAR)
    out = []
    for w, (begin, end) in enumerate(windows):
        share = count // len(windows) + (1 if w < count % len(windows) else 0)
        for start_ms in sorted(rng.randrange(begin + 1, end) for _ in range(share)):
            if case.endswith("rich"):
                amount = 10**15
            elif case.endswith("mid"):
                amount = rng.randrange(500_000, 30_000_000)
            else:
                amount = -1  # the first grant's price
            number = rng.choice(PREFIXES) + f"{rng.randrange(100_000):05d}"
            out.append((f"acc{len(out) % 1000}", number, start_ms, amount))
    return out


def _run(case: str, items: int, setup: int) -> Callable[[], None]:
    from chargingd.rating.loaders import load_plan
    from chargingd.sessions.pricing import Pricer

    pricer = Pricer({}, default=load_plan(REPO / "config" / "tariffs" / "sample.toml"))

    def price(subject: str, number: str, start_ms: int) -> int:
        return pricer.price(
            "default", subject=subject, number=number, start_ms=start_ms, usage_s=60
        ).cost_micros

    def one(subject: str, number: str, start_ms: int, amount: int) -> int:
        return pricer.paid_s(
            "default", subject=subject, number=number, start_ms=start_ms, amount_micros=amount
        )

    for s, n, t, amount in calls(case, 2000, 1):  # warm: the cards built
        one(s, n, t, price(s, n, t) if amount < 0 else amount)
    # The same set-up for N and 2N: two passes of `setup` // 2 calls each drawn (and the
    # held cases' amount, the first grant's price, asked: the authorize's other
    # question, not counted); N prices the first, 2N both.
    drawn = [
        (s, n, t, price(s, n, t) if amount < 0 else amount)
        for seed in (2, 3)
        for s, n, t, amount in calls(case, setup // 2, seed)
    ]
    timed = drawn[:items]

    def run() -> None:
        for call in timed:
            one(*call)

    return run


def _count(case: str, items: int, setup: int, keep: Path | None) -> int:
    dump = "/dev/null" if keep is None else str(keep / f"callgrind.{case}.{items}")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", sys.executable,
         __file__, "--child", case, str(items), str(setup)],
        capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")},
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total for {case}: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _run(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="N (calls per run)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="keep the callgrind dumps in DIR (callgrind.CASE.ITEMS, for callgrind_annotate)",
    )  # fmt: skip
    parser.add_argument("cases", nargs="*", help=f"any of {', '.join(CASES)} (default all)")
    args = parser.parse_args()
    for case in args.cases or CASES:
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}: {', '.join(CASES)}")
    for case in args.cases or CASES:
        once = _count(case, args.count, 2 * args.count, args.keep)
        twice = _count(case, 2 * args.count, 2 * args.count, args.keep)
        print(f"{case:<10} {(twice - once) / args.count:10,.0f} instructions per call")


if __name__ == "__main__":
    main()
