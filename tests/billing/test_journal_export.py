"""The ledger's journal -> ledger_journal: every entry once, whatever crashes in between;
Redis keeps each account's newest entry only; the exporter's own loop copies it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from chargingd.billing.db import BillingDB, Conn
from chargingd.billing.exporter import Exporter
from chargingd.billing.journal import JournalExport, store_entries
from chargingd.core.config import config_from_dict
from chargingd.ledger import Ledger, Mode
from chargingd.ledger.journal import LedgerInspector
from chargingd.ledger.keys import journal_key


async def _rows(db: BillingDB) -> list[tuple[Any, ...]]:
    async def work(conn: Conn) -> list[tuple[Any, ...]]:
        cur = await conn.execute(
            "SELECT account_id, kind, amount_micros, balance_micros, net_micros, ref, who, why"
            " FROM ledger_journal ORDER BY account_id, entry_ms, entry_seq"
        )
        return list(await cur.fetchall())

    rows: list[tuple[Any, ...]] = await db.run(work)
    return rows


async def _movements(ledger: Ledger, accounts: int, each: int) -> None:
    for a in range(accounts):
        await ledger.create_account(f"a{a}", mode=Mode.PREPAID, currency="EUR",
                                    balance_micros=1_000_000, who="t")  # fmt: skip
    await asyncio.gather(
        *(ledger.topup(f"a{a}", 100 + n, txn_id=f"a{a}-t{n}", who="t", why="card")
          for a in range(accounts) for n in range(each))
    )  # fmt: skip


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[BillingDB]:
    """The billing database, closed even when the test fails (a connection left open
    is a ResourceWarning that fails whichever test the garbage collector runs in)."""
    opened = await BillingDB.open(pg_url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_each_entry_copied_once_and_trimmed(
    ledger: Ledger, redis: aioredis.Redis, db: BillingDB
) -> None:
    await _movements(ledger, 3, 25)
    export = JournalExport(redis, page=2, count=10)  # several pages and reads per account
    assert await export.drain(db) == 3 * 26
    rows = await _rows(db)
    assert len(rows) == 78
    assert rows[0] == ("a0", "open", 0, 1_000_000, 0, "", "t", "")
    # The 25 top-ups ran concurrently: in any order, each once, the balance chained.
    a0 = [r for r in rows if r[0] == "a0"][1:]
    assert sorted(r[2] for r in a0) == list(range(100, 125))
    assert {(r[1], r[5][:4], r[6], r[7]) for r in a0} == {("topup", "a0-t", "t", "card")}
    balance = 1_000_000
    for row in a0:
        balance += row[2]
        assert row[3] == balance, row
    for a in range(3):
        assert await redis.xlen(journal_key(f"a{a}")) == 1  # the newest one stays
    # Copied again by a restarted exporter (it starts from the kept entry): nothing new.
    assert await JournalExport(redis).drain(db) == 0
    # A crash between the database commit and the trim: the re-read stores nothing twice.
    await ledger.topup("a1", 5, txn_id="late", who="t")
    found = await LedgerInspector(redis).read_journal(["a1"], {})
    await store_entries(db, found["a1"])
    assert await JournalExport(redis).drain(db) == 0
    assert len(await _rows(db)) == 79


async def test_the_exporter_loop_copies_the_journal(
    ledger: Ledger, redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    await _movements(ledger, 2, 3)
    cfg = config_from_dict(
        {"billing": {"db_url": pg_url},
         "export": {"block_ms": 50, "consumer": "j1", "journal_interval_s": 0.05}},
    )  # fmt: skip
    exporter = Exporter(redis, cfg, db=db)
    await exporter.start()
    try:
        for _ in range(400):
            if len(await _rows(db)) == 8:
                break
            await asyncio.sleep(0.025)
        assert len(await _rows(db)) == 8
        await ledger.adjust("a0", -50, txn_id="adj", who="ops", why="fix")
        for _ in range(400):
            if len(await _rows(db)) == 9:
                break
            await asyncio.sleep(0.025)
        last = (await _rows(db))[-1]  # ordered by account: one of a1's top-ups
        assert last[:2] == ("a1", "topup") and last[2] in (100, 101, 102), last
        assert ("a0", "adjust", -50) in [r[:3] for r in await _rows(db)]
    finally:
        await exporter.stop()
    assert exporter.stats.counters["journal_entries"] == 9
