"""Prepaid statements: what happened to a balance in a period, from the ledger.

The ledger's audit trail records every balance change with the balance before and
after it. The opening balance is the balance after the last change before the
period (0 before the account existed), the closing balance the balance after the
last change in it; in between, changes are summed by kind: top-ups, adjustments,
call debits (commit/release) and anything else. Usage by destination group comes
from the period's CDRs (``charged_micros``); a call that spans the period boundary
is debited in the ledger when its money moves, so the two can differ: the
statement shows both and the difference. Its usage lines are rounded like an invoice's
(once per line, the total is their sum); the exact usage minus that total is shown as
``rounding``, so call debits = lines shown + rounding + boundary difference.

The audit trail is trimmed to ``[ledger] audit_max_entries`` per account: when it
no longer reaches back to the period, no statement is issued (an error says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from chargingd.invoicing.build import Inputs, LineMaker, correction_lines, usage_counts, usage_lines
from chargingd.invoicing.model import Draft, InvoicingError, Kind, money
from chargingd.invoicing.periods import Period
from chargingd.ledger import AuditEntry, Ledger

_PAGE = 1000
# Audit kinds that move money, by statement row; any other change is "other".
# (An account created in the period: its initial balance counts as a top-up; "usage"
# is a mediated call's debit, "rerate" a re-priced call's difference.)
_KINDS = {
    "create": "topups",
    "topup": "topups",
    "adjust": "adjustments",
    "rerate": "adjustments",
    "commit": "calls",
    "release": "calls",
    "usage": "calls",
}


class TrailTrimmed(InvoicingError):
    """The ledger's audit trail no longer reaches back to the period's start."""

    code = "audit_trail_trimmed"


@dataclass
class LedgerSummary:
    """One account's balance movements in one period (micro-units)."""

    opening: int = 0
    closing: int = 0
    topups: int = 0
    adjustments: int = 0
    calls: int = 0  # debits of calls: negative
    other: int = 0
    movements: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, delta: int) -> None:
        row = _KINDS.get(kind, "other")
        setattr(self, row, getattr(self, row) + delta)
        self.by_kind[kind] = self.by_kind.get(kind, 0) + delta
        self.movements += 1

    @property
    def consistent(self) -> bool:
        total = self.topups + self.adjustments + self.calls + self.other
        return self.opening + total == self.closing

    def to_json(self, decimals: int) -> dict[str, Any]:
        return {
            "opening_balance": money(self.opening, decimals),
            "topups": money(self.topups, decimals),
            "adjustments": money(self.adjustments, decimals),
            "call_debits": money(-self.calls, decimals),
            "other": money(self.other, decimals),
            "closing_balance": money(self.closing, decimals),
            "movements": self.movements,
        }


def _balance(snapshot: dict[str, str]) -> int | None:
    value = snapshot.get("balance", "")
    return int(value) if value.lstrip("-").isdigit() else None


async def _entries_since(ledger: Ledger, account_id: str, start_ms: int) -> list[AuditEntry]:
    """Audit entries from the newest back to the first one before ``start_ms`` (oldest
    first), or to the start of the trail."""
    found: list[AuditEntry] = []
    before = "+"
    while True:
        page = await ledger.audit(account_id, count=_PAGE, before_id=before)
        found.extend(page)
        if len(page) < _PAGE or page[-1].ts_ms < start_ms:
            break
        before = page[-1].id
    found.reverse()
    return found


async def summarise(ledger: Ledger, account_id: str, period: Period) -> LedgerSummary:
    """The period's movements of one account, from its audit trail."""
    start_ms = int(period.start.timestamp() * 1000)
    end_ms = int(period.end.timestamp() * 1000)
    entries = await _entries_since(ledger, account_id, start_ms)
    summary = LedgerSummary()
    if entries and entries[0].ts_ms >= start_ms and entries[0].what != "create":
        raise TrailTrimmed(
            f"account {account_id}: the ledger's audit trail starts after {period.start.date()};"
            " no statement for this period (raise [ledger] audit_max_entries)"
        )
    opening = balance = 0
    for entry in entries:
        after = _balance(entry.after)
        if after is None:
            continue
        if entry.ts_ms >= end_ms:
            break
        if entry.ts_ms < start_ms:
            opening = balance = after
            continue
        delta = after - (_balance(entry.before) or 0)
        if delta:
            summary.add(entry.what, delta)
        balance = after
    summary.opening, summary.closing = opening, balance
    return summary


def statement_draft(inputs: Inputs, summary: LedgerSummary, decimals: int) -> Draft:
    """A prepaid statement: balance movements, usage by group, no tax."""
    make = LineMaker(replace(inputs.tax, rate_ppm=0), decimals)
    lines = [*usage_lines(make, inputs.usage), *correction_lines(make, inputs.corrections)]
    counts = usage_counts(inputs.period, inputs.usage, inputs.corrections)
    cdr_usage = sum(u.charged_micros for u in counts)
    # The invoice's rule: each line rounded once, the total is the sum of the lines
    # shown (so a statement's total is the subtotal of an invoice of the same calls).
    # What the balance lost is exact: call debits = the lines shown + their rounding
    # + calls across the period's edges, every figure printed (docs/invoicing.md).
    shown = sum(line.amount_micros for line in lines)
    data = summary.to_json(decimals)
    data["cdr_usage"] = money(cdr_usage, decimals)
    data["usage_total"] = money(shown, decimals)
    data["rounding"] = money(cdr_usage - shown, decimals)
    # Calls spanning the period's edges are debited when their money moves.
    data["boundary_difference"] = money(-summary.calls - cdr_usage, decimals)
    data["consistent"] = summary.consistent
    return Draft(
        kind=Kind.STATEMENT,
        account_id=inputs.account_id,
        currency=inputs.currency,
        period=inputs.period,
        tax=make.tax,
        customer=inputs.profile.customer(),
        lines=tuple(lines),
        usage=counts,
        statement=data,
        call_detail=inputs.profile.call_detail,
    )


def is_empty(summary: LedgerSummary, draft: Draft) -> bool:
    """Nothing happened: no balance movement and no call."""
    return summary.movements == 0 and not draft.lines
