"""(d) what was invoiced, against its own lines, the ledger and the CDRs (PostgreSQL).

For each document (invoice, statement, credit note) of a period overlapping the run:

- its figures: subtotal and tax are the sums of its lines, total = subtotal + tax;
- the ledger (invoices and credit notes): its posting (``invoice:NUMBER``) is what the
  document's total says the ledger still had to move (an invoice: minus the total
  plus the usage the ledger debited and the rerates it applied; a credit note: its
  total), and the journal moved exactly that;
- the CDRs (invoices): the usage all documents counted for a period equals the
  charged_micros of that period's CDRs in the invoice's currency now.

Issued documents never change (a trigger refuses it), so a difference means the
database was edited past the trigger, a posting never reached the ledger, or CDRs
changed after the period was billed and no later run re-counted them.
"""

from __future__ import annotations

from typing import Any

from chargingd.assurance.model import Finding, Kind, RunParams
from chargingd.billing.db import Conn

_DOCUMENTS = """
WITH inv AS (
    SELECT id, number, kind, account_id, currency, period, period_start, period_end,
        subtotal_micros, tax_micros, total_micros
    FROM invoices
    WHERE period_start < %(end)s AND period_end > %(start)s
        AND (%(account)s::text IS NULL OR account_id = %(account)s)
)
SELECT inv.number, inv.kind, inv.account_id, inv.currency, inv.period,
    inv.subtotal_micros, inv.tax_micros, inv.total_micros,
    coalesce(l.amount, 0), coalesce(l.tax, 0), coalesce(u.charged, 0),
    coalesce(r.ledger, 0), p.amount_micros, p.posted_at IS NOT NULL, j.moved, j.entries,
    coalesce((SELECT min(at) FROM ledger_journal WHERE account_id = inv.account_id)
             <= p.posted_at, false)
FROM inv
LEFT JOIN LATERAL (SELECT sum(amount_micros) AS amount, sum(tax_micros) AS tax
                   FROM invoice_lines WHERE invoice_id = inv.id) l ON true
LEFT JOIN LATERAL (SELECT sum(charged_micros) AS charged
                   FROM invoice_usage WHERE invoice_id = inv.id) u ON true
LEFT JOIN LATERAL (SELECT sum(ra.amount_micros) AS ledger
                   FROM invoiced_rerates ir
                   JOIN rerate_adjustments ra ON ra.run_id = ir.run_id
                       AND ra.account_id = ir.account_id AND ra.currency = ir.currency
                   WHERE ir.invoice_id = inv.id) r ON true
LEFT JOIN ledger_postings p ON p.txn_id = 'invoice:' || inv.number
LEFT JOIN LATERAL (SELECT sum(amount_micros) AS moved, count(*) AS entries
                   FROM ledger_journal WHERE account_id = inv.account_id
                       AND kind = 'adjust' AND ref = 'invoice:' || inv.number) j ON true
ORDER BY inv.period_start, inv.number
"""

# Usage counted per (account, period) by every invoice, against the CDRs now in the
# currency it was invoiced in (CDRs in another one are the invoice run's errors, never
# billed, so no difference of the invoice: they are left unreported here).
_USAGE = """
WITH counted AS (
    SELECT u.account_id, u.period, i.currency, min(u.period_start) AS period_start,
        max(u.period_end) AS period_end, sum(u.charged_micros) AS invoiced,
        sum(u.calls) AS calls, max(i.number) AS last_number
    FROM invoice_usage u JOIN invoices i ON i.id = u.invoice_id AND i.kind = 'invoice'
    WHERE u.period_start < %(end)s AND u.period_end > %(start)s
        AND (%(account)s::text IS NULL OR u.account_id = %(account)s)
    GROUP BY u.account_id, u.period, i.currency
)
SELECT k.account_id, k.period, k.last_number, k.currency, k.invoiced, k.calls,
    coalesce(c.charged, 0), coalesce(c.calls, 0)
FROM counted k
LEFT JOIN LATERAL (
    SELECT sum(charged_micros) AS charged, count(*) FILTER (WHERE answer_time IS NOT NULL) AS calls
    FROM cdrs
    WHERE account_id = k.account_id AND start_time >= k.period_start
        AND start_time < k.period_end AND currency = k.currency
        AND charge <> 'recorded_only'
) c ON true
WHERE k.invoiced <> coalesce(c.charged, 0)
ORDER BY k.period, k.account_id
"""


def _params(params: RunParams) -> dict[str, Any]:
    return {"start": params.start, "end": params.end, "account": params.account_id}


async def documents(conn: Conn, params: RunParams, *, ledger: bool) -> list[Finding]:
    """Documents whose figures, ledger posting or journal disagree; money is what the
    document should say minus what it says (< 0: the customer is billed too much)."""
    cur = await conn.execute(_DOCUMENTS, _params(params))
    out = []
    for row in await cur.fetchall():
        finding = _document(row, ledger=ledger)
        if finding is not None:
            out.append(finding)
    return out


def _document(row: tuple[Any, ...], *, ledger: bool) -> Finding | None:
    (number, kind, acct, currency, period, subtotal, tax, total, lines, lines_tax, usage,
     rerates, posting, posted, moved, entries, journaled) = row  # fmt: skip
    problems: list[str] = []
    expected = int(lines) + int(lines_tax)
    if int(subtotal) != int(lines) or int(tax) != int(lines_tax):
        problems.append("subtotal or tax differs from the sum of the lines")
    if int(total) != int(subtotal) + int(tax) or int(total) != expected:
        problems.append("total differs from the lines (subtotal + tax)")
    detail: dict[str, Any] = {
        "kind": kind, "period": period, "total_micros": int(total),
        "lines_total_micros": expected,
    }  # fmt: skip
    if ledger and kind != "statement":
        ledger_total = _ledger_total(kind, int(usage), int(rerates), posting)
        detail["ledger_total_micros"] = ledger_total
        if ledger_total is not None and ledger_total != int(total):
            problems.append("total differs from what the ledger was posted for it")
        # Only where the account's journal began before the posting was applied.
        if posting is not None and posted and journaled and not entries:
            problems.append("posting marked applied, no ledger movement for it")
        elif posting is not None and posted and journaled and int(moved) != int(posting):
            problems.append("the ledger moved other than the posting")
        if posting is not None:
            detail["posting_micros"] = int(posting)
            detail["journal_micros"] = int(moved or 0)
    if not problems:
        return None
    detail["problems"] = problems
    money = expected - int(total)
    if money == 0 and detail.get("ledger_total_micros") is not None:
        money = int(detail["ledger_total_micros"]) - int(total)
    return Finding(Kind.INVOICE_MISMATCH, acct, currency, money, "invoice", number, detail=detail)


def _ledger_total(kind: str, usage: int, rerates: int, posting: int | None) -> int | None:
    """The total the ledger's posting implies (issue.py: posting = -(total - usage +
    rerates) for an invoice; -total for a credit note, whose total is negative); None
    when there is none."""
    if kind == "credit_note":
        return None if posting is None else -posting
    return usage - rerates - (posting or 0)


async def usage(conn: Conn, params: RunParams) -> list[Finding]:
    """Periods whose invoiced usage differs from their CDRs' charged_micros now."""
    cur = await conn.execute(_USAGE, _params(params))
    out = []
    for acct, period, number, currency, invoiced, calls, charged, cdr_calls in await cur.fetchall():
        out.append(
            Finding(
                Kind.INVOICE_MISMATCH, acct, currency, int(charged) - int(invoiced), "invoice",
                number,
                detail={
                    "period": period, "problems": ["usage invoiced differs from the CDRs"],
                    "invoiced_usage_micros": int(invoiced), "invoiced_calls": int(calls),
                    "cdr_charged_micros": int(charged), "cdr_calls": int(cdr_calls),
                },
            )
        )  # fmt: skip
    return out
