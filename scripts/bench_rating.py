#!/usr/bin/env python3
"""Rating benchmark: calls priced per second, max-usage per second, big-deck load time.

1. A 100,000-prefix deck (1,000 destinations, peak/off-peak/weekend, a 60 s block then
   per second) built in memory; 3-span calls (first-minute block, peak per second,
   off-peak per second) to varied numbers, priced with TariffPlan.rate.
2. max_usage for the same calls with 5.00 of credit.
3. A 1,000,000-line "prefix,destination" deck written to a temp file and loaded through
   the native loader (load_plan of a TOML file naming it in destination_files).

Usage: scripts/bench_rating.py [--seconds 3] [--deck-lines 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from chargingd.rating.loaders import load_plan
from chargingd.rating.model import (
    CallCost,
    DestinationRate,
    PlanEntry,
    PricingMode,
    Rate,
    RateSlot,
    RatingActivation,
    RatingPlan,
    RatingProfile,
)
from chargingd.rating.periods import ANY_PERIOD, TimePeriod
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixIndex

S = 1_000_000_000
PEAK = TimePeriod("PEAK", week_days=frozenset({1, 2, 3, 4, 5}), start_s=8 * 3600, end_s=19 * 3600)
WEEKEND = TimePeriod("WEEKEND", week_days=frozenset({6, 7}))


def _prefixes(rng: random.Random, count: int) -> list[str]:
    seen: set[str] = set()
    while len(seen) < count:
        seen.add(str(rng.randint(1, 99)) + str(rng.randint(0, 10 ** rng.randint(2, 6))))
    return sorted(seen)


def build_tariff(
    prefix_count: int, mode: PricingMode, rng: random.Random
) -> tuple[TariffPlan, list[str]]:
    """A tariff of 1,000 destinations sharing prefix_count prefixes, each with 3 periods."""
    index = PrefixIndex()
    prefixes = _prefixes(rng, prefix_count)
    entries = []
    for number, prefix in enumerate(prefixes):
        index.add(prefix, f"D{number % 1000}")
    for dest in range(1000):
        price = Decimal(rng.randint(5, 500)).scaleb(-3)
        for period, factor, weight in ((ANY_PERIOD, 1, 0), (PEAK, 2, 10), (WEEKEND, 1, 20)):
            slots = (
                RateSlot(0, price * factor, 60 * S, 60 * S),
                RateSlot(60 * S, price * factor, 60 * S, S),
            )
            rate = Rate(f"R{dest}_{period.id}", slots, Decimal("0.02"))
            dr = DestinationRate(f"D{dest}", rate, rounding_decimals=4)
            entries.append(PlanEntry(dr, period, weight))
    plan = RatingPlan.build("BENCH", entries)
    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    profile = RatingProfile("t", "call", "*any", (RatingActivation(epoch, plan),))
    tariff = TariffPlan("bench", index, (profile,), mode=mode, default_tenant="t")
    return tariff, prefixes


def _timed(op: Callable[[str], object], numbers: list[str], seconds: float) -> tuple[float, float]:
    """Run op over numbers for about `seconds`: (ops per wall second, per CPU second)."""
    done = 0
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + seconds
    while time.perf_counter() < deadline:
        for number in numbers[:1000]:
            op(number)
        done += 1000
        numbers.append(numbers.pop(0))
    return done / (time.perf_counter() - wall), done / (time.process_time() - cpu)


def bench_calls(tariff: TariffPlan, numbers: list[str], seconds: float) -> tuple[float, float, int]:
    """3-span calls: Monday 18:58:30 UTC, 180 s = peak 60 s block, peak per s, off-peak."""
    start = datetime(2026, 3, 2, 18, 58, 30, tzinfo=UTC)

    def op(number: str) -> object:
        return tariff.rate(subject="s", destination=number, start=start, usage_ns=180 * S)

    cost = op(numbers[0])
    assert isinstance(cost, CallCost)
    return (*_timed(op, numbers, seconds), len(cost.spans))


def bench_max_usage(tariff: TariffPlan, numbers: list[str], seconds: float) -> tuple[float, float]:
    """max_usage with 5.00 for the same calls."""
    start = datetime(2026, 3, 2, 18, 58, 30, tzinfo=UTC)

    def op(number: str) -> object:
        return tariff.max_usage(
            subject="s", destination=number, start=start, amount_micros=5_000_000
        )

    return _timed(op, numbers, seconds)


def bench_deck_load(lines: int, rng: random.Random) -> tuple[float, float, int]:
    """Write a deck of `lines` prefixes and load it raw and through load_plan."""
    with tempfile.TemporaryDirectory() as tmp:
        deck = Path(tmp) / "deck.csv"
        with deck.open("w") as out:
            out.write("prefix,destination\n")
            for number, prefix in enumerate(_prefixes(rng, lines)):
                out.write(f"{prefix},D{number % 5000}\n")
        toml = Path(tmp) / "big.toml"
        toml.write_text(
            '[tariff]\nid = "big"\ndestination_files = ["deck.csv"]\n'
            '[rates.R]\nrate = "0.01"\n[plans.P]\n[[plans.P.rates]]\n'
            'destinations = ["D0"]\nrate = "R"\n[[profiles]]\nplan = "P"\n'
        )
        began = time.perf_counter()
        index = PrefixIndex()
        count = index.load_deck(deck)
        raw = time.perf_counter() - began
        began = time.perf_counter()
        load_plan(toml)
        full = time.perf_counter() - began
        return raw, full, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--deck-lines", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = random.Random(7)
    began = time.perf_counter()
    tariff, prefixes = build_tariff(100_000, PricingMode.EXACT, rng)
    print(f"built a 100,000-prefix tariff in memory in {time.perf_counter() - began:.2f} s")
    numbers = [p + str(rng.randint(10**5, 10**7)) for p in rng.sample(prefixes, 5000)]
    for mode in PricingMode:
        tariff = dataclasses.replace(tariff, mode=mode)
        wall, cpu, spans = bench_calls(tariff, numbers, args.seconds)
        print(
            f"rate ({mode}): {wall:,.0f} calls/s wall, {cpu:,.0f} per CPU-second"
            f" ({spans} spans per call, varied numbers)"
        )
        wall, cpu = bench_max_usage(tariff, numbers, args.seconds)
        print(f"max_usage ({mode}): {wall:,.0f}/s wall, {cpu:,.0f} per CPU-second")
    raw, full, count = bench_deck_load(args.deck_lines, rng)
    print(f"deck of {count:,} prefixes: PrefixIndex.load_deck {raw:.2f} s, load_plan {full:.2f} s")


if __name__ == "__main__":
    main()
