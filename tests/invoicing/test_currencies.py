"""Invoices in currencies whose minor unit is not the cent, on a real PostgreSQL and a
real ledger: JPY has none (whole yen), BHD three decimals (the fils, 0.001). Lines, VAT,
totals, credit notes, payments and dunning use the invoice's currency, not one
`minor_unit_decimals` for all (a JPY invoice was billed in sen, a BHD one to 0.01)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fakes import Clock
from invoicing_harness import NOW, at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.invoicing import Books, Invoice, Refused, invoice_run
from chargingd.invoicing.credit import credit_note
from chargingd.invoicing.dunning import dunning_pass
from chargingd.invoicing.payments import add_payment
from chargingd.invoicing.render import invoice_text, run_text
from chargingd.invoicing.reports import render, report
from chargingd.invoicing.store import get_invoice
from chargingd.ledger import Ledger

UNIT = 1_000_000  # micro-units in one yen, one dinar, one euro

# A month of calls per account: (destination, calls, charged_micros of each call).
MONTH = {
    "jp": ("JPY", [("JP_FIX", 20, 12_345_678), ("JP_MOB", 10, 33_350_000)]),
    "bh": ("BHD", [("BH_FIX", 20, 123_456), ("BH_MOB", 10, 12_350)]),
    "eu": ("EUR", [("DE_FIX", 30, 123_457)]),
}


@pytest.fixture
def clock() -> Clock:
    return Clock(int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000))


@pytest.fixture
async def books(pg_url: str, ledger: Ledger) -> AsyncIterator[Books]:
    b = await make_books(pg_url, ledger, default_vat_rate="10")
    yield b
    await b.db.close()


async def _month_of_calls(ledger: Ledger, clock: Clock, pg_url: str) -> None:
    """Every call held and debited by the ledger, then stored as its CDR."""
    rows = []
    for account, (currency, groups) in MONTH.items():
        await postpaid(ledger, account, currency=currency, limit="100000")
        n = 0
        for destination, calls, cost in groups:
            for _ in range(calls):
                start = at(1 + n % 28, 8 + n // 28)
                clock.now_ms = int(start.timestamp() * 1000)
                sid = f"{account}-{n}"
                assert (await ledger.reserve(account, sid, UNIT * 50, lease_ms=3_600_000)).ok
                clock.advance(60)
                await ledger.release(account, sid, cost)
                rows.append(
                    cdr(n, account, start, charged_micros=cost, destination=destination,
                        currency=currency)
                )  # fmt: skip
                n += 1
    await load_cdrs(pg_url, rows)


def _figures(inv: Invoice) -> list[tuple[str, int, int, int]]:
    return [(ln.description, ln.exact_micros, ln.amount_micros, ln.tax_micros) for ln in inv.lines]


async def test_jpy_and_bhd_invoices_are_rounded_to_their_own_minor_unit(
    books: Books, ledger: Ledger, clock: Clock, pg_url: str
) -> None:
    await _month_of_calls(ledger, clock, pg_url)
    result = await invoice_run(books, "2026-11")
    assert result.errors == []
    issued = {inv.account_id: inv for inv in result.issued}
    jp_inv, bh_inv, eu_inv = [
        await get_invoice(books.db, issued[a].number, NOW) for a in ("jp", "bh", "eu")
    ]
    # JPY, whole yen: 20 x 12.345678 = 246.91356 -> 247, VAT 24.7 -> 25;
    # 10 x 33.35 = 333.5 -> 334 (half away from zero), VAT 33.4 -> 33.
    assert _figures(jp_inv) == [
        ("Calls to JP_FIX (20 calls)", 246_913_560, 247 * UNIT, 25 * UNIT),
        ("Calls to JP_MOB (10 calls)", 333_500_000, 334 * UNIT, 33 * UNIT),
    ]
    assert (jp_inv.subtotal_micros, jp_inv.tax_micros, jp_inv.total_micros) == (
        581 * UNIT, 58 * UNIT, 639 * UNIT,
    )  # fmt: skip
    assert jp_inv.usage_micros == 580_413_560  # exact, as the CDRs and the ledger have it
    # BHD, to the fils: 20 x 0.123456 = 2.46912 -> 2.469, VAT 0.2469 -> 0.247;
    # 10 x 0.01235 = 0.1235 -> 0.124, VAT 0.0124 -> 0.012.
    assert _figures(bh_inv) == [
        ("Calls to BH_FIX (20 calls)", 2_469_120, 2_469_000, 247_000),
        ("Calls to BH_MOB (10 calls)", 123_500, 124_000, 12_000),
    ]
    assert (bh_inv.subtotal_micros, bh_inv.tax_micros, bh_inv.total_micros) == (
        2_593_000, 259_000, 2_852_000,
    )  # fmt: skip
    # EUR as ever: 3.70371 -> 3.70, VAT 0.37.
    assert (eu_inv.subtotal_micros, eu_inv.tax_micros, eu_inv.total_micros) == (
        3_700_000, 370_000, 4_070_000,
    )  # fmt: skip
    # Written as each currency is: JSON, text and the run's summary.
    shown = jp_inv.to_json()
    assert (shown["subtotal"], shown["tax"], shown["total"], shown["outstanding"]) == (
        "581", "58", "639", "639",
    )  # fmt: skip
    assert [(ln["amount"], ln["tax"], ln["exact_amount"]) for ln in shown["lines"]] == [
        ("247", "25", "246.91356"),
        ("334", "33", "333.5"),
    ]
    b = bh_inv.to_json()
    assert (b["subtotal"], b["tax"], b["total"]) == ("2.593", "0.259", "2.852")
    assert [ln["amount"] for ln in b["lines"]] == ["2.469", "0.124"]
    assert eu_inv.to_json()["total"] == "4.07"
    assert "  total 639 JPY\n" in invoice_text(jp_inv)
    assert "  total 2.852 BHD\n" in invoice_text(bh_inv)
    summary = run_text(result)
    assert "total 639 JPY (usage 580.41356" in summary and "total 2.852 BHD" in summary
    # The posting leaves each account owing its total exactly (calls + the rest).
    assert (await ledger.get_account("jp")).balance_micros == -639 * UNIT
    assert (await ledger.get_account("bh")).balance_micros == -2_852_000
    assert result.notes == []  # each currency in its own minor unit: nothing to say
    # The usage report writes each currency with its decimals too (333.50 JPY was shown).
    rows = await report(
        books.db, by="destination", start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 12, 1, tzinfo=UTC), time_zone="UTC", groups={},
    )  # fmt: skip
    shown_rows = {r.key: r.to_json() for r in rows}
    assert (shown_rows["JP_MOB"]["charged"], shown_rows["BH_MOB"]["rated"]) == ("333.5", "0.1235")
    assert shown_rows["DE_FIX"]["charged"] == "3.70371"
    mobile = [r for r in rows if r.key == "JP_MOB"]
    assert "10 calls, 10.00 min, 333.5 JPY charged" in render(mobile, "destination", "table")


async def test_minor_unit_decimals_set_in_the_config_applies_to_every_currency(
    pg_url: str, ledger: Ledger, clock: Clock
) -> None:
    """The option kept: a config that says 2 rounds JPY to 0.01 as before, and the run
    says that this is not the yen's own minor unit."""
    await _month_of_calls(ledger, clock, pg_url)
    books = await make_books(pg_url, ledger, default_vat_rate="10", minor_unit_decimals=2)
    try:
        result = await invoice_run(books, "2026-11", dry_run=True)
    finally:
        await books.db.close()
    totals = {d.account_id: d.total_micros for d in result.issued}
    # 246.91 + 333.50 = 580.41, VAT 24.69 + 33.35; 2.47 + 0.12, VAT 0.25 + 0.01.
    assert totals == {"jp": 638_450_000, "bh": 2_850_000, "eu": 4_070_000}
    assert len(result.notes) == 2
    assert "minor_unit_decimals = 2 rounds BHD to 2 decimals, not its own 3" in result.notes[0]
    assert "rounds JPY to 2 decimals, not its own 0" in result.notes[1]
    assert "note: [invoicing] minor_unit_decimals = 2 rounds JPY" in run_text(result)


async def test_credit_notes_payments_and_dunning_in_yen_are_whole_yen(
    books: Books, ledger: Ledger, clock: Clock, pg_url: str
) -> None:
    await _month_of_calls(ledger, clock, pg_url)
    issued = {inv.account_id: inv for inv in (await invoice_run(books, "2026-11")).issued}
    jp, bh = issued["jp"].number, issued["bh"].number
    with pytest.raises(Refused) as refused:
        await credit_note(books, jp, 500_000, "half a yen")
    assert str(refused.value) == (
        f"the amount must be positive, in whole units of 1 JPY ({jp} is in JPY): 0.5 is not"
    )
    note = await credit_note(books, jp, 100 * UNIT, "dropped calls")
    # 100 / 1.1 = 90.909 -> 91 net, 9 VAT: whole yen both.
    assert (note.subtotal_micros, note.tax_micros, note.total_micros) == (
        -91 * UNIT, -9 * UNIT, -100 * UNIT,
    )  # fmt: skip
    assert note.to_json()["total"] == "-100"
    with pytest.raises(Refused, match=r"whole units of 0\.001 BHD .*: 0\.0005 is not"):
        await credit_note(books, bh, 500, "half a fils")
    bh_note = await credit_note(books, bh, 1_100_000, "dropped calls")
    assert (bh_note.subtotal_micros, bh_note.tax_micros) == (-1_000_000, -100_000)
    with pytest.raises(Refused, match=r"whole units of 1 JPY"):
        await add_payment(books, "jp", 538_500_000, invoice_number=jp, reference="P0", who="t")
    assert await query(pg_url, "SELECT count(*) FROM payments") == [(0,)]
    # Unpaid past its due date and grace: dunning says what is owed in yen.
    later = await make_books(pg_url, ledger, now=NOW + timedelta(days=40), default_vat_rate="10")
    try:
        assert (await dunning_pass(later, account_id="jp")) == (1, 0)
    finally:
        await later.db.close()
    detail = await query(pg_url, "SELECT detail FROM dunning_events WHERE account_id = 'jp'")
    assert detail[0][0].startswith(f"invoice {jp} unpaid (539 JPY due ")
    payment, inv = await add_payment(
        books, "jp", 539 * UNIT, invoice_number=jp, reference="P1", who="t"
    )
    assert payment.created and inv.status == "paid" and inv.to_json()["outstanding"] == "0"
    assert (await ledger.get_account("jp")).balance_micros == 0
