#!/usr/bin/env python3
"""CPU cost of the pieces of one authorize, outside the event loop (µs per call).

What one Access-Request costs in: E.164 normalisation of the called and calling
numbers (100,000 distinct numbers each, as a gateway sends them), rating (the price
of the first grant, the usage that hold pays for, the Session-Timeout the money
buys: TariffPlan.rate / max_usage as sessions calls them, and the same three from
one RateCard), and the RADIUS codec (decode, Message-Authenticator check, Accept
encode). CPU time (process_time), best of --repeat runs: the box is shared.

Usage: scripts/bench_hotpath.py [--count 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from chargingd.core.numbers import normalize_or_raw, to_e164
from chargingd.radius import codec as rc
from chargingd.rating.loaders import load_plan
from chargingd.rating.plan import TariffPlan

S = 1_000_000_000
SAMPLE = os.path.join(os.path.dirname(__file__), "..", "config", "tariffs", "sample.toml")
SECRET = b"s3cr3t-bench"


def best_us(fn: Callable[[], int], repeat: int) -> float:
    """Best CPU time per item over `repeat` runs of fn (which returns its item count)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        count = fn()
        best = min(best, (time.process_time() - t0) / count)
    return best * 1e6


def bench_numbers(count: int, repeat: int) -> dict[str, float]:
    rng = random.Random(1)
    called = [f"004420798{rng.randrange(100_000):05d}" for _ in range(count)]
    calling = [f"3161234{rng.randrange(100_000):05d}" for _ in range(count)]
    trunk = [f"0{rng.choice((30, 40, 89, 221))}{rng.randrange(10**7):07d}" for _ in range(count)]

    def run(numbers: list[str], fn: Callable[[str], str]) -> Callable[[], int]:
        def go() -> int:
            from chargingd.core import numbers as mod

            mod._to_e164.cache_clear()  # every number new, as real variety makes them
            for n in numbers:
                fn(n)
            return len(numbers)

        return go

    return {
        "to_e164 called (IDD)": best_us(run(called, lambda n: to_e164(n, country="DE")), repeat),
        "to_e164 trunk (0...)": best_us(run(trunk, lambda n: to_e164(n, country="DE")), repeat),
        "normalize_or_raw calling": best_us(
            run(calling, lambda n: normalize_or_raw(n, country="DE")), repeat
        ),
    }


def bench_rating(plan: TariffPlan, count: int, repeat: int, start: datetime) -> dict[str, float]:
    rng = random.Random(2)
    numbers = [f"4420798{rng.randrange(100_000):05d}" for _ in range(count)]
    subjects = [f"acc{i % 1000:04d}" for i in range(count)]
    starts = [start + timedelta(milliseconds=i) for i in range(count)]
    usage = 75 * S

    def three_calls() -> int:
        for number, subject, when in zip(numbers, subjects, starts, strict=True):
            cost = plan.rate(
                subject=subject, destination=number, start=when, usage_ns=usage, breakdown=False
            )
            plan.max_usage(
                subject=subject, destination=number, start=when, amount_micros=cost.cost_micros
            )
            plan.max_usage(subject=subject, destination=number, start=when, amount_micros=10**15)
        return count

    start_ns = int(start.timestamp()) * S

    def one_card() -> int:
        for i, (number, subject) in enumerate(zip(numbers, subjects, strict=True)):
            card = plan.card(subject=subject, destination=number, start_ns=start_ns + i * 1_000_000)
            cost = card.price(usage)
            card.max_usage(cost.cost_micros)
            card.max_usage(10**15)
        return count

    found = {"rate + 2x max_usage (TariffPlan)": best_us(three_calls, repeat)}
    if hasattr(plan, "card"):  # (absent before the rate cards: the script compares)
        found["card: price + 2x max_usage"] = best_us(one_card, repeat)
    return found


def bench_codec(count: int, repeat: int) -> dict[str, float]:
    attrs = b"".join(
        (
            rc.attr_bytes(rc.USER_NAME, b"000000000042"),
            rc.attr_bytes(rc.CALLING_STATION_ID, b"316123412345"),
            rc.attr_bytes(rc.CALLED_STATION_ID, b"00442079812345"),
            rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
            rc.attr_bytes(rc.ACCT_SESSION_ID, b"a-00000001-DEADBEEF-0001"),
            rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=a-00000001-DEADBEEF-0001"),
        )
    )
    packets = [
        rc.encode_access_request(i % 256, os.urandom(16), attrs, SECRET) for i in range(count)
    ]

    def decode_verify_reply() -> int:
        for data in packets:
            packet = rc.decode(data)
            rc.verify_message_authenticator(packet, SECRET, packet.authenticator)
            reply_attrs = rc.accept_attributes(3600, 60, True, 12_340_000, "EUR")
            rc.encode_reply(
                rc.ACCESS_ACCEPT, packet.identifier, packet.authenticator, reply_attrs, SECRET
            )
        return count

    return {"codec: decode + verify MA + Accept": best_us(decode_verify_reply, repeat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plan = load_plan(SAMPLE)
    results = bench_numbers(args.count, args.repeat)
    saturday = datetime(2027, 1, 9, 12, tzinfo=UTC)  # one rate all day
    weekday = datetime(2027, 1, 4, 18, 30, tzinfo=UTC)  # peak ends within the call
    for label, start in (("weekend", saturday), ("18:30 weekday", weekday)):
        for name, us in bench_rating(plan, args.count, args.repeat, start).items():
            results[f"{name} [{label}]"] = us
    results.update(bench_codec(args.count, args.repeat))
    width = max(map(len, results))
    for name, us in results.items():
        print(f"{name:<{width}}  {us:7.2f} us")


if __name__ == "__main__":
    main()
