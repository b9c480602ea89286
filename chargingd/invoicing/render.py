"""Invoices and runs as text for the terminal (JSON is ``to_json``)."""

from __future__ import annotations

from collections.abc import Sequence

from chargingd.invoicing.model import Draft, Invoice, Kind, RunResult, currency_decimals, money
from chargingd.invoicing.tax import percent


def negated(text: str) -> str:
    """A statement's debited amount as the balance moved: "4.30" -> "-4.30"; "0.00"
    stays (not "-0.00" on a statement of a month without calls); "-1.00" -> "1.00" (a
    refund)."""
    if text.strip("0.") == "":
        return text
    return text[1:] if text.startswith("-") else f"-{text}"


def credit_went(inv: Invoice, decimals: int) -> str:
    """Where a negative invoice's credit went, to follow "the credit of 2.50 EUR": the
    owed invoices it settled (oldest first) and what stays on the account."""
    cur = inv.currency
    left = inv.credit_left_micros
    if len(inv.settles) == 1 and not left:
        return f"settles invoice {inv.settles[0][0]}"
    parts = [f"{money(amount, decimals)} {cur} of invoice {n}" for n, amount in inv.settles]
    if not parts:
        return "stays on your account"
    text = "settles " + (", ".join(parts[:-1]) + " and " if len(parts) > 1 else "") + parts[-1]
    if left:
        text += f"; the remaining {money(left, decimals)} {cur} stays on your account"
    return text


def invoice_text(inv: Invoice, decimals: int | None = None) -> str:
    """One document: header, lines, totals, state. ``decimals``: None, the currency's."""
    cur = inv.currency
    decimals = currency_decimals(cur, decimals)
    out = [
        f"{inv.kind.replace('_', ' ')} {inv.number}  account {inv.account_id}  period {inv.period}"
        f" ({inv.period_start.date()} to {inv.period_end.date()}, end excluded)",
        f"issued {inv.issued_at:%Y-%m-%d %H:%M %Z}"
        + (f"  due {inv.due_at:%Y-%m-%d}" if inv.due_at else "")
        + f"  status {inv.status}",
    ]
    if inv.customer.get("name"):
        out.append(f"customer {inv.customer['name']}")
    out.append(f"{'':2}{'description':<56} {'qty':>10} {'unit':<6} {'net':>12} {'tax':>10}")
    for ln in inv.lines:
        out.append(
            f"  {ln.description[:56]:<56} {ln.quantity!s:>10} {ln.unit:<6}"
            f" {money(ln.amount_micros, decimals):>12} {money(ln.tax_micros, decimals):>10}"
        )
    rate = percent(inv.tax.rate_ppm)
    out.append(f"  subtotal {money(inv.subtotal_micros, decimals)} {cur}")
    out.append(f"  tax ({inv.tax.mode}, {rate} %) {money(inv.tax_micros, decimals)} {cur}")
    out.append(f"  total {money(inv.total_micros, decimals)} {cur}")
    if inv.kind is Kind.INVOICE:
        out.append(
            f"  paid {money(inv.paid_micros, decimals)}  credited"
            f" {money(inv.credited_micros, decimals)}  outstanding"
            f" {money(inv.outstanding_micros, decimals)} {cur}"
        )
    if inv.tax.note:
        out.append(f"  {inv.tax.note}" + (f" (VAT ID {inv.tax.vat_id})" if inv.tax.vat_id else ""))
    if inv.statement:
        s = inv.statement
        out.append(
            f"  opening {s['opening_balance']}  top-ups {s['topups']}  adjustments"
            f" {s['adjustments']}  calls {negated(s['call_debits'])}  other {s['other']}"
            f"  closing {s['closing_balance']} {cur}"
        )
        if "usage_total" in s:  # statements issued before it was recorded have not
            out.append(
                f"  usage shown {s['usage_total']} + rounding {s['rounding']} + across the"
                f" period's edges {s['boundary_difference']} = calls debited"
                f" {s['call_debits']} {cur}"
            )
    if inv.kind is Kind.INVOICE and inv.total_micros < 0:  # a negative invoice's credit
        applied = ", ".join(f"{n} ({money(a, decimals)} {cur})" for n, a in inv.settles)
        left = inv.credit_left_micros
        if not applied:
            out.append(f"  credit of {money(left, decimals)} {cur} stays on the account")
        else:
            kept = f"; {money(left, decimals)} {cur} stays on the account" if left else ""
            out.append(f"  credit applied to {applied}{kept}")
    elif inv.refers_to:
        out.append(f"  corrects {inv.refers_to}: {inv.reason}")
    return "\n".join(out) + "\n"


def list_text(invoices: Sequence[Invoice], decimals: int | None = None) -> str:
    if not invoices:
        return "no invoices\n"
    out = [f"{'number':<20} {'kind':<12} {'account':<20} {'period':<8} {'total':>14} {'status':<8}"]
    for inv in invoices:
        total = f"{money(inv.total_micros, currency_decimals(inv.currency, decimals))}"
        total += f" {inv.currency}"
        out.append(
            f"{inv.number:<20} {inv.kind:<12} {inv.account_id:<20} {inv.period:<8}"
            f" {total:>14} {inv.status:<8}"
        )
    return "\n".join(out) + "\n"


def run_text(result: RunResult, decimals: int | None = None) -> str:
    verb = "would issue" if result.dry_run else "issued"
    out = [
        f"invoice run {result.run_id} for {result.period}: {verb} {len(result.issued)}"
        f" documents; {result.cdrs} CDRs aggregated in {result.aggregate_s:.2f} s;"
        f" run {result.elapsed_s:.2f} s; ledger postings {result.posted}"
    ]
    for doc in result.issued:
        number = doc.number if isinstance(doc, Invoice) else "(draft)"
        kind = doc.kind
        places = currency_decimals(doc.currency, decimals)
        total = money(doc.total_micros, places)
        usage = money(doc.usage_micros, places)
        out.append(
            f"  {number:<20} {kind:<10} {doc.account_id:<20} total {total} {doc.currency}"
            f" (usage {usage}, {len(doc.lines)} lines)"
        )
    for reason, accounts in sorted(result.skipped.items()):
        shown = ", ".join(accounts[:10]) + (" ..." if len(accounts) > 10 else "")
        out.append(f"  skipped ({reason}): {len(accounts)}: {shown}")
    out += [f"  note: {n}" for n in result.notes]
    out += [f"  error: {e}" for e in result.errors]
    return "\n".join(out) + "\n"


def draft_json(d: Draft, decimals: int | None = None) -> dict[str, object]:
    """A draft of a dry run as JSON (no number yet)."""
    decimals = currency_decimals(d.currency, decimals)
    return {
        "number": None,
        "kind": str(d.kind),
        "account": d.account_id,
        "period": d.period.label,
        "currency": d.currency,
        "lines": [ln.to_json(decimals) for ln in d.lines],
        "subtotal": money(d.subtotal_micros, decimals),
        "tax": money(d.tax_micros, decimals),
        "total": money(d.total_micros, decimals),
        "usage": money(d.usage_micros, decimals),
        "status": "draft",
    }
