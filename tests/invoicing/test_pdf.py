"""Invoice PDFs read back with poppler-utils (pdftotext, pdftoppm): the figures printed
are the invoice's own."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from invoicing_harness import at, cdr, load_cdrs, make_books, postpaid, query

from chargingd.invoicing import Books, Invoice, invoice_run
from chargingd.invoicing.cdrs import call_detail
from chargingd.invoicing.charges import add_charge, add_subscription
from chargingd.invoicing.credit import credit_note
from chargingd.invoicing.model import money
from chargingd.invoicing.payments import add_payment
from chargingd.invoicing.pdf import FONT, amount, render_pdf
from chargingd.invoicing.profiles import set_profile
from chargingd.invoicing.store import get_invoice
from chargingd.ledger import Ledger

pytestmark = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils (pdftotext, pdftoppm) is not installed",
)

ISSUER = {
    "name": "Example Voice Carrier Ltd",
    "address": ["1 Exchange Square", "London EC2A 2BR"],
    "vat_id": "GB123456789",
    "bank": "IBAN GB29 NWBK 6016 1331 9268 19",
    "footer": "Example Voice Carrier Ltd, registered in England No. 01234567",
}


@pytest.fixture
async def books(pg_url: str, redis: aioredis.Redis) -> AsyncIterator[Books]:
    ledger = Ledger(redis)
    await ledger.load_scripts()
    b = await make_books(pg_url, ledger, default_vat_rate="19", issuer=ISSUER)
    yield b
    await b.db.close()


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    done = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return done.stdout


async def _issue(books: Books, pg_url: str) -> Invoice:
    assert books.ledger is not None
    await postpaid(books.ledger, "acme")
    await set_profile(
        books.db,
        "acme",
        {
            "customer_name": "ACME Telecom GmbH",
            "customer_address": ["Hauptstr. 1", "10115 Berlin"],
            "country": "DE",
            "call_detail": True,
        },
        who="t",
    )
    calls = [
        cdr(
            i,
            "acme",
            at(1 + i % 28, 8 + i % 10),
            billed_s=30 + i,
            charged_micros=12_345 * (i + 1),
            destination=("DE_FIX", "DE_MOB", "UK")[i % 3],
        )
        for i in range(60)
    ]
    await load_cdrs(pg_url, calls)
    await add_subscription(
        books.db,
        "acme",
        description="DID rental +49 30 1234 5600",
        amount_micros=9_900_000,
        starts_on=date(2026, 11, 16),
        who="t",
    )
    await add_charge(
        books.db,
        "acme",
        kind="credit",
        description="Outage goodwill",
        amount_micros=5_000_000,
        charge_date=date(2026, 11, 12),
        reference="g",
        who="t",
    )
    (inv,) = (await invoice_run(books, "2026-11")).issued
    assert isinstance(inv, Invoice)
    return await get_invoice(books.db, inv.number, books.now())


async def test_pdf_prints_the_invoice_figures(books: Books, pg_url: str, tmp_path: Path) -> None:
    inv = await _issue(books, pg_url)
    rows = await call_detail(
        books.db, inv.account_id, inv.period_start, inv.period_end, currency="EUR"
    )
    text = pdf_text(render_pdf(inv, calls=rows), tmp_path)
    for expected in (
        "INVOICE",
        inv.number,
        "Example Voice Carrier Ltd",
        "VAT ID GB123456789",
        "ACME Telecom GmbH",
        "Hauptstr. 1",
        "10115 Berlin",
        "01 Nov 2026 – 30 Nov 2026",
        "IBAN GB29 NWBK 6016 1331 9268 19",
        "Page 1 of 3",
        "Page 3 of 3",
        f"Call detail – {inv.number}",
    ):
        assert expected in text, expected
    for line in inv.lines:
        row = next(r for r in text.splitlines() if line.description[:30] in r)
        net, tax = amount(line.amount_micros), amount(line.tax_micros)
        assert re.search(rf"{re.escape(net)}\s+{re.escape(tax)}\s+", row), (row, net, tax)
    totals = {
        "Subtotal": inv.subtotal_micros,
        "VAT 19 %": inv.tax_micros,
        "Total": inv.total_micros,
        "Amount due": inv.outstanding_micros,
    }
    for label, micros in totals.items():
        assert re.search(rf"{label}\s+{re.escape(amount(micros))} EUR", text), label
    # Every call of the appendix, with the exact amount it was charged.
    assert len(rows) == 60
    for row in rows:
        charged = money(row.charged_micros, 6)
        assert re.search(rf"{row.start_time:%Y-%m-%d %H:%M:%S}.*\s{re.escape(charged)}\n", text)
    total = sum(r.charged_micros for r in rows)
    assert total == inv.usage_micros
    assert re.search(rf"60 calls\s+\d+\s+{re.escape(money(total, 6))}\n", text)


async def test_reverse_charge_and_credit_note_pdfs(
    books: Books, pg_url: str, tmp_path: Path
) -> None:
    inv = await _issue(books, pg_url)
    await set_profile(
        books.db, "acme", {"tax_mode": "reverse_charge", "vat_id": "DE811907980"}, who="t"
    )
    note = await credit_note(books, inv.number, 1_190_000, "double-billed DID")
    note_text = pdf_text(render_pdf(note), tmp_path)
    for expected in (
        "CREDIT NOTE",
        note.number,
        "-1.19 EUR",
        f"This credit note corrects invoice {inv.number}: double-billed DID",
    ):
        assert expected in note_text, expected
    assert re.search(rf"Corrects invoice\s+{inv.number}", note_text)
    assert books.ledger is not None
    await postpaid(books.ledger, "b2b")
    await set_profile(
        books.db, "b2b", {"tax_mode": "reverse_charge", "vat_id": "FR40303265045"}, who="t"
    )
    await load_cdrs(pg_url, [cdr(900, "b2b", at(3), charged_micros=10_000_000)])
    (b2b,) = (await invoice_run(books, "2026-11", account_id="b2b")).issued
    assert isinstance(b2b, Invoice)
    text = pdf_text(render_pdf(b2b), tmp_path)
    flat = " ".join(text.split())  # the note wraps
    assert "Reverse charge: VAT to be accounted for by the recipient" in flat
    assert "Customer VAT ID: FR40303265045" in flat
    assert re.search(r"Total\s+10.00 EUR", text) and "Page 1 of 1" in text
    # The VAT line says none is charged and why (it read "VAT (0 %) 0 %").
    assert re.search(r"VAT 0 % \(reverse charge\)\s+0.00 EUR", text), text
    assert "VAT (0 %)" not in text


async def test_first_page_renders_to_png(books: Books, pg_url: str, tmp_path: Path) -> None:
    inv = await _issue(books, pg_url)
    pdf = tmp_path / "inv.pdf"
    pdf.write_bytes(render_pdf(inv))
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "p")],
        check=True,
    )
    (png,) = tmp_path.glob("p*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.skipif(
    FONT != "DejaVuSans", reason="DejaVu Sans is not installed (Debian: fonts-dejavu-core)"
)
async def test_customer_names_outside_latin_1_print_as_written(
    books: Books, tmp_path: Path
) -> None:
    """Polish, Czech, Romanian and Greek customers: their names, addresses and the lines'
    descriptions print as written (DejaVu Sans embedded), not as black boxes (the PDF
    standard Helvetica has Latin-1 only)."""
    assert books.ledger is not None
    await postpaid(books.ledger, "lodz")
    name = "Łódź Telekom Sp. z o.o."
    address = ["ul. Piotrkowska 104", "90-926 Łódź", "Příbram · Constanța · Αθήνα"]
    await set_profile(
        books.db,
        "lodz",
        {"customer_name": name, "customer_address": address, "country": "PL"},
        who="t",
    )
    description = "Opłata instalacyjna – numer 22 123 45 67"
    await add_charge(
        books.db,
        "lodz",
        kind="charge",
        description=description,
        amount_micros=49_000_000,
        charge_date=date(2026, 11, 3),
        reference="setup-lodz",
        who="t",
    )
    (inv,) = (await invoice_run(books, "2026-11")).issued
    assert isinstance(inv, Invoice)
    text = pdf_text(render_pdf(await get_invoice(books.db, inv.number, books.now())), tmp_path)
    for written in (name, *address, description):
        assert written in text, (written, text)
    assert "■" not in text


async def _issue_for(books: Books, pg_url: str, account: str) -> Invoice:
    """A one-line invoice (a setup fee) of another account in 2026-11."""
    assert books.ledger is not None
    await postpaid(books.ledger, account)
    await add_charge(
        books.db, account, kind="charge", description="Setup fee", amount_micros=20_000_000,
        charge_date=date(2026, 11, 5), reference=f"setup-{account}", who="t",
    )  # fmt: skip
    (inv,) = (await invoice_run(books, "2026-11", account_id=account)).issued
    assert isinstance(inv, Invoice)
    return await get_invoice(books.db, inv.number, books.now())


async def test_a_paid_invoice_printed_again_asks_for_nothing(
    books: Books, pg_url: str, tmp_path: Path
) -> None:
    """A copy printed after the payment says it is paid, not "Please pay 0.00 EUR"."""
    inv = await _issue(books, pg_url)
    assert "Please pay" in pdf_text(render_pdf(inv), tmp_path)
    await add_payment(
        books, "acme", inv.total_micros, invoice_number=inv.number, reference="bank-1", who="t"
    )
    paid = await get_invoice(books.db, inv.number, books.now())
    assert paid.status == "paid"
    text = pdf_text(render_pdf(paid), tmp_path)
    assert "Please pay" not in text
    assert "Paid in full: nothing is due. Thank you." in text
    assert re.search(r"Amount due\s+0.00 EUR", text)
    # Credited in full instead: it says so, not "paid".
    other = await _issue_for(books, pg_url, "beta")
    note = await credit_note(books, other.number, other.total_micros, "service never delivered")
    credited = pdf_text(
        render_pdf(await get_invoice(books.db, other.number, books.now())), tmp_path
    )
    assert f"Credited in full ({note.number}): nothing is due." in credited
    assert "Please pay" not in credited and "Paid in full" not in credited


async def test_a_negative_invoice_says_nothing_to_pay_and_which_invoice_it_credits(
    books: Books, pg_url: str, tmp_path: Path
) -> None:
    """A rerate refunded more of November's calls than December charges: December's
    invoice is a credit applied to November's, and its PDF asks for nothing (it read
    'Please pay 0.00 EUR')."""
    assert books.ledger is not None
    await postpaid(books.ledger, "negpdf")
    await load_cdrs(pg_url, [cdr(1, "negpdf", at(10), charged_micros=1_000_000)])
    nov = (await invoice_run(books, "2026-11")).issued[0]
    await query(
        pg_url,
        "INSERT INTO rerate_runs (run_id, from_time, to_time, plan, who, reason, cdrs,"
        " changed_cdrs) VALUES ('rr-p', now(), now(), '', 't', 't', 1, 1);"
        "INSERT INTO rerate_adjustments (run_id, account_id, currency, cdrs, old_cost_micros,"
        " new_cost_micros, amount_micros, txn_id, applied_at) VALUES ('rr-p', 'negpdf', 'EUR',"
        " 1, 1000000, 400000, 600000, 'rr-p:x', '2026-12-05T10:00:00Z')",
    )
    dec = (await invoice_run(books, "2026-12")).issued[0]
    stored = await get_invoice(books.db, dec.number, books.now())
    text = pdf_text(render_pdf(stored), tmp_path)
    assert "Please pay" not in text
    assert f"Nothing to pay: the credit of 0.71 EUR settles invoice {nov.number}." in text
    assert re.search(rf"Credit applied to\s+{nov.number}", text), text


async def test_a_yen_invoice_prints_whole_yen(books: Books, pg_url: str, tmp_path: Path) -> None:
    """JPY has no minor unit: three calls of 12,345.6789 yen are one line of 37,037 yen,
    VAT 7,037 (19 % of it, 7,037.03), total 44,074: no sen, printed as "44,074.00"."""
    assert books.ledger is not None
    await postpaid(books.ledger, "yen", currency="JPY")
    await load_cdrs(
        pg_url,
        [cdr(i, "yen", at(3 + i), charged_micros=12_345_678_900, currency="JPY") for i in range(3)],
    )
    (inv,) = (await invoice_run(books, "2026-11", account_id="yen")).issued
    assert (inv.subtotal_micros, inv.tax_micros, inv.total_micros) == (
        37_037_000_000, 7_037_000_000, 44_074_000_000,
    )  # fmt: skip
    text = pdf_text(render_pdf(await get_invoice(books.db, inv.number, books.now())), tmp_path)
    assert re.search(r"Calls to DE_FIX \(3 calls\)\s+3\.00\s+min\s+37,037\s+7,037\s+44,074\n", text)
    for label, figure in (("Subtotal", "37,037"), ("VAT 19 %", "7,037"), ("Total", "44,074")):
        assert re.search(rf"{label}\s+{figure} JPY\n", text), label
    assert "Please pay 44,074 JPY by" in text
    assert ".00 JPY" not in text


async def test_a_negative_invoice_says_which_invoices_its_credit_settled_and_what_is_left(
    books: Books, pg_url: str, tmp_path: Path
) -> None:
    """October 1.00 and November 2.00 owed; December credits 3.50 (goodwill): it settles
    both and 0.50 stays on the account. The PDF said 'settles invoice <October>' for all
    3.50, and November stayed owed in full."""
    assert books.ledger is not None
    await postpaid(books.ledger, "neg")
    await set_profile(books.db, "neg", {"tax_mode": "exempt"}, who="t")
    issued = []
    for month, kind, amount_ in ((10, "charge", 1), (11, "charge", 2), (12, "credit", 3.5)):
        await add_charge(
            books.db, "neg", kind=kind, description="Rental" if kind == "charge" else "Goodwill",
            amount_micros=int(amount_ * 1_000_000), charge_date=date(2026, month, 5),
            reference=f"n{month}", who="t",
        )  # fmt: skip
        issued.append((await invoice_run(books, f"2026-{month}", account_id="neg")).issued[0])
    oct_, nov, dec = [await get_invoice(books.db, i.number, books.now()) for i in issued]
    assert dec.total_micros == -3_500_000
    text = pdf_text(render_pdf(dec), tmp_path)
    flat = " ".join(text.split())
    assert (
        f"Nothing to pay: the credit of 3.50 EUR settles 1.00 EUR of invoice {oct_.number} and"
        f" 2.00 EUR of invoice {nov.number}; the remaining 0.50 EUR stays on your account."
    ) in flat, flat
    assert re.search(r"Total\s+-3.50 EUR\n", text) and re.search(r"Amount due\s+0.00 EUR\n", text)
    facts = text.split("Due date")[0]  # the document's facts, above the lines
    assert "Credit applied to" in facts and f"{oct_.number}," in facts and nov.number in facts
    settled = " ".join(pdf_text(render_pdf(nov), tmp_path).split())
    assert f"Credited in full ({dec.number}): nothing is due." in settled
    assert re.search(r"Amount due 0.00 EUR", settled) and "Please pay" not in settled
