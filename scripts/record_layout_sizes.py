#!/usr/bin/env python3
"""The session record's stored bytes in both layouts (sessions/record.py LEGACY and
COMPACT) over random started calls, and what each costs in Redis 7.0: the value as an
sds (3 bytes of header and a NUL under 256 bytes, 5 and a NUL above) in jemalloc's
size class (docs/performance.md, round 13c).

    PYTHONPATH=. .venv/bin/python scripts/record_layout_sizes.py [--long] [--count N]

--long: long ids (user names of 20-64 characters, SIP URIs of 20-60 for the numbers).
"""

from __future__ import annotations

import argparse
import random
import statistics

from chargingd.sessions.record import COMPACT, SessionRecord

# jemalloc's small size classes (x86-64, 16-byte quantum), as Redis 7.0 allocates
CLASSES = [8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512]
CLASSES += [640, 768, 896, 1024]


def redis_bytes(size: int) -> int:
    """The allocation of a string value of ``size`` bytes (sdshdr8 / sdshdr16 + NUL)."""
    need = size + (4 if size < 256 else 6)
    return next(c for c in CLASSES if c >= need)


def random_call(rng: random.Random, long_ids: bool) -> SessionRecord:
    """A started call (some after Interims) with random id, number and time lengths."""

    def text(lo: int, hi: int, alphabet: str = "abcdefghij0123456789") -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))

    def number() -> str:
        return text(20, 60) if long_ids else "+" + text(6, 15, "0123456789")

    auth_ms = 1_796_553_530_209 + rng.randrange(10**9)
    answer_ms = auth_ms + rng.randrange(0, 60_000)
    return SessionRecord.build(
        session_id="s",
        account_id="a",
        user_name=text(20, 64) if long_ids else text(4, 40),
        caller=number(),
        callee=number(),
        destination=text(10, 30) if long_ids else text(2, 20),
        plan=text(3, 16),
        currency="EUR",
        gateway=text(7, 15, "0123456789."),
        client=text(2, 16),
        auth_ms=auth_ms,
        answer_ms=answer_ms,
        last_seen_ms=answer_ms + rng.choice([0, 0, 60_000, 3_600_000]),
        last_usage_s=rng.choice([0, 0, 60, 3600]),
        debited_micros=rng.choice([0, 0, 600_000, 36_000_000]),
        held_micros=rng.choice([20_000, 900_000, 12_000_000]),
        paid_usage_s=rng.choice([75, 120, 675]),
        credit_micros=rng.choice([5_000_000, 12_345_678, 999_999_999_820_000]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="long ids and SIP URIs")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sizes, values, redis = [], [], []
    for _ in range(args.count):
        rec = random_call(rng, args.long)
        legacy, compact = len(rec.pack()), len(rec.pack(layout=COMPACT))
        sizes.append(legacy)
        values.append(legacy - compact)
        redis.append(redis_bytes(legacy) - redis_bytes(compact))
    print(f"{args.count} records: LEGACY values {min(sizes)}-{max(sizes)} bytes")
    print(
        f"COMPACT shorter by {min(values)}-{max(values)} bytes (mean {statistics.mean(values):.1f})"
    )
    share = sum(r >= 32 for r in redis) / len(redis)
    print(
        f"Redis bytes saved: mean {statistics.mean(redis):.1f}, {min(redis)}-{max(redis)}, "
        f"at least 32 for {share:.1%}"
    )


if __name__ == "__main__":
    main()
