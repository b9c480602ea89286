"""Numbering and writing documents, inside the caller's transaction.

Gap-free numbers: the series row is locked (SELECT ... FOR UPDATE) before anything
is decided, numbers are taken in order, and the counter moves in the same
transaction that writes the documents. Two runs at once queue on that lock (the
second then sees what the first issued); a transaction that fails rolls back its
documents and its numbers together, so no number is lost and none is given twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chargingd.billing.db import Conn
from chargingd.invoicing import charges
from chargingd.invoicing.model import Draft, Invoice, Kind
from chargingd.invoicing.periods import utc


@dataclass(frozen=True)
class Numbering:
    series: str  # "INV-2026"
    digits: int

    def number(self, seq: int) -> str:
        return f"{self.series}-{seq:0{self.digits}d}"


def series_name(template: str, issued_at: datetime) -> str:
    """ "INV-{year}" -> "INV-2026" (the issue year in the invoicing time zone)."""
    return template.replace("{year}", f"{issued_at.year:04d}")


async def lock_series(conn: Conn, series: str) -> int:
    """Lock the series for this transaction; the last number given in it."""
    await conn.execute(
        "INSERT INTO invoice_series (series) VALUES (%s) ON CONFLICT DO NOTHING", (series,)
    )
    cur = await conn.execute(
        "SELECT last_number FROM invoice_series WHERE series = %s FOR UPDATE", (series,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def already_issued(
    conn: Conn, kind: Kind, period: str, account_ids: Sequence[str]
) -> set[str]:
    """Accounts that already have this period's invoice (or statement)."""
    cur = await conn.execute(
        "SELECT account_id FROM invoices WHERE kind = %s AND period = %s AND account_id = ANY(%s)",
        (str(kind), period, list(account_ids)),
    )
    return {row[0] for row in await cur.fetchall()}


async def issued_in(conn: Conn, period: str, accounts: Sequence[Any] | None) -> set[str]:
    """Accounts (of these, or all) with the period's invoice or statement already."""
    ids = None if accounts is None else [a.id for a in accounts]
    cur = await conn.execute(
        "SELECT account_id FROM invoices WHERE period = %s AND kind <> 'credit_note'"
        " AND (%s::text[] IS NULL OR account_id = ANY(%s))",
        (period, ids, ids),
    )
    return {row[0] for row in await cur.fetchall()}


async def previous_ends(
    conn: Conn, label: str, account_ids: Sequence[str] | None
) -> dict[str, tuple[str, datetime]]:
    """Where the period ``label`` of each account (of these, or all) that a run looked
    at ended: (its document's number, or "" when it issued none, its end). A period
    after it starts there, whatever the billing day says now."""
    cur = await conn.execute(
        "SELECT DISTINCT ON (account_id) account_id, number, period_end FROM ("
        " SELECT account_id, number, period_end FROM invoices"
        "  WHERE period = %(label)s AND kind <> 'credit_note'"
        " UNION ALL SELECT account_id, '', period_end FROM uninvoiced_periods"
        "  WHERE period = %(label)s) p"
        " WHERE %(ids)s::text[] IS NULL OR account_id = ANY(%(ids)s::text[])"
        " ORDER BY account_id, period_end DESC, number DESC",
        {"label": label, "ids": None if account_ids is None else list(account_ids)},
    )
    return {row[0]: (row[1], row[2]) for row in await cur.fetchall()}


_INVOICE_COLUMNS = (
    "id, number, series, seq, kind, account_id, period, period_start, period_end, currency,"
    " issued_at, due_at, refers_to, reason, customer, issuer, tax, subtotal_micros, tax_micros,"
    " total_micros, usage_micros, usage_calls, statement, call_detail, run_id, created_by,"
    " calls_kept"
)
_LINE_COLUMNS = (
    "invoice_id, line_no, kind, description, quantity, unit, calls, billed_s, exact_micros,"
    " amount_micros, tax_micros"
)
_USAGE_COLUMNS = "invoice_id, account_id, period, period_start, period_end, calls, charged_micros"


def due_at(draft: Draft, issued_at: datetime) -> datetime | None:
    if draft.kind is not Kind.INVOICE:
        return None
    return issued_at + timedelta(days=draft.payment_terms_days)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _header(
    invoice_id: int, number: str, seq: int, draft: Draft, n: Numbering, meta: dict[str, Any]
) -> tuple[Any, ...]:
    return (
        invoice_id, number, n.series, seq, str(draft.kind), draft.account_id, draft.period.label,
        utc(draft.period.start), utc(draft.period.end), draft.currency, meta["issued_at"],
        due_at(draft, meta["issued_at"]), draft.refers_to, draft.reason,
        _json(draft.customer), _json(meta["issuer"]), _json(draft.tax.to_json()),
        draft.subtotal_micros, draft.tax_micros, draft.total_micros, draft.usage_micros,
        draft.usage_calls, _json(draft.statement), draft.call_detail, meta["run_id"], meta["who"],
        # An invoice's or statement's calls are copied by the run that issues it
        # (keep_calls); a credit note bills no calls.
        draft.kind is not Kind.CREDIT_NOTE,
    )  # fmt: skip


async def write(
    conn: Conn,
    drafts: Sequence[Draft],
    *,
    numbering: Numbering,
    last_number: int,
    issued_at: datetime,
    issuer: dict[str, Any],
    run_id: str,
    who: str,
) -> list[Invoice]:
    """Number and write drafts (the series must be locked by this transaction)."""
    if not drafts:
        return []
    cur = await conn.execute(
        "SELECT nextval('invoices_id_seq') FROM generate_series(1, %s)", (len(drafts),)
    )
    ids = [int(r[0]) for r in await cur.fetchall()]
    meta = {"issued_at": issued_at, "issuer": issuer, "run_id": run_id, "who": who}
    numbered = [
        (i, numbering.number(last_number + k + 1), last_number + k + 1, d)
        for k, (i, d) in enumerate(zip(ids, drafts, strict=True))
    ]
    async with conn.cursor() as c:
        async with c.copy(f"COPY invoices ({_INVOICE_COLUMNS}) FROM STDIN") as copy:
            for invoice_id, number, seq, draft in numbered:
                await copy.write_row(_header(invoice_id, number, seq, draft, numbering, meta))
        async with c.copy(f"COPY invoice_lines ({_LINE_COLUMNS}) FROM STDIN") as copy:
            for invoice_id, _, _, draft in numbered:
                for no, ln in enumerate(draft.lines, 1):
                    await copy.write_row(
                        (invoice_id, no, ln.kind, ln.description, ln.quantity, ln.unit, ln.calls,
                         ln.billed_s, ln.exact_micros, ln.amount_micros, ln.tax_micros)
                    )  # fmt: skip
        async with c.copy(f"COPY invoice_usage ({_USAGE_COLUMNS}) FROM STDIN") as copy:
            for invoice_id, _, _, draft in numbered:
                for u in draft.usage:
                    await copy.write_row(
                        (invoice_id, draft.account_id, u.period, utc(u.start), utc(u.end),
                         u.calls, u.charged_micros)
                    )  # fmt: skip
    await _write_links(conn, numbered)
    await conn.execute(
        "UPDATE invoice_series SET last_number = %s WHERE series = %s",
        (last_number + len(drafts), numbering.series),
    )
    return [_issued(i, number, d, meta) for i, number, _, d in numbered]


async def _write_links(conn: Conn, numbered: Sequence[tuple[int, str, int, Draft]]) -> None:
    """Charges and rerates now billed, and what the ledger is owed for each document."""
    await charges.mark_billed(conn, {i: d.charge_ids for i, _, _, d in numbered if d.charge_ids})
    rerates = [(*key, i) for i, _, _, d in numbered for key in d.rerates]
    credits = [(i, owed_id, amount) for i, _, _, d in numbered for owed_id, _, amount in d.settles]
    postings = [
        (posting_txn(number), d.account_id, d.currency, d.posting_micros, _posting_why(number, d))
        for _, number, _, d in numbered
        if d.posting_micros != 0
    ]
    async with conn.cursor() as cur:
        if rerates:
            await cur.executemany(
                "INSERT INTO invoiced_rerates (run_id, account_id, currency, invoice_id)"
                " VALUES (%s, %s, %s, %s)",
                rerates,
            )
        if credits:
            await cur.executemany(
                "INSERT INTO invoice_credits (credit_id, invoice_id, amount_micros)"
                " VALUES (%s, %s, %s)",
                credits,
            )
        if postings:
            await cur.executemany(
                "INSERT INTO ledger_postings (txn_id, account_id, currency, amount_micros, why)"
                " VALUES (%s, %s, %s, %s, %s)",
                postings,
            )


def posting_txn(number: str) -> str:
    """The ledger transaction id of a document's posting (applied once)."""
    return f"invoice:{number}"


def _posting_why(number: str, draft: Draft) -> str:
    if draft.kind is Kind.CREDIT_NOTE:
        return f"credit note {number}: {draft.reason}"[:500]
    return f"invoice {number}: charges, credits and tax beyond the calls already debited"


def _issued(invoice_id: int, number: str, draft: Draft, meta: dict[str, Any]) -> Invoice:
    return Invoice(
        id=invoice_id,
        number=number,
        kind=draft.kind,
        account_id=draft.account_id,
        period=draft.period.label,
        period_start=draft.period.start,
        period_end=draft.period.end,
        currency=draft.currency,
        issued_at=meta["issued_at"],
        due_at=due_at(draft, meta["issued_at"]),
        customer=draft.customer,
        issuer=meta["issuer"],
        tax=draft.tax,
        subtotal_micros=draft.subtotal_micros,
        tax_micros=draft.tax_micros,
        total_micros=draft.total_micros,
        usage_micros=draft.usage_micros,
        usage_calls=draft.usage_calls,
        lines=draft.lines,
        statement=draft.statement,
        call_detail=draft.call_detail,
        reason=draft.reason,
        refers_to=draft.settles[0][1] if draft.settles else None,
        settles=tuple((number, amount) for _, number, amount in draft.settles),
        status="open" if draft.kind is Kind.INVOICE else "issued",
    )
