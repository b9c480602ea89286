"""Build the lines of a document from what the database holds (pure, no I/O).

Usage lines come first (one per destination group), then recurring charges, one-off
charges and credits, rerate adjustments and usage corrections of earlier periods.
Each line is rounded and taxed by the rule of chargingd.invoicing.tax.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from chargingd.core.money import format_amount
from chargingd.invoicing.model import Charge, Draft, Kind, Line, Profile, Subscription, UsageRow
from chargingd.invoicing.model import UsageCount as Count
from chargingd.invoicing.periods import Period, active_days, prorate
from chargingd.invoicing.tax import TaxProfile, line_tax, round_minor

_MINUTE = Decimal(60)
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Rerate:
    """A rerate adjustment the ledger applied: ``ledger_micros`` = old - new cost."""

    run_id: str
    account_id: str
    currency: str
    cdrs: int
    ledger_micros: int


@dataclass(frozen=True)
class Correction:
    """An earlier period re-counted: what its CDRs hold now minus what was billed."""

    period: str
    start: datetime
    end: datetime
    calls: int
    charged_micros: int


@dataclass(frozen=True)
class Inputs:
    """Everything one account's document is built from."""

    account_id: str
    currency: str
    period: Period
    profile: Profile
    tax: TaxProfile
    usage: Sequence[UsageRow] = ()
    subscriptions: Sequence[Subscription] = ()
    charges: Sequence[Charge] = ()
    rerates: Sequence[Rerate] = ()
    corrections: Sequence[Correction] = ()


class LineMaker:
    """Rounds and taxes lines for one currency's minor unit and one tax rate."""

    def __init__(self, tax: TaxProfile, decimals: int) -> None:
        self.tax = tax
        self.decimals = decimals

    def line(
        self,
        kind: str,
        description: str,
        exact_micros: int,
        *,
        quantity: Decimal = Decimal(1),
        unit: str = "item",
        calls: int = 0,
        billed_s: int = 0,
    ) -> Line:
        net = round_minor(exact_micros, self.decimals)
        tax = line_tax(net, self.tax.rate_ppm, self.decimals)
        return Line(kind, description, quantity, unit, exact_micros, net, tax, calls, billed_s)


def minutes(billed_s: int) -> Decimal:
    """Billed seconds as minutes with two decimals (half up) for the quantity column."""
    return (Decimal(billed_s) / _MINUTE).quantize(_CENT, rounding="ROUND_HALF_UP")


def usage_lines(make: LineMaker, rows: Iterable[UsageRow]) -> list[Line]:
    lines = []
    for row in sorted(rows, key=lambda r: r.group):
        if row.calls == 0 and row.billed_s == 0 and row.charged_micros == 0:
            continue  # only unanswered attempts: no "Calls to Other (0 calls)" line
        calls = "call" if row.calls == 1 else "calls"
        lines.append(
            make.line(
                "usage",
                f"Calls to {row.group} ({row.calls} {calls})",
                row.charged_micros,
                quantity=minutes(row.billed_s),
                unit="min",
                calls=row.calls,
                billed_s=row.billed_s,
            )
        )
    return lines


def subscription_description(sub: Subscription, decimals: int) -> str:
    """A subscription's line description before the days it ran ("DID rental, 3 x 2.00")."""
    if sub.quantity > 1:
        return f"{sub.description}, {sub.quantity} x {format_amount(sub.amount_micros, decimals)}"
    return sub.description


def subscription_lines(make: LineMaker, period: Period, subs: Iterable[Subscription]) -> list[Line]:
    """Recurring charges for the days of the period they ran, prorated by day."""
    lines = []
    for sub in sorted(subs, key=lambda s: s.id):
        days = active_days(period, sub.starts_on, sub.ends_on)
        if days <= 0:
            continue
        monthly = sub.amount_micros * sub.quantity
        description = subscription_description(sub, make.decimals)
        month = period.prorate_days
        if days != month:
            description += f" ({days} of {month} days)"
        months = (Decimal(days) / month).quantize(Decimal("0.0001"))
        lines.append(
            make.line(
                "subscription",
                description,
                prorate(monthly, days, month),
                quantity=months.normalize() if months != 1 else Decimal(1),
                unit="month",
            )
        )
    return lines


def charge_lines(make: LineMaker, charges: Iterable[Charge]) -> list[Line]:
    lines = []
    for c in sorted(charges, key=lambda c: c.id):
        sign = 1 if c.kind == "charge" else -1
        when = c.charge_date.isoformat()
        lines.append(make.line(c.kind, f"{c.description} ({when})", sign * c.amount_micros))
    return lines


def rerate_lines(make: LineMaker, rerates: Iterable[Rerate]) -> list[Line]:
    return [
        # The ledger moved old - new; the customer owes new - old.
        make.line("rerate", f"Re-rated calls ({r.cdrs} calls, run {r.run_id})", -r.ledger_micros)
        for r in sorted(rerates, key=lambda r: r.run_id)
        if r.ledger_micros != 0
    ]


def correction_lines(make: LineMaker, corrections: Iterable[Correction]) -> list[Line]:
    lines = []
    for c in sorted(corrections, key=lambda c: c.period):
        # Printed on the customer's invoice: "charges corrected recorded after" did
        # not read (a rerate changes charges, not the number of calls).
        what = f"{c.calls:+d} calls recorded" if c.calls else "charges corrected"
        lines.append(
            make.line(
                "correction",
                f"Usage correction for {c.period} ({what} after it was billed)",
                c.charged_micros,
                calls=c.calls,
            )
        )
    return lines


def usage_counts(
    period: Period, rows: Sequence[UsageRow], corrections: Sequence[Correction]
) -> tuple[Count, ...]:
    own = Count(
        period.label,
        period.start,
        period.end,
        sum(r.calls for r in rows),
        sum(r.charged_micros for r in rows),
    )
    earlier = [Count(c.period, c.start, c.end, c.calls, c.charged_micros) for c in corrections]
    return (own, *earlier)


def invoice_draft(inputs: Inputs, decimals: int, payment_terms_days: int) -> Draft:
    """A postpaid invoice: every line of the period, taxed."""
    make = LineMaker(inputs.tax, decimals)
    lines = [
        *usage_lines(make, inputs.usage),
        *subscription_lines(make, inputs.period, inputs.subscriptions),
        *charge_lines(make, inputs.charges),
        *rerate_lines(make, inputs.rerates),
        *correction_lines(make, inputs.corrections),
    ]
    counts = usage_counts(inputs.period, inputs.usage, inputs.corrections)
    draft = Draft(
        kind=Kind.INVOICE,
        account_id=inputs.account_id,
        currency=inputs.currency,
        period=inputs.period,
        tax=inputs.tax,
        customer=inputs.profile.customer(),
        lines=tuple(lines),
        usage=counts,
        charge_ids=tuple(c.id for c in inputs.charges),
        rerates=tuple((r.run_id, r.account_id, r.currency) for r in inputs.rerates),
        call_detail=inputs.profile.call_detail,
        payment_terms_days=payment_terms_days,
    )
    return _with_posting(draft, inputs)


def _with_posting(draft: Draft, inputs: Inputs) -> Draft:
    """What the ledger has not moved yet: the total minus the usage it already debited
    (call debits of this period and of corrected ones) and the rerates it applied."""
    moved = sum(u.charged_micros for u in draft.usage)
    moved -= sum(r.ledger_micros for r in inputs.rerates)
    return replace(draft, posting_micros=-(draft.total_micros - moved))
