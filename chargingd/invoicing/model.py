"""The documents invoicing writes and reads: lines, drafts, issued invoices, profiles.

Plain data; amounts are integer micro-units (``*_micros``), rendered as decimal
strings only by ``to_json`` (and the PDF/CSV writers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.invoicing.periods import Period
from chargingd.invoicing.tax import TaxProfile


class Kind(enum.StrEnum):
    INVOICE = "invoice"  # postpaid: what the customer owes for a period
    STATEMENT = "statement"  # prepaid: what happened to the balance in a period
    CREDIT_NOTE = "credit_note"  # a correction of an issued invoice


class InvoicingError(Exception):
    """Base of invoicing errors; ``code`` is stable (never compare messages)."""

    code = "invoicing_error"


class NotFound(InvoicingError):
    code = "not_found"


class Refused(InvoicingError):
    """A request that contradicts what is recorded (amount over the invoice, wrong account)."""

    code = "refused"


class Conflict(InvoicingError):
    """The same reference with different content (a payment, a charge)."""

    code = "conflict"


def money(micros: int, decimals: int = 2) -> str:
    """Micro-units as a decimal string with at least ``decimals`` decimals."""
    return format_amount(micros, decimals)


def currency_decimals(currency: str, decimals: int | None = None) -> int:
    """The decimals a document in ``currency`` is written with: ``decimals`` when given
    (``[invoicing] minor_unit_decimals`` set: one value for every currency), else the
    currency's own minor unit (ISO 4217: EUR 2, JPY 0, BHD 3)."""
    return minor_unit(currency) if decimals is None else decimals


@dataclass(frozen=True)
class Line:
    kind: str  # usage, subscription, charge, credit, rerate, correction
    description: str
    quantity: Decimal
    unit: str  # "min", "month", "item"
    exact_micros: int  # before rounding (usage: sum of charged_micros)
    amount_micros: int  # net, rounded to the minor unit
    tax_micros: int
    calls: int = 0
    billed_s: int = 0

    def to_json(self, decimals: int = 2) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "quantity": str(self.quantity),
            "unit": self.unit,
            "calls": self.calls,
            "billed_s": self.billed_s,
            "exact_amount": money(self.exact_micros, decimals),
            "amount": money(self.amount_micros, decimals),
            "tax": money(self.tax_micros, decimals),
        }


@dataclass(frozen=True)
class UsageRow:
    """One destination group's usage of one account in one period (a SQL aggregate)."""

    group: str
    calls: int  # answered calls
    cdrs: int  # every CDR, answered or not
    billed_s: int
    charged_micros: int


@dataclass(frozen=True)
class UsageCount:
    """Usage a document counted for one period (its own, or an earlier one re-counted)."""

    period: str
    start: datetime
    end: datetime
    calls: int
    charged_micros: int


@dataclass(frozen=True)
class Profile:
    """An account's billing profile (defaults when the account has no row)."""

    account_id: str
    billing_day: int = 1
    customer_name: str = ""
    customer_address: tuple[str, ...] = ()
    email: str = ""
    country: str = ""
    tax_mode: str = "standard"
    vat_rate_ppm: int | None = None
    vat_id: str = ""
    tax_note: str = ""
    payment_terms_days: int | None = None
    zero_invoices: bool = False
    call_detail: bool = False

    def customer(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "name": self.customer_name,
            "address": list(self.customer_address),
            "email": self.email,
            "country": self.country,
            "vat_id": self.vat_id,
        }


@dataclass(frozen=True)
class Draft:
    """A document ready to be numbered and written."""

    kind: Kind
    account_id: str
    currency: str
    period: Period
    tax: TaxProfile
    customer: dict[str, Any]
    lines: tuple[Line, ...]
    usage: tuple[UsageCount, ...] = ()  # what this document counts
    charge_ids: tuple[int, ...] = ()  # one-off charges and credits it bills
    rerates: tuple[tuple[str, str, str], ...] = ()  # (run_id, account_id, currency)
    statement: dict[str, Any] | None = None
    call_detail: bool = False
    payment_terms_days: int = 0
    refers_to: int | None = None
    reason: str = ""
    posting_micros: int = 0  # what the ledger still has to move for this document
    # A negative invoice: the owed invoices its credit settles, oldest first
    # (invoice id, number, micro-units); the rest of the credit stays on the account.
    settles: tuple[tuple[int, str, int], ...] = ()

    @property
    def subtotal_micros(self) -> int:
        return sum(line.amount_micros for line in self.lines)

    @property
    def tax_micros(self) -> int:
        return sum(line.tax_micros for line in self.lines)

    @property
    def total_micros(self) -> int:
        return self.subtotal_micros + self.tax_micros

    @property
    def usage_micros(self) -> int:
        """Exact usage of the document's own period (sum of charged_micros)."""
        return sum(u.charged_micros for u in self.usage if u.period == self.period.label)

    @property
    def usage_calls(self) -> int:
        return sum(u.calls for u in self.usage if u.period == self.period.label)


@dataclass(frozen=True)
class Invoice:
    """An issued document as stored (immutable), with its payment state when read."""

    id: int
    number: str
    kind: Kind
    account_id: str
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    issued_at: datetime
    due_at: datetime | None
    customer: dict[str, Any]
    issuer: dict[str, Any]
    tax: TaxProfile
    subtotal_micros: int
    tax_micros: int
    total_micros: int
    usage_micros: int
    usage_calls: int
    lines: tuple[Line, ...] = ()
    statement: dict[str, Any] | None = None
    call_detail: bool = False
    refers_to: str | None = None  # number of the invoice a credit note corrects
    reason: str = ""
    paid_micros: int = 0
    credited_micros: int = 0
    status: str = "open"  # open, paid, overdue (invoices); issued (others)
    credit_notes: tuple[str, ...] = ()  # credit notes and negative invoices crediting it
    # A negative invoice: the owed invoices its credit settled, oldest first, and how
    # much of each (number, micro-units); the rest of the credit stays on the account.
    settles: tuple[tuple[str, int], ...] = ()

    @property
    def credit_left_micros(self) -> int:
        """A negative invoice: the part of its credit no invoice took (on the account)."""
        if self.kind is not Kind.INVOICE or self.total_micros >= 0:
            return 0
        return -self.total_micros - sum(amount for _, amount in self.settles)

    @property
    def outstanding_micros(self) -> int:
        if self.kind is not Kind.INVOICE:
            return 0
        return max(0, self.total_micros - self.paid_micros - self.credited_micros)

    def to_json(self, decimals: int | None = None) -> dict[str, Any]:
        """``decimals``: None, the currency's own minor unit (currency_decimals)."""
        decimals = currency_decimals(self.currency, decimals)
        out: dict[str, Any] = {
            "number": self.number,
            "kind": str(self.kind),
            "account": self.account_id,
            "period": self.period,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "currency": self.currency,
            "issued_at": self.issued_at.isoformat(),
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "customer": self.customer,
            "issuer": self.issuer,
            "tax_profile": self.tax.to_json(),
            "lines": [line.to_json(decimals) for line in self.lines],
            "subtotal": money(self.subtotal_micros, decimals),
            "tax": money(self.tax_micros, decimals),
            "total": money(self.total_micros, decimals),
            "usage": money(self.usage_micros, decimals),
            "usage_calls": self.usage_calls,
            "status": self.status,
        }
        if self.kind is Kind.INVOICE:
            out["paid"] = money(self.paid_micros, decimals)
            out["credited"] = money(self.credited_micros, decimals)
            out["outstanding"] = money(self.outstanding_micros, decimals)
            out["credit_notes"] = list(self.credit_notes)
        if self.refers_to is not None:
            out["refers_to"] = self.refers_to
            out["reason"] = self.reason
        if self.kind is Kind.INVOICE and self.total_micros < 0:
            out["settles"] = [
                {"invoice": number, "amount": money(amount, decimals)}
                for number, amount in self.settles
            ]
            out["credit_on_account"] = money(self.credit_left_micros, decimals)
        if self.statement is not None:
            out["statement"] = self.statement
        return out


@dataclass(frozen=True)
class Subscription:
    id: int
    account_id: str
    description: str
    amount_micros: int
    quantity: int
    starts_on: date
    ends_on: date | None


@dataclass(frozen=True)
class Charge:
    id: int
    account_id: str
    kind: str  # charge | credit
    description: str
    amount_micros: int
    charge_date: date
    reference: str = ""
    invoice: str | None = None


@dataclass
class RunResult:
    """What one invoice run did (or, dry, would do)."""

    run_id: str
    period: str
    dry_run: bool
    issued: list[Invoice | Draft] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> accounts
    cdrs: int = 0  # CDRs aggregated
    elapsed_s: float = 0.0
    aggregate_s: float = 0.0
    posted: int = 0  # ledger postings applied
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not an error

    def skip(self, reason: str, account_id: str) -> None:
        self.skipped.setdefault(reason, []).append(account_id)
