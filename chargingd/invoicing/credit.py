"""Credit notes: the only way to correct an issued invoice (which never changes).

``amount`` is what the customer gets back, tax included, in whole minor units; it is
split at the invoice's tax rate: net = amount / (1 + rate) rounded half up to the
minor unit, tax = amount - net, but never more net or tax than the invoice has left
of either after its earlier credit notes: tax is rounded per line, so splitting the
total again would not give back the tax the invoice charged; this way the credit of
the rest of the total reverses exactly the invoice's net and tax. The credit notes of
an invoice never exceed its total. A credit note has its own number series and refers
to the invoice; for a postpaid account it credits the ledger by the same amount.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from chargingd.billing.db import Conn
from chargingd.invoicing import dunning, issue, postings
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import Draft, Invoice, Kind, Line, Refused, money
from chargingd.invoicing.periods import Period, round_half_up_div
from chargingd.invoicing.store import fetch
from chargingd.invoicing.tax import PPM, minor_unit_micros, whole_units


def split_gross(gross_micros: int, rate_ppm: int, decimals: int) -> tuple[int, int]:
    """(net, tax) of a tax-included amount, the net rounded to the minor unit once
    (rounding to the micro-unit first turned 0.66049... into 0.660500, then 0.661)."""
    unit = minor_unit_micros(decimals)
    net = round_half_up_div(gross_micros * PPM, (PPM + rate_ppm) * unit) * unit
    return net, gross_micros - net


def _period_of(inv: Invoice) -> Period:
    return Period(inv.period, inv.period_start.day, inv.period_start, inv.period_end)


def credit_draft(
    inv: Invoice,
    amount_micros: int,
    reason: str,
    decimals: int,
    credited: tuple[int, int] = (0, 0),
) -> Draft:
    """``credited``: net and tax of the invoice's earlier credit notes (positive)."""
    net, tax = split_gross(amount_micros, inv.tax.rate_ppm, decimals)
    # Never give back more net or tax than the invoice has left of either: the credit
    # of the rest of the total then reverses exactly what the invoice billed.
    net_left, tax_left = inv.subtotal_micros - credited[0], inv.tax_micros - credited[1]
    if net > net_left:
        net, tax = net_left, amount_micros - net_left
    if tax > tax_left:
        net, tax = amount_micros - tax_left, tax_left
    line = Line(
        "credit",
        f"Credit on invoice {inv.number}: {reason}",
        Decimal(1),
        "item",
        -net,
        -net,
        -tax,
    )
    return Draft(
        kind=Kind.CREDIT_NOTE,
        account_id=inv.account_id,
        currency=inv.currency,
        period=_period_of(inv),
        tax=inv.tax,
        customer=inv.customer,
        lines=(line,),
        refers_to=inv.id,
        reason=reason,
        posting_micros=amount_micros,
    )


def _check(inv: Invoice, amount_micros: int, reason: str, decimals: int) -> None:
    if inv.kind is not Kind.INVOICE:
        raise Refused(f"{inv.number} is a {inv.kind}; only invoices take credit notes")
    if not reason.strip() or len(reason) > 300 or not reason.isprintable():
        raise Refused("a credit note needs a reason (printable, up to 300 characters)")
    room = inv.total_micros - inv.credited_micros
    if not whole_units(amount_micros, decimals, room):
        unit = money(minor_unit_micros(decimals), decimals)
        raise Refused(
            f"the amount must be positive, in whole units of {unit} {inv.currency}"
            f" ({inv.number} is in {inv.currency}): {money(amount_micros, 0)} is not"
        )
    if amount_micros > room:
        raise Refused(
            f"{inv.number}: at most {money(room, decimals)} {inv.currency} can still be credited"
            f" (total {money(inv.total_micros, decimals)}, credited"
            f" {money(inv.credited_micros, decimals)})"
        )


async def _credited(conn: Conn, invoice_id: int) -> tuple[int, int]:
    """Net and tax given back by the credit notes of an invoice so far (positive)."""
    cur = await conn.execute(
        "SELECT coalesce(-sum(subtotal_micros), 0), coalesce(-sum(tax_micros), 0)"
        " FROM invoices WHERE refers_to = %s AND kind = 'credit_note'",
        (invoice_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def credit_note(books: Books, number: str, amount_micros: int, reason: str) -> Invoice:
    """Issue a credit note against invoice ``number``; the issued credit note. Its
    amounts are in the minor unit of the invoice's currency (or the configured one)."""
    issued_at = books.now()
    series = issue.series_name(books.cfg.credit_note_series, issued_at)
    numbering = issue.Numbering(series, books.cfg.number_digits)

    async def work(conn: Conn) -> Invoice:
        last = await issue.lock_series(conn, numbering.series)
        # Read under the locks: two credit notes at once never exceed the total (the
        # series), nor does one and a negative invoice's credit that an invoice run is
        # settling this invoice with (the run holds the invoice's row, store.owed_invoices;
        # without this lock the note read what was left before the run committed and
        # waited only to write: the invoice credited past its total).
        await conn.execute("SELECT 1 FROM invoices WHERE number = %s FOR UPDATE", (number,))
        inv = await fetch(conn, number, issued_at)
        decimals = books.cfg.decimals(inv.currency)
        _check(inv, amount_micros, reason, decimals)
        draft = credit_draft(inv, amount_micros, reason, decimals, await _credited(conn, inv.id))
        (issued,) = await issue.write(
            conn, [draft], numbering=numbering, last_number=last, issued_at=issued_at,
            issuer=books.issuer(), run_id=f"credit:{number}", who=books.who,
        )  # fmt: skip
        return issued

    result: Invoice = await books.db.run(work)
    if books.ledger is not None:
        accounts = [result.account_id]
        await postings.post_pending(books.db, books.ledger, who=books.who, account_ids=accounts)
        await dunning.settle(books, result.account_id)
    return replace(result, refers_to=number)
