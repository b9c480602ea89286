"""Credit notes, payments and prepaid statements on a real PostgreSQL and a real ledger."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import Clock
from invoicing_harness import at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.invoicing import Books, Conflict, Invoice, Kind, Refused, invoice_run
from chargingd.invoicing.credit import credit_note
from chargingd.invoicing.payments import add_payment
from chargingd.invoicing.pdf import render_pdf
from chargingd.invoicing.render import invoice_text, negated
from chargingd.invoicing.store import get_invoice, list_invoices
from chargingd.ledger import Ledger, Mode

EUR = 1_000_000


@pytest.fixture
def clock() -> Clock:
    return Clock(int(datetime(2026, 10, 20, tzinfo=UTC).timestamp() * 1000))


@pytest.fixture
async def books(pg_url: str, ledger: Ledger) -> AsyncIterator[Books]:
    b = await make_books(pg_url, ledger, default_vat_rate="19")
    yield b
    await b.db.close()


async def _invoice(
    books: Books, ledger: Ledger, clock: Clock, pg_url: str, account: str, usage: int
) -> Invoice:
    """A postpaid account whose one November call debited ``usage``, invoiced."""
    await postpaid(ledger, account)
    await _call(ledger, clock, f"{account}-1", at(7), usage, account=account)
    await load_cdrs(pg_url, [cdr(1, account, at(7), charged_micros=usage)])
    (inv,) = (await invoice_run(books, "2026-11", account_id=account)).issued
    assert isinstance(inv, Invoice)
    return inv


async def test_credit_notes_refer_to_the_invoice_and_never_exceed_it(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    inv = await _invoice(books, ledger, clock, pg_url, "cn", 100 * EUR)  # 119.00 with VAT
    note = await credit_note(books, inv.number, 11_900_000, "dropped calls on 12 Nov")
    assert note.number == "CN-2027-000001" and note.kind is Kind.CREDIT_NOTE
    assert (note.subtotal_micros, note.tax_micros, note.total_micros) == (
        -10 * EUR,
        -1_900_000,
        -11_900_000,
    )
    assert note.refers_to == inv.number
    with pytest.raises(Refused, match=r"at most 107\.10 EUR can still be credited"):
        await credit_note(books, inv.number, 108 * EUR, "too much")
    with pytest.raises(Refused, match=r"whole units of 0\.01"):
        await credit_note(books, inv.number, 1_234_567, "sub-cent")
    with pytest.raises(Refused, match="only invoices take credit notes"):
        await credit_note(books, note.number, EUR, "a note of a note")
    shown = await get_invoice(books.db, inv.number, books.now())
    assert shown.credited_micros == 11_900_000 and shown.credit_notes == (note.number,)
    assert shown.outstanding_micros == 107_100_000
    # The invoice row itself is untouched; the ledger got the credit back.
    assert await query(pg_url, "SELECT total_micros FROM invoices WHERE kind = 'invoice'") == [
        (119 * EUR,)
    ]
    assert (await ledger.get_account("cn")).balance_micros == -107_100_000


async def test_credit_notes_of_the_whole_total_reverse_the_net_and_the_tax_exactly(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    """Tax is rounded per line: ten lines of net 0.03 carry 0.01 VAT each (0.0057
    rounded), total 0.40. Crediting it all must give back 0.30 net and 0.10 VAT, not
    0.40 split again at 19 % (0.34 + 0.06), or the VAT return never balances."""
    await postpaid(ledger, "cnx")
    rows = []
    for n in range(10):
        await _call(ledger, clock, f"cnx-{n}", at(3 + n), 30_000, account="cnx")
        rows.append(cdr(n, "cnx", at(3 + n), charged_micros=30_000, destination=f"D{n}"))
    await load_cdrs(pg_url, rows)
    (inv,) = (await invoice_run(books, "2026-11", account_id="cnx")).issued
    assert isinstance(inv, Invoice)
    assert (inv.subtotal_micros, inv.tax_micros, inv.total_micros) == (300_000, 100_000, 400_000)
    # In two parts: the second credits the rest, and takes the rest of net and tax.
    first = await credit_note(books, inv.number, 190_000, "part")
    assert (first.subtotal_micros, first.tax_micros) == (-160_000, -30_000)
    rest = await credit_note(books, inv.number, 210_000, "the rest")
    assert (rest.subtotal_micros, rest.tax_micros) == (-140_000, -70_000)
    total_net = first.subtotal_micros + rest.subtotal_micros
    total_tax = first.tax_micros + rest.tax_micros
    assert (total_net, total_tax) == (-inv.subtotal_micros, -inv.tax_micros)
    # 0.39 split at 19 % would be 0.33 net: more than the 0.30 there is; then 0.01.
    await postpaid(ledger, "cnz")
    rows = []
    for n in range(10):
        await _call(ledger, clock, f"cnz-{n}", at(3 + n), 30_000, account="cnz")
        rows.append(cdr(n, "cnz", at(3 + n), charged_micros=30_000, destination=f"D{n}"))
    await load_cdrs(pg_url, rows)
    (inv3,) = (await invoice_run(books, "2026-11", account_id="cnz")).issued
    most = await credit_note(books, inv3.number, 390_000, "most")
    assert (most.subtotal_micros, most.tax_micros) == (-300_000, -90_000)
    last = await credit_note(books, inv3.number, 10_000, "last cent")
    assert (last.subtotal_micros, last.tax_micros) == (0, -10_000)
    # All at once on a second invoice of the same shape.
    await postpaid(ledger, "cny")
    rows = []
    for n in range(10):
        await _call(ledger, clock, f"cny-{n}", at(3 + n), 30_000, account="cny")
        rows.append(cdr(n, "cny", at(3 + n), charged_micros=30_000, destination=f"D{n}"))
    await load_cdrs(pg_url, rows)
    (inv2,) = (await invoice_run(books, "2026-11", account_id="cny")).issued
    whole = await credit_note(books, inv2.number, 400_000, "all of it")
    assert (whole.subtotal_micros, whole.tax_micros, whole.total_micros) == (
        -300_000,
        -100_000,
        -400_000,
    )
    assert (await get_invoice(books.db, inv2.number, books.now())).outstanding_micros == 0


async def test_two_credit_notes_at_once_cannot_exceed_the_total(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    inv = await _invoice(books, ledger, clock, pg_url, "cn2", 10 * EUR)  # 11.90
    other = await make_books(pg_url, ledger, default_vat_rate="19")
    try:
        results = await asyncio.gather(
            credit_note(books, inv.number, 8 * EUR, "first"),
            credit_note(other, inv.number, 8 * EUR, "second"),
            return_exceptions=True,
        )
    finally:
        await other.db.close()
    assert sorted(type(r).__name__ for r in results) == ["Invoice", "Refused"]


async def test_payments_are_idempotent_on_their_reference(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    inv = await _invoice(books, ledger, clock, pg_url, "payer", 50 * EUR)  # 59.50
    assert (await ledger.get_account("payer")).balance_micros == -59_500_000
    first, after = await add_payment(
        books, "payer", 30 * EUR, invoice_number=inv.number, reference="BANK-1", who="t"
    )
    assert first.created and after.status == "open" and after.outstanding_micros == 29_500_000
    again, _ = await add_payment(
        books, "payer", 30 * EUR, invoice_number=inv.number, reference="BANK-1", who="t"
    )
    assert not again.created
    assert (await ledger.get_account("payer")).balance_micros == -29_500_000  # applied once
    with pytest.raises(Conflict, match="already recorded"):
        await add_payment(
            books, "payer", 31 * EUR, invoice_number=inv.number, reference="BANK-1", who="t"
        )
    await postpaid(ledger, "stranger")
    with pytest.raises(Conflict, match="already recorded"):
        await add_payment(
            books, "stranger", 30 * EUR, invoice_number=inv.number, reference="BANK-1", who="t"
        )
    with pytest.raises(Refused, match="not an invoice of account stranger"):
        await add_payment(
            books, "stranger", 30 * EUR, invoice_number=inv.number, reference="BANK-2", who="t"
        )
    # The same payment sent twice at once is recorded once.
    both = await asyncio.gather(
        *(
            add_payment(
                books, "payer", 29_500_000, invoice_number=inv.number, reference="BANK-3", who="t"
            )
            for _ in range(2)
        )
    )
    assert sorted(p.created for p, _ in both) == [False, True]
    paid = await get_invoice(books.db, inv.number, books.now())
    assert paid.status == "paid" and paid.paid_micros == 59_500_000
    assert (await ledger.get_account("payer")).balance_micros == 0
    rows = await query(pg_url, "SELECT count(*) FROM ledger_postings WHERE posted_at IS NULL")
    assert rows == [(0,)]


async def test_a_payment_of_a_fraction_of_a_cent_is_refused_and_changes_nothing(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    """59.495 of 59.50 was recorded: the invoice stayed open with 0.005 outstanding, an
    amount no one can pay, and went overdue (dunning suspends for it)."""
    inv = await _invoice(books, ledger, clock, pg_url, "cents", 50 * EUR)  # 59.50
    with pytest.raises(Refused, match=r"positive, in whole units of 0\.01"):
        await add_payment(
            books, "cents", 59_495_000, invoice_number=inv.number, reference="SUB", who="t"
        )
    assert await query(pg_url, "SELECT count(*) FROM payments") == [(0,)]
    assert (await ledger.get_account("cents")).balance_micros == -59_500_000
    after = await get_invoice(books.db, inv.number, books.now())
    assert (after.status, after.outstanding_micros) == ("open", 59_500_000)
    paid, _ = await add_payment(
        books, "cents", 59_500_000, invoice_number=inv.number, reference="SUB", who="t"
    )
    assert paid.created


async def test_invoice_states_open_overdue_paid(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    inv = await _invoice(books, ledger, clock, pg_url, "state", 10 * EUR)
    assert inv.due_at is not None
    assert (inv.due_at - inv.issued_at).days == 14
    assert (await get_invoice(books.db, inv.number, inv.due_at)).status == "open"
    late = inv.due_at + timedelta(seconds=1)
    assert (await get_invoice(books.db, inv.number, late)).status == "overdue"
    await add_payment(books, "state", 11_900_000, invoice_number=inv.number, reference="P", who="t")
    later = await list_invoices(books.db, late, account_id="state")
    assert [(i.number, i.status) for i in later] == [(inv.number, "paid")]


async def test_prepaid_statement_from_the_ledger_and_the_cdrs(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    await ledger.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=20 * EUR, who="t"
    )
    # October: one call of 1.00. November: a top-up, two calls, an adjustment; a call
    # started on 30 November is still debiting on 1 December.
    await _call(ledger, clock, "oct-1", datetime(2026, 10, 25, tzinfo=UTC), 1 * EUR)
    clock.now_ms = _ms(datetime(2026, 11, 3, tzinfo=UTC))
    await ledger.topup("pre", 10 * EUR, txn_id="t-1", who="t")
    await _call(ledger, clock, "nov-1", datetime(2026, 11, 5, tzinfo=UTC), 2_500_000)
    await _call(ledger, clock, "nov-2", datetime(2026, 11, 9, tzinfo=UTC), 1_500_000)
    await ledger.adjust("pre", -EUR // 2, txn_id="a-1", who="t", why="fee")
    await _call(
        ledger,
        clock,
        "nov-3",
        datetime(2026, 11, 30, 23, 59, tzinfo=UTC),
        600_000,
        end=datetime(2026, 12, 1, 0, 2, tzinfo=UTC),
    )
    await load_cdrs(
        pg_url,
        [
            cdr(1, "pre", datetime(2026, 10, 25, tzinfo=UTC), charged_micros=EUR),
            cdr(2, "pre", datetime(2026, 11, 5, tzinfo=UTC), charged_micros=2_500_000),
            cdr(
                3,
                "pre",
                datetime(2026, 11, 9, tzinfo=UTC),
                charged_micros=1_500_000,
                destination="UK_MOB",
            ),
            cdr(4, "pre", datetime(2026, 11, 30, 23, 59, tzinfo=UTC), charged_micros=600_000),
        ],
    )
    (stm,) = (await invoice_run(books, "2026-11")).issued
    assert isinstance(stm, Invoice) and stm.kind is Kind.STATEMENT
    assert stm.number == "STM-2027-000001" and stm.due_at is None and stm.tax_micros == 0
    assert stm.statement == {
        "opening_balance": "19.00",
        "topups": "10.00",
        "adjustments": "-0.50",
        "call_debits": "4.30",  # 2.50 + 1.50 + the part of nov-3 debited in November
        "other": "0.00",
        "closing_balance": "24.20",
        "movements": 5,
        "cdr_usage": "4.60",
        "usage_total": "4.60",  # the lines shown: 3.10 + 1.50
        "rounding": "0.00",
        "boundary_difference": "-0.30",
        "consistent": True,
    }
    assert [(ln.description, ln.exact_micros) for ln in stm.lines] == [
        ("Calls to DE_FIX (2 calls)", 3_100_000),
        ("Calls to UK_MOB (1 call)", 1_500_000),
    ]
    assert "  calls -4.30  other 0.00  closing 24.20 EUR\n" in invoice_text(stm)


async def test_a_statement_of_a_month_without_calls_shows_no_minus_zero(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock
) -> None:
    """A prepaid account topped up in November and never called: its statement's calls
    are 0.00 (the text printed "calls -0.00", the PDF "0.00")."""
    await ledger.create_account(
        "idle", mode=Mode.PREPAID, currency="EUR", balance_micros=5 * EUR, who="t"
    )
    clock.now_ms = _ms(datetime(2026, 11, 3, tzinfo=UTC))
    await ledger.topup("idle", 10 * EUR, txn_id="t-idle", who="t")
    (stm,) = (await invoice_run(books, "2026-11")).issued
    assert isinstance(stm, Invoice) and stm.kind is Kind.STATEMENT
    assert stm.statement is not None and stm.statement["call_debits"] == "0.00"
    text = invoice_text(stm)
    assert "  calls 0.00  other" in text and "-0.00" not in text, text
    assert [negated(x) for x in ("4.30", "0.00", "-1.00")] == ["-4.30", "0.00", "1.00"]


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def _call(
    ledger: Ledger,
    clock: Clock,
    sid: str,
    start: datetime,
    cost: int,
    end: datetime | None = None,
    account: str = "pre",
) -> None:
    """A call through the ledger: hold, commit at each interim, release at the end; a
    call that crosses midnight of 1 December commits half before, half after."""
    clock.now_ms = _ms(start)
    grant = await ledger.reserve(account, sid, max(cost, EUR), lease_ms=3_600_000)
    assert grant.ok
    if end is not None:
        clock.now_ms = _ms(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
        await ledger.commit(account, sid, cost // 2)
        clock.now_ms = _ms(end)
    else:
        clock.advance(60)
    await ledger.release(account, sid, cost)


async def test_statement_usage_lines_add_up_to_its_total_and_the_rounding_is_shown(
    books: Books, ledger: Ledger, pg_url: str, clock: Clock, tmp_path: Path
) -> None:
    """Twelve destination groups of 0.014 EUR each: the ledger debited 0.168, each line
    rounds to 0.01 (the invoice's rule: once per line, the total is the sum of the lines
    shown). The statement's total is the 0.12 its lines show, like the invoice of the
    same calls, and the 0.168 the balance lost is printed as that total plus the rounding
    of the lines, so every figure the statement prints adds up as printed."""
    await ledger.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=10 * EUR, who="t"
    )
    await postpaid(ledger, "post")
    groups = [f"G{n:02d}" for n in range(12)]
    rows = []
    for n, group in enumerate(groups):
        start = datetime(2026, 11, 5, 10, n, tzinfo=UTC)
        await _call(ledger, clock, f"r-{n}", start, 14_000)
        rows.append(cdr(n, "pre", start, charged_micros=14_000, destination=group))
        rows.append(cdr(100 + n, "post", start, charged_micros=14_000, destination=group))
    await load_cdrs(pg_url, rows)
    issued = (await invoice_run(books, "2026-11")).issued
    (inv,) = [d for d in issued if isinstance(d, Invoice) and d.kind is Kind.INVOICE]
    (stm,) = [d for d in issued if isinstance(d, Invoice) and d.kind is Kind.STATEMENT]
    assert len(stm.lines) == 12 and {ln.amount_micros for ln in stm.lines} == {10_000}
    assert stm.total_micros == sum(ln.amount_micros for ln in stm.lines) == inv.subtotal_micros
    assert stm.statement is not None
    s = stm.statement
    assert (s["call_debits"], s["cdr_usage"], s["usage_total"], s["rounding"]) == (
        "0.168",
        "0.168",
        "0.12",
        "0.048",
    )
    # calls debited = usage shown + rounding of its lines + calls across the edges
    assert s["boundary_difference"] == "0.00"
    shown = await get_invoice(books.db, stm.number, books.now())
    text = invoice_text(shown)
    assert "usage shown 0.12 + rounding 0.048 + across the period's edges 0.00" in text
    assert "= calls debited 0.168 EUR" in text
    if shutil.which("pdftotext"):
        pdf = tmp_path / "stm.pdf"
        pdf.write_bytes(render_pdf(shown))
        out = subprocess.run(
            ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"Total usage shown\s+0\.12", out), out
        assert re.search(r"Rounding of the lines to 0\.01 EUR\s+0\.048", out), out
