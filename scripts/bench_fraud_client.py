"""The daemon's own fraud code per authorize, in a loop (no Redis): what sessions runs
with [fraud] on around the fused script, for the default rule set.

    .venv/bin/python scripts/bench_fraud_client.py [--calls 20000] [--repeat 5]

Per call: the fraud hook's Attempt and CallFacts, Fraud.prepare (the number's type,
the shape's ops, the keys and arguments), the extra keys and arguments the fused call
sends packed as the batcher packs them (hiredis), and Fraud.decided of an honest reply (no
rule fired). Calls go to 1,000 accounts dialling UK numbers of ten ranges, as
bench_fraud_load.py's loadgen does; "new numbers" clears the number-type cache before
each pass (every number typed again), "repeated numbers" keeps it. Prints the minimum
over the passes (us per call) and each part alone. Compiled (mypyc) when the tree has
its .so files (docs/fraud-cost.md "Tenth round").
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import hiredis
import redis.asyncio as aioredis

from chargingd.core.config import config_from_dict
from chargingd.fraud import Fraud, Prepared
from chargingd.fraud import keys as FK
from chargingd.ledger import Ledger
from chargingd.sessions.fraudhook import Attempt, FraudHook
from chargingd.sessions.store import record_key

RANGES = ("+44207946", "+44161496", "+44117496", "+44131496", "+44151496",
          "+44113496", "+44114496", "+44115496", "+44116496", "+44118496")  # fmt: skip
HONEST = [b"ok", 0, 0, [], b""]  # fraud_check's reply when no rule fired
Call = tuple[str, str, str]


def hook(local_values: int) -> FraudHook:
    cfg = config_from_dict({"fraud": {"enabled": True, "local_values": local_values}}).fraud
    redis = aioredis.Redis(host="127.0.0.1", port=1)  # never connected: scripts by sha
    clock = lambda: 1_760_000_000_000  # noqa: E731
    ledger = Ledger(redis, clock_ms=clock)
    fraud = Fraud(
        cfg,
        redis=redis,
        ledger=ledger,
        alerts=None,
        clock_ms=clock,
        live_ttl_s=3600,
        single_redis=True,
    )
    fraud.record_key = record_key
    return FraudHook(fraud)


def fused_part(prepared: Prepared) -> tuple[Any, ...]:
    """The rules' keys and arguments as the fused authorize sends them (after its own):
    the values' key and this process's evaluation (fraud/local.py), else the rules' own
    arguments for their Lua."""
    keys: list[str] = []
    argv: list[Any] = []
    if prepared.outcome is not None:
        keys.append(prepared.value)
        argv += prepared.outcome.argv()
    else:
        prepared.add_fused(keys, argv)
    return ("FCALL", "f", len(keys), *keys, *argv)


def reply(prepared: Prepared) -> Any:
    """What the authorize's verdict is: this process's own evaluation, or Lua's reply."""
    return HONEST if prepared.outcome is None else prepared.outcome.reply


def one_pass(h: FraudHook, calls: list[Call]) -> float:
    t0 = time.perf_counter()
    for account, session, callee in calls:
        attempt = Attempt(caller_ip="192.0.2.7")
        attempt.found(account, "user:" + account, "")
        facts = h.facts(account, session, callee, attempt)
        prepared = h.prepare(facts)
        assert prepared is not None
        hiredis.pack_command(fused_part(prepared))
        if prepared.outcome is not None:
            prepared.decided_here(True)  # as the plain authorize's reply settles it
        h.refusal(h.decided(prepared, reply(prepared)))
    return (time.perf_counter() - t0) / len(calls) * 1e6


def part(name: str, calls: list[Any], fn: Callable[[Any], object]) -> None:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for c in calls:
            fn(c)
        best = min(best, (time.perf_counter() - t0) / len(calls) * 1e6)
    print(f"  {name:<34} {best:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--local-values",
        type=int,
        default=16_384,
        help="[fraud] local_values (0: the rules in Redis's Lua, the daemon only prepares "
        "their arguments); else every account's value known (empty at first) and each "
        "call evaluated here, the values it leaves kept as the script would write them",
    )
    args = parser.parse_args()
    rnd = random.Random(1)
    calls = [
        (f"load{rnd.randrange(1000)}", f"{i:08x}-9d1c-4c1e-a0b2-c0ffee{i:06d}",
         RANGES[i % 10] + f"{rnd.randrange(1000):03d}")
        for i in range(args.calls)
    ]  # fmt: skip
    h = hook(args.local_values)
    local = h.fraud.local
    if local is not None:
        for n in range(1000):
            local.values.put(FK.value_key(f"load{n}"), b"")
    fresh = []
    for _ in range(args.repeat):
        h.fraud.classifier.cache_clear()
        fresh.append(one_pass(h, calls))
    kept = [one_pass(h, calls) for _ in range(args.repeat)]
    print(f"per call, new numbers: {min(fresh):.2f} us; repeated numbers: {min(kept):.2f} us")
    attempt = Attempt(caller_ip="192.0.2.7")
    attempt.found("load1", "user:load1", "")
    part("Attempt", calls, lambda c: Attempt(caller_ip="192.0.2.7"))
    part("facts", calls, lambda c: h.facts(c[0], c[1], c[2], attempt))
    facts = [h.facts(c[0], c[1], c[2], attempt) for c in calls]
    part("prepare (repeated numbers)", facts, h.prepare)
    if local is not None:  # the evaluation alone (values as the passes above left them)
        part("  of which evaluated here", facts, lambda f: evaluated(h, f))
    prepared = [h.prepare(f) for f in facts]
    part(
        "pack the fused call's rule arguments",
        prepared,
        lambda p: hiredis.pack_command(fused_part(p)),
    )
    part("decided", prepared, lambda p: h.decided(p, reply(p)))


def evaluated(h: FraudHook, facts: Any) -> None:
    prepared = h.fraud.prepare(facts)
    assert prepared is not None
    h.fraud.localize(prepared)


if __name__ == "__main__":
    main()
