"""Reading issued documents, with what was paid and credited on each.

An invoice row never changes; its state is computed when read: ``paid`` once
payments and credit notes cover the total, else ``overdue`` after the due date,
else ``open``. Statements and credit notes are ``issued``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.invoicing.model import Invoice, Kind, Line, NotFound
from chargingd.invoicing.tax import TaxProfile

_SELECT = """
SELECT i.id, i.number, i.kind, i.account_id, i.period, i.period_start, i.period_end,
       i.currency, i.issued_at, i.due_at, i.customer, i.issuer, i.tax, i.subtotal_micros,
       i.tax_micros, i.total_micros, i.usage_micros, i.usage_calls, i.statement,
       i.call_detail, r.number, i.reason,
       coalesce((SELECT sum(p.amount_micros) FROM payments p WHERE p.invoice_id = i.id), 0),
       coalesce((SELECT -sum(c.total_micros) FROM invoices c
                 WHERE c.refers_to = i.id AND c.kind = 'credit_note'), 0)
       + coalesce((SELECT sum(a.amount_micros) FROM invoice_credits a
                   WHERE a.invoice_id = i.id), 0),
       coalesce((SELECT array_agg(c.number ORDER BY c.id) FROM invoices c
                 WHERE (c.refers_to = i.id AND c.kind = 'credit_note')
                    OR c.id IN (SELECT a.credit_id FROM invoice_credits a
                                WHERE a.invoice_id = i.id)), '{}'),
       coalesce((SELECT json_agg(json_build_array(s.number, a.amount_micros)
                                 ORDER BY s.due_at, s.id)
                 FROM invoice_credits a JOIN invoices s ON s.id = a.invoice_id
                 WHERE a.credit_id = i.id), '[]')
FROM invoices i LEFT JOIN invoices r ON r.id = i.refers_to
"""


def status_of(kind: Kind, total: int, settled: int, due_at: datetime | None, now: datetime) -> str:
    if kind is not Kind.INVOICE:
        return "issued"
    if settled >= total:
        return "paid"
    if due_at is not None and now > due_at:
        return "overdue"
    return "open"


def _invoice(row: Sequence[Any], now: datetime, lines: tuple[Line, ...] = ()) -> Invoice:
    """An invoice as read; its moments in ``now``'s zone (the invoicing time zone), so
    that a period from 2026-11-08 00:00 in Asia/Tokyo prints as 08 Nov to 07 Dec, not
    as the UTC dates of those midnights (07 Nov to 06 Dec)."""
    kind = Kind(row[2])
    paid, credited = int(row[22]), int(row[23])
    zone = now.tzinfo

    def local(moment: datetime | None) -> datetime | None:
        return None if moment is None or zone is None else moment.astimezone(zone)

    return Invoice(
        id=int(row[0]),
        number=row[1],
        kind=kind,
        account_id=row[3],
        period=row[4],
        period_start=local(row[5]) or row[5],
        period_end=local(row[6]) or row[6],
        currency=row[7],
        issued_at=local(row[8]) or row[8],
        due_at=local(row[9]),
        customer=row[10],
        issuer=row[11],
        tax=TaxProfile.from_json(row[12]),
        subtotal_micros=int(row[13]),
        tax_micros=int(row[14]),
        total_micros=int(row[15]),
        usage_micros=int(row[16]),
        usage_calls=int(row[17]),
        statement=row[18],
        call_detail=bool(row[19]),
        refers_to=row[20],
        reason=row[21],
        paid_micros=paid,
        credited_micros=credited,
        status=status_of(kind, int(row[15]), paid + credited, row[9], now),
        credit_notes=tuple(row[24]),
        settles=tuple((str(n), int(m)) for n, m in row[25]),
        lines=lines,
    )


async def _lines(conn: Conn, invoice_id: int) -> tuple[Line, ...]:
    cur = await conn.execute(
        "SELECT kind, description, quantity, unit, exact_micros, amount_micros, tax_micros,"
        " calls, billed_s FROM invoice_lines WHERE invoice_id = %s ORDER BY line_no",
        (invoice_id,),
    )
    return tuple(
        Line(r[0], r[1], Decimal(r[2]), r[3], int(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]))
        for r in await cur.fetchall()
    )


async def fetch(conn: Conn, number: str, now: datetime) -> Invoice:
    """One document with its lines (in the caller's transaction); NotFound."""
    cur = await conn.execute(_SELECT + " WHERE i.number = %s", (number,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no invoice {number!r}")
    return _invoice(row, now, await _lines(conn, int(row[0])))


async def get_invoice(db: BillingDB, number: str, now: datetime) -> Invoice:
    """One document with its lines; NotFound."""

    async def work(conn: Conn) -> Invoice:
        return await fetch(conn, number, now)

    result: Invoice = await db.run(work)
    return result


async def list_invoices(
    db: BillingDB,
    now: datetime,
    *,
    period: str | None = None,
    account_id: str | None = None,
    kind: Kind | None = None,
    limit: int = 1000,
) -> list[Invoice]:
    """Documents (without lines), newest number first within each period."""
    where = ["(%(period)s::text IS NULL OR i.period = %(period)s)"]
    where.append("(%(account)s::text IS NULL OR i.account_id = %(account)s)")
    where.append("(%(kind)s::text IS NULL OR i.kind = %(kind)s)")
    params = {"period": period, "account": account_id, "kind": kind and str(kind), "limit": limit}

    async def work(conn: Conn) -> list[Invoice]:
        cur = await conn.execute(
            _SELECT + " WHERE " + " AND ".join(where) + " ORDER BY i.id LIMIT %(limit)s", params
        )
        return [_invoice(row, now) for row in await cur.fetchall()]

    result: list[Invoice] = await db.run(work)
    return result


# What is still owed on invoice i: its total less its payments, its credit notes and
# the parts of negative invoices' credits that settled it (invoice_credits).
_OWED = """i.total_micros
         - coalesce((SELECT sum(p.amount_micros) FROM payments p WHERE p.invoice_id = i.id), 0)
         + coalesce((SELECT sum(c.total_micros) FROM invoices c
                     WHERE c.refers_to = i.id AND c.kind = 'credit_note'), 0)
         - coalesce((SELECT sum(a.amount_micros) FROM invoice_credits a
                     WHERE a.invoice_id = i.id), 0)"""

_OVERDUE = f"""
SELECT i.account_id, i.number, i.due_at, {_OWED} AS owed, i.currency
FROM invoices i
WHERE i.kind = 'invoice' AND i.due_at < %(cutoff)s
  AND (%(account)s::text IS NULL OR i.account_id = %(account)s)
"""


# What each account owes net per currency over all its invoices: an overpaid invoice
# (paid beyond its total; the surplus stays on the account as credit) counts negative,
# a negative invoice only with the part of its credit that settled no invoice (the rest
# already lowers what the invoices it settled owe).
_NET_OWED = f"""
SELECT i.account_id, i.currency,
       sum({_OWED} + coalesce((SELECT sum(s.amount_micros) FROM invoice_credits s
                               WHERE s.credit_id = i.id), 0)) AS net
FROM invoices i
WHERE i.kind = 'invoice' AND (%(account)s::text IS NULL OR i.account_id = %(account)s)
GROUP BY i.account_id, i.currency
"""


async def overdue(
    db: BillingDB, cutoff: datetime, account_id: str | None = None
) -> dict[str, list[tuple[str, datetime, int, str]]]:
    """Per account: invoices due before ``cutoff`` still not settled (number, due, owed,
    currency), oldest first. Each is owed at most what the account owes net in its
    currency: an overpayment of another invoice settles it first (it is left out when
    the account owes nothing net)."""

    async def work(conn: Conn) -> dict[str, list[tuple[str, datetime, int, str]]]:
        cur = await conn.execute(
            f"SELECT o.account_id, o.number, o.due_at, least(o.owed, n.net), o.currency"
            f" FROM ({_OVERDUE}) o JOIN ({_NET_OWED}) n"
            "  ON n.account_id = o.account_id AND n.currency = o.currency"
            " WHERE o.owed > 0 AND n.net > 0 ORDER BY o.account_id, o.due_at",
            {"cutoff": cutoff, "account": account_id},
        )
        found: dict[str, list[tuple[str, datetime, int, str]]] = {}
        for acc, number, due, owed, currency in await cur.fetchall():
            found.setdefault(acc, []).append((number, due, int(owed), currency))
        return found

    result: dict[str, list[tuple[str, datetime, int, str]]] = await db.run(work)
    return result


async def owed_invoices(conn: Conn, account_id: str, currency: str) -> list[tuple[int, str, int]]:
    """The account's invoices in ``currency`` with something still owed on them, oldest
    first: (id, number, owed). Its invoices are locked for the caller's transaction
    first (FOR UPDATE waits for a payment or credit note being written against one of
    them, which holds a key-share lock on it till it commits); what they owe is then
    read after it, never while it is half known."""
    await conn.execute(
        "SELECT id FROM invoices WHERE kind = 'invoice' AND account_id = %s FOR UPDATE",
        (account_id,),
    )
    cur = await conn.execute(
        f"SELECT o.id, o.number, o.owed FROM (SELECT i.id, i.number, i.due_at, {_OWED} AS owed"
        "  FROM invoices i WHERE i.kind = 'invoice' AND i.account_id = %s"
        "  AND i.currency = %s) o WHERE o.owed > 0 ORDER BY o.due_at, o.id",
        (account_id, currency),
    )
    return [(int(r[0]), str(r[1]), int(r[2])) for r in await cur.fetchall()]
