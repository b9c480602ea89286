"""The daemon's fraud code per authorize in steady state, in a loop (no Redis): accounts
whose values several calls have grown, as a load run's are, and called numbers that
repeat (classified once). docs/fraud-cost.md "Twenty-first round (daemon)".

    .venv/bin/python scripts/bench_fraud_steady.py [CALLS_BEFORE [ACCOUNTS [SID_BYTES]]]
    valgrind --tool=callgrind --callgrind-out-file=OUT .venv/bin/python \
        scripts/bench_fraud_steady.py 8 1000    (then callgrind_annotate --inclusive=yes)

Each account is called CALLS_BEFORE times first (Fraud.prepare and localize: evaluated
here, each value left as the plain authorize would write it), then three passes time
Fraud.prepare, Fraud.localize and the settling (decided_here, decided, refusal) apart.
Prints the best pass's us per call of each and the values' mean size. SID_BYTES: the
session ids' length (default 36, a UUID's form; docs/fraud-cost.md "Twenty-third
round"). Run from the repository root (it imports this tree's chargingd).
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "scripts")]

from bench_common import sized_sid  # noqa: E402
from bench_fraud_client import hook  # noqa: E402

from chargingd.fraud import keys as FK  # noqa: E402
from chargingd.sessions.fraudhook import Attempt  # noqa: E402


def main() -> None:
    calls_before = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    accounts = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    sid_bytes = int(sys.argv[3]) if len(sys.argv) > 3 else 36
    t = [1_760_000_000_000.0]

    def clock() -> int:  # ~9,000 calls a second
        t[0] += 0.11
        return int(t[0])

    h = hook(16_384)
    fraud = h.fraud
    fraud.clock_ms = clock
    local = fraud.local
    assert local is not None
    for n in range(accounts):
        local.values.put(FK.value_key(f"load{n}"), b"")
    counter = [0]

    def facts() -> list[Any]:
        out = []
        for n in range(accounts):
            counter[0] += 1
            i = counter[0]
            attempt = Attempt()
            attempt.found(f"load{n}", f"user:load{n}", "")
            sid = f"{i:08x}-9d1c-4c1e-a0b2-c0ffee{i:06d}"
            if sid_bytes != 36:
                sid = sized_sid(i, sid_bytes, sid)
            out.append(h.facts(f"load{n}", sid, f"+44207946{i % 1000:04d}", attempt))
        return out

    for _ in range(calls_before):
        for f in facts():
            prepared = h.prepare(f)
            assert prepared is not None
            prepared.decided_here(True)
    gc.collect()
    gc.freeze()  # as the daemon after its start (core/heap.py)
    gc.set_threshold(10_000, 10, 10)
    best: dict[str, float] = {}
    for _ in range(3):
        batch = facts()
        t0 = time.perf_counter()
        prepared_all = [fraud.prepare(f) for f in batch]
        t1 = time.perf_counter()
        for p in prepared_all:
            assert p is not None
            fraud.localize(p)
        t2 = time.perf_counter()
        for p in prepared_all:
            assert p is not None and p.outcome is not None
            p.decided_here(True)
            h.refusal(h.decided(p, p.outcome.reply))
        t3 = time.perf_counter()
        for name, took in (("prepare", t1 - t0), ("localize", t2 - t1), ("settle", t3 - t2)):
            best[name] = min(best.get(name, float("inf")), took / accounts * 1e6)
    sizes = [len(local.values.raw(FK.value_key(f"load{n}")) or b"") for n in range(accounts)]
    shown = "  ".join(f"{name} {us:.2f} us" for name, us in best.items())
    print(f"per call: {shown}; values {sum(sizes) / accounts:.0f} bytes; by C {local.by_c}")


if __name__ == "__main__":
    main()
