"""An overpayment's surplus stays on the account as credit (docs/invoicing.md): dunning
must not suspend an account for an older invoice that this credit covers, on a real
PostgreSQL and a real ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from invoicing_harness import NOW, at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.invoicing import Books, invoice_run
from chargingd.invoicing.dunning import dunning_pass
from chargingd.invoicing.payments import add_payment
from chargingd.ledger import Ledger, Status

EUR = 1_000_000


@pytest.fixture
async def books(pg_url: str, ledger: Ledger) -> AsyncIterator[Books]:
    b = await make_books(pg_url, ledger)
    yield b
    await b.db.close()


async def _two_invoices(books: Books, ledger: Ledger, pg_url: str, account: str) -> list[str]:
    """October 1.00 and November 2.00 EUR (no VAT), both issued, none paid."""
    await postpaid(ledger, account)
    await load_cdrs(
        pg_url,
        [cdr(1, account, at(10, month=10), charged_micros=EUR)]
        + [cdr(n, account, at(10 + n), charged_micros=EUR) for n in (2, 3)],
    )
    numbers = []
    for period in ("2026-10", "2026-11"):
        (inv,) = (await invoice_run(books, period)).issued
        numbers.append(inv.number)
    return numbers


async def _dun(pg_url: str, ledger: Ledger, account: str) -> tuple[int, int]:
    later = await make_books(pg_url, ledger, now=NOW + timedelta(days=60))
    try:
        return await dunning_pass(later, account_id=account)
    finally:
        await later.db.close()


async def test_an_overpayment_that_covers_the_older_invoice_is_no_reason_to_suspend(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    october, november = await _two_invoices(books, ledger, pg_url, "acme")
    # The customer pays 3.00 against November's 2.00: 1.00 surplus, October's 1.00 owed.
    await add_payment(books, "acme", 3 * EUR, invoice_number=november, reference="B1", who="t")
    assert await _dun(pg_url, ledger, "acme") == (0, 0)
    assert (await ledger.get_account("acme")).status is Status.ACTIVE
    assert await query(pg_url, "SELECT count(*) FROM dunning_events") == [(0,)]
    assert october


async def test_a_partial_overpayment_still_dunned_for_what_is_left(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    october, november = await _two_invoices(books, ledger, pg_url, "acme")
    # 2.50 against November's 2.00: 0.50 of October's 1.00 is still owed net.
    await add_payment(books, "acme", 2_500_000, invoice_number=november, reference="B1", who="t")
    assert await _dun(pg_url, ledger, "acme") == (1, 0)
    assert (await ledger.get_account("acme")).status is Status.SUSPENDED
    detail = await query(
        pg_url,
        "SELECT i.number, e.detail FROM dunning_events e JOIN invoices i ON i.id = e.invoice_id",
    )
    assert detail == [(october, detail[0][1])] and "(0.50 EUR due" in detail[0][1]
