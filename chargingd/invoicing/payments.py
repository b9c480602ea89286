"""Payments against invoices, idempotent on the payer's reference.

The same reference with the same account, invoice and amount is a replay (nothing
new is recorded); with anything else it is refused (Conflict), on any account. A
payment credits the postpaid account's ledger (transaction ``payment:REFERENCE``,
applied once) and may end a dunning suspension.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chargingd.billing.db import Conn
from chargingd.core.currencies import minor_unit
from chargingd.invoicing import dunning, postings
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import Conflict, Invoice, Kind, Refused, money
from chargingd.invoicing.store import fetch
from chargingd.invoicing.tax import minor_unit_micros, whole_units

MAX_REFERENCE = 100


@dataclass(frozen=True)
class Payment:
    reference: str
    account_id: str
    invoice: str
    amount_micros: int
    currency: str
    received_at: datetime
    created: bool  # False: a replay of a payment already recorded


def payment_txn(reference: str) -> str:
    return f"payment:{reference}"


def check_reference(reference: str) -> str:
    if (
        not isinstance(reference, str)
        or not 0 < len(reference) <= MAX_REFERENCE
        or not reference.isprintable()
        or reference != reference.strip()
    ):
        raise Refused(f"a payment reference is 1-{MAX_REFERENCE} printable characters")
    return reference


async def _existing(conn: Conn, reference: str) -> tuple[str, str, int, str, datetime] | None:
    cur = await conn.execute(
        "SELECT p.account_id, i.number, p.amount_micros, p.currency, p.received_at"
        " FROM payments p JOIN invoices i ON i.id = p.invoice_id WHERE p.reference = %s",
        (reference,),
    )
    row = await cur.fetchone()
    return None if row is None else (row[0], row[1], int(row[2]), row[3], row[4])


def _replay(
    found: tuple[str, str, int, str, datetime], account_id: str, number: str, amount: int, ref: str
) -> Payment:
    acc, inv, amt, currency, received = found
    if (acc, inv, amt) != (account_id, number, amount):
        shown = money(amt, minor_unit(currency))
        raise Conflict(
            f"payment reference {ref!r} is already recorded: {shown} {currency} from"
            f" account {acc} for invoice {inv}; a new payment needs a new reference"
        )
    return Payment(ref, acc, inv, amt, currency, received, created=False)


def _check_units(books: Books, inv: Invoice, amount_micros: int) -> None:
    """In whole minor units of the invoice's currency (or exactly what it still owes):
    a fraction of a cent can never settle a total rounded to cents (1.105 of 1.11 left
    the invoice open with 0.005 outstanding, to be dunned as overdue), nor 0.5 yen one
    rounded to whole yen."""
    decimals = books.cfg.decimals(inv.currency)
    if not whole_units(amount_micros, decimals, inv.outstanding_micros):
        unit = money(minor_unit_micros(decimals), decimals)
        raise Refused(
            f"a payment amount must be positive, in whole units of {unit} {inv.currency}"
            f" ({inv.number} is in {inv.currency}): {money(amount_micros, 0)} is not"
        )


async def add_payment(
    books: Books,
    account_id: str,
    amount_micros: int,
    *,
    invoice_number: str,
    reference: str,
    who: str,
) -> tuple[Payment, Invoice]:
    """Record a payment of ``amount_micros`` for an invoice; (payment, invoice now)."""
    check_reference(reference)
    if amount_micros <= 0:
        raise Refused("a payment amount must be positive")

    async def work(conn: Conn) -> Payment:
        found = await _existing(conn, reference)
        if found is not None:
            return _replay(found, account_id, invoice_number, amount_micros, reference)
        inv = await fetch(conn, invoice_number, books.now())
        if inv.kind is not Kind.INVOICE:
            raise Refused(f"{inv.number} is a {inv.kind}, not an invoice")
        if inv.account_id != account_id:
            raise Refused(f"invoice {inv.number} is not an invoice of account {account_id}")
        _check_units(books, inv, amount_micros)
        cur = await conn.execute(
            "INSERT INTO payments (reference, account_id, invoice_id, amount_micros, currency,"
            " received_at, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (reference) DO NOTHING RETURNING received_at",
            (reference, account_id, inv.id, amount_micros, inv.currency, books.now(), who),
        )
        row = await cur.fetchone()
        if row is None:  # the same reference, recorded meanwhile by another request
            again = await _existing(conn, reference)
            assert again is not None
            return _replay(again, account_id, invoice_number, amount_micros, reference)
        why = f"payment {reference} for invoice {inv.number}"
        await postings.record(
            conn,
            postings.Posting(
                payment_txn(reference), account_id, inv.currency, amount_micros, why[:500]
            ),
        )
        return Payment(reference, account_id, inv.number, amount_micros, inv.currency, row[0], True)

    payment: Payment = await books.db.run(work)
    if books.ledger is not None:
        await postings.post_pending(books.db, books.ledger, who=who, account_ids=[account_id])
        await dunning.settle(books, account_id)

    async def current(conn: Conn) -> Invoice:
        return await fetch(conn, invoice_number, books.now())

    invoice: Invoice = await books.db.run(current)
    return payment, invoice


async def list_payments(books: Books, account_id: str) -> list[Payment]:
    async def work(conn: Conn) -> list[Payment]:
        cur = await conn.execute(
            "SELECT p.reference, p.account_id, i.number, p.amount_micros, p.currency,"
            " p.received_at FROM payments p JOIN invoices i ON i.id = p.invoice_id"
            " WHERE p.account_id = %s ORDER BY p.id",
            (account_id,),
        )
        rows = await cur.fetchall()
        return [Payment(r[0], r[1], r[2], int(r[3]), r[4], r[5], created=True) for r in rows]

    result: list[Payment] = await books.db.run(work)
    return result
