"""(d) invoices against their lines, their ledger posting and the CDRs: an invoice
edited past the immutability trigger (as a superuser can), and usage recorded after
its period was billed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis
from assurance_harness import context, params, run
from invoicing_harness import at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.assurance import Kind
from chargingd.invoicing import Books, invoice_run
from chargingd.ledger import Ledger

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


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


async def test_edited_total_and_late_usage_are_found(
    books: Books, ledger: Ledger, pg_url: str, redis: aioredis.Redis
) -> None:
    await postpaid(ledger, "acme")
    await postpaid(ledger, "bolt")
    await load_cdrs(pg_url, [cdr(i, "acme", at(1 + i), charged_micros=250_000) for i in range(4)])
    await load_cdrs(pg_url, [cdr(i, "bolt", at(2 + i), charged_micros=100_000) for i in range(3)])
    await invoice_run(books, "2026-11")
    ctx = context(books.db, redis)
    november = params(start=NOV, end=DEC)
    assert [f for f in await run(ctx, november) if f.kind is Kind.INVOICE_MISMATCH] == []

    # A superuser edits an issued total past the trigger (the fault as it would happen).
    await query(
        pg_url,
        "SET session_replication_role = replica;"
        " UPDATE invoices SET total_micros = total_micros + 5000000 WHERE account_id = 'acme'",
    )
    # A call of November stored after November was invoiced (not re-counted yet).
    await load_cdrs(pg_url, [cdr(9, "bolt", at(20), charged_micros=70_000)])
    found = [f for f in await run(ctx, november) if f.kind is Kind.INVOICE_MISMATCH]
    edited, late = sorted(found, key=lambda f: f.account_id)
    assert edited.account_id == "acme" and edited.money_micros == -5_000_000
    assert edited.call_id.startswith("INV-") and edited.source == "invoice"
    assert edited.detail["problems"] == [
        "total differs from the lines (subtotal + tax)",
        "total differs from what the ledger was posted for it",
    ]
    assert edited.detail["ledger_total_micros"] == edited.detail["lines_total_micros"]
    assert late.account_id == "bolt" and late.money_micros == 70_000
    assert late.detail["invoiced_usage_micros"] == 300_000
    assert late.detail["cdr_charged_micros"] == 370_000


async def test_cdr_in_another_currency_is_not_usage_changed_after_billing(
    books: Books, ledger: Ledger, pg_url: str, redis: aioredis.Redis
) -> None:
    """A USD CDR on a EUR account is the invoice run's error, billed nowhere: the
    invoice's usage is checked against its EUR CDRs only, so nothing is flagged; a late
    EUR call is still found, at its own amount."""
    await postpaid(ledger, "cur")
    await load_cdrs(
        pg_url,
        [
            cdr(1, "cur", at(10), charged_micros=1_000_000),
            cdr(2, "cur", at(11), charged_micros=5_000_000, currency="USD"),
        ],
    )
    result = await invoice_run(books, "2026-11")
    assert result.errors == ["cur: CDRs in USD, account in EUR"]
    assert [d.usage_micros for d in result.issued] == [1_000_000]
    ctx = context(books.db, redis)
    november = params(start=NOV, end=DEC)
    assert [f for f in await run(ctx, november) if f.kind is Kind.INVOICE_MISMATCH] == []

    await load_cdrs(pg_url, [cdr(3, "cur", at(29), charged_micros=2_000_000)])
    (late,) = [f for f in await run(ctx, november) if f.kind is Kind.INVOICE_MISMATCH]
    assert late.currency == "EUR" and late.money_micros == 2_000_000
    assert late.detail["invoiced_usage_micros"] == 1_000_000
    assert late.detail["cdr_charged_micros"] == 3_000_000
    assert (late.detail["invoiced_calls"], late.detail["cdr_calls"]) == (1, 2)
