"""The invoice run on a real PostgreSQL (pgserver) and a real Redis ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from invoicing_harness import at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.invoicing import Books, invoice_run
from chargingd.invoicing.model import Kind
from chargingd.ledger import Ledger


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis)
    await led.load_scripts()
    return led


@pytest.fixture
async def books(pg_url: str, ledger: Ledger) -> AsyncIterator[Books]:
    b = await make_books(pg_url, ledger, default_vat_rate="19")
    yield b
    await b.db.close()


async def test_invoice_of_a_month_of_calls(books: Books, ledger: Ledger, pg_url: str) -> None:
    await postpaid(ledger, "acme")
    rows = [cdr(i, "acme", at(1 + i % 28), charged_micros=123_457) for i in range(30)]
    rows.append(cdr(99, "acme", at(30, 23), charged_micros=5, destination="UK_MOB"))
    rows.append(cdr(100, "acme", at(1, 0, month=12), charged_micros=777))  # next period
    await load_cdrs(pg_url, rows)
    result = await invoice_run(books, "2026-11")
    (inv,) = result.issued
    assert inv.kind is Kind.INVOICE
    assert inv.usage_micros == 30 * 123_457 + 5
    assert [line.description for line in inv.lines] == [
        "Calls to DE_FIX (30 calls)",
        "Calls to UK_MOB (1 call)",
    ]
    assert inv.lines[0].amount_micros == 3_700_000  # 3.70371 -> 3.70
    assert inv.lines[0].tax_micros == 700_000  # 19 % of 3.70 = 0.703 -> 0.70
    assert inv.lines[1].amount_micros == 0
    assert inv.total_micros == 4_400_000
    stored = await query(pg_url, "SELECT number, total_micros FROM invoices")
    assert stored == [("INV-2027-000001", 4_400_000)]
    again = await invoice_run(books, "2026-11")
    assert again.issued == []
    assert again.skipped == {"already issued": ["acme"]}


async def test_concurrent_runs_neither_duplicate_nor_skip_numbers(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    ids = [f"c{i:02d}" for i in range(23)]
    for account_id in ids:
        await postpaid(ledger, account_id)
    await load_cdrs(pg_url, [cdr(i, a, at(3)) for i, a in enumerate(ids)])
    others = [await make_books(pg_url, ledger, batch_size=4) for _ in range(3)]
    try:
        results = await asyncio.gather(*(invoice_run(b, "2026-11") for b in [books, *others]))
    finally:
        for b in others:
            await b.db.close()
    assert sum(len(r.issued) for r in results) == len(ids)
    rows = await query(pg_url, "SELECT account_id, seq FROM invoices ORDER BY seq")
    assert sorted(a for a, _ in rows) == ids
    assert [s for _, s in rows] == list(range(1, len(ids) + 1))
