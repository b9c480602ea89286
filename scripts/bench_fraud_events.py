#!/usr/bin/env python3
"""Redis's instructions per CDR counted by the event rules, for busy accounts: callgrind
on a private redis-server (as bench_redis_instructions.py), the default fraud rule set,
--accounts accounts each ending a call every --every-s seconds of the rules' clock
(a clock of its own, moved by hand: no wall time). --warm-h hours of CDRs first (not
counted: the windows fill, as a steadily calling account's are), then --cdrs counted
one after the other as the daemon's fraud-events consumer sends them. Prints the
instructions per CDR and the commands Redis ran per CDR. No rule fires (each CDR
charges --charge-micros, all answered, none short).

    PYTHONPATH=. .venv/bin/python scripts/bench_fraud_events.py --cdrs 2000

bench_redis_instructions.py --fraud --events measures the CDRs of whole calls made
through Sessions (each account a few calls: sparse windows); this one the CDRs of
accounts whose windows are full (docs/fraud-cost.md "Nineteenth round").
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
from pathlib import Path

import redis.asyncio as aioredis
from bench_common import default_fraud, seed_prepaid
from bench_redis_instructions import _commands, _dumped, _zero, callgrind_redis

from chargingd.billing.cdr import CDR
from chargingd.ledger import Ledger

T0_MS = 1_796_000_000_000


def _cdr(n: int, account: int, now_ms: int, charge: int) -> CDR:
    start = now_ms - 96_000
    return CDR(
        source="radius",
        call_id=f"ev{n}",
        account_id=f"acc{account}",
        caller="+4930999",
        callee="+49301234567",
        destination="DE",
        start_ms=start,
        answer_ms=start + 1000,
        end_ms=now_ms,
        duration_s=95,
        billed_s=95,
        cost_micros=charge,
        currency="EUR",
        tariff="retail",
        gateway="10.0.0.1",
        disconnect_cause=16,
        status="normal",
        charged_micros=charge,
        charge="live",
    )


async def _run(url: str, pid: int, out: Path, args: argparse.Namespace) -> None:
    client = aioredis.Redis.from_url(url)
    now = [T0_MS]
    ledger = Ledger(client, audit_holds=False, clock_ms=lambda: now[0])
    await ledger.load_scripts()
    await seed_prepaid(ledger, args.accounts)
    fraud = await default_fraud(client, ledger, lambda: now[0], args.local_values)
    step_ms = args.every_s * 1000 // args.accounts  # each account every --every-s
    ids = itertools.count()

    async def feed(count: int) -> None:
        for _ in range(count):
            n = next(ids)
            now[0] += step_ms
            verdict = await fraud.cdr(_cdr(n, n % args.accounts, now[0], args.charge_micros), "")
            assert not verdict.fired, verdict  # an honest population
        await fraud.settle()

    await feed(int(args.warm_h * 3600_000 // step_ms))
    before = await _commands(client)
    _zero(pid)
    await feed(args.cdrs)
    instructions = _dumped(pid, out, args.keep, "events")
    after = await _commands(client)
    per = {c: (n - before.get(c, 0)) / args.cdrs for c, n in after.items()}
    fields = [await client.hlen(f"{{a:acc{a}}}:fr:ev") for a in range(args.accounts)]
    print(
        f"events {instructions / args.cdrs:9,.0f} instructions per CDR "
        f"(accounts {args.accounts}, a CDR each every {args.every_s} s, "
        f"events' hash {min(fields)}-{max(fields)} fields)"
    )
    print("  per CDR: " + " ".join(f"{c} {n:.2f}" for c, n in sorted(per.items()) if n >= 0.01))
    await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--every-s", type=int, default=60)
    parser.add_argument("--warm-h", type=float, default=2.0)
    parser.add_argument("--charge-micros", type=int, default=500_000)
    parser.add_argument("--local-values", type=int, default=16_384)
    parser.add_argument("--redis-server", default=shutil.which("redis-server") or "")
    parser.add_argument("--keep", type=Path, default=None, help="callgrind.events copied there")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with callgrind_redis(args.redis_server) as (url, pid, out, _tmp):
        asyncio.run(_run(url, pid, out, args))


if __name__ == "__main__":
    main()
