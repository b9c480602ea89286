"""What a rerate would change: each answered CDR priced again, and what its charge
becomes (``target_charge``). Reads the billing database; changes nothing.

The rule for the money (DESIGN invariant 7): a rerate moves only the difference
between the new price and what the ledger charged for the call.

- A call the ledger charged in full (``live``, ``mediated_debit``; charged >= cost)
  is charged the new price: a cut refunds the difference, a rise debits it.
- A call the ledger charged less than its price on purpose (``capped``, forgiven
  within a cut tolerance: charged < cost, or a charge_reason other than "", "debt",
  "rerate", "overrun" and "provisional") is never charged more than it was: the new
  charge is the lower of the new price and what it charged, and it keeps its reason
  through later rerates.
- A call the ledger never charged (``recorded_only``, ``none``) moves no money: its
  cost changes, its charge stays 0. A refund never exceeds what was charged.

A plan that prices in another currency than a CDR's prices none of them (counted as
unrated, the reason in ``errors``), as live credit control refuses such a tariff.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from chargingd.billing.cdr import LEDGER_CHARGES
from chargingd.billing.db import BillingDB, Conn
from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.rating.durations import billed_seconds, seconds_to_ns
from chargingd.rating.plan import TariffPlan

# (account id, the CDR's source) -> the plan that prices it now, None: no plan
PlanFor = Callable[[str, str], Awaitable[TariffPlan | None]]


class RerateError(Exception):
    """A rerate that cannot run (bad dates, CDRs changed meanwhile); nothing changed."""

    code = "rerate_error"


# charge_reason values of a call the ledger charged its whole price (a live call's
# "overrun" debt and "provisional" stale charge are its rated cost in full).
FULL_CHARGE_REASONS = frozenset({"", "debt", "rerate", "overrun", "provisional"})


def held_back(cost_micros: int, charged_micros: int, reason: str) -> bool:
    """The ledger took less than the price on purpose: a rerate never takes more."""
    return charged_micros < cost_micros or reason not in FULL_CHARGE_REASONS


def target_charge(
    charge: str, cost_micros: int, charged_micros: int, new_cost: int, reason: str = ""
) -> int:
    """What a call's charge becomes under a new price (see the module docstring)."""
    if charge not in LEDGER_CHARGES:
        return charged_micros
    if held_back(cost_micros, charged_micros, reason):
        return min(new_cost, charged_micros)
    return new_cost


@dataclass(frozen=True)
class Change:
    cdr_id: int
    account_id: str
    currency: str
    old_micros: int  # cost
    new_micros: int
    new_billed_s: int
    source: str = ""
    call_id: str = ""
    charge: str = ""
    old_charged: int = 0
    new_charged: int = 0
    keep_reason: str = ""  # the CDR's charge_reason to keep after it ("": the ledger's)


@dataclass
class AccountDiff:
    """One account's totals in one currency over the rerated CDRs."""

    account_id: str
    currency: str
    cdrs: int = 0
    unrated: int = 0  # could not be priced (no plan, unknown destination): unchanged
    old_micros: int = 0
    new_micros: int = 0
    old_charged: int = 0
    new_charged: int = 0

    @property
    def diff_micros(self) -> int:
        return self.new_micros - self.old_micros

    @property
    def ledger_micros(self) -> int:
        """What the ledger will move: > 0 debits the account, < 0 refunds it."""
        return self.new_charged - self.old_charged

    def to_json(self) -> dict[str, Any]:
        """Amounts with at least the currency's minor-unit decimals (more where they have
        them, to the micro-unit: a rerate's sub-cent differences stay): 52 JPY, 0.52 EUR."""
        places = minor_unit(self.currency)
        return {
            "account_id": self.account_id,
            "currency": self.currency,
            "cdrs": self.cdrs,
            "unrated": self.unrated,
            "old": format_amount(self.old_micros, places),
            "new": format_amount(self.new_micros, places),
            "difference": format_amount(self.diff_micros, places),
            "charged_old": format_amount(self.old_charged, places),
            "charged_new": format_amount(self.new_charged, places),
            "ledger": format_amount(self.ledger_micros, places),
        }


@dataclass
class Report:
    start: datetime
    end: datetime
    account_id: str | None
    plan: str
    accounts: dict[tuple[str, str], AccountDiff] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # reason -> CDRs

    def run_id(self) -> str:
        """Derived from the parameters and every change: the same run has the same id."""
        h = hashlib.sha256()
        h.update(f"{self.start.isoformat()}|{self.end.isoformat()}|{self.account_id}|".encode())
        h.update(self.plan.encode())
        for c in self.changes:
            h.update(f"|{c.cdr_id}:{c.old_micros}:{c.new_micros}:{c.new_billed_s}".encode())
            h.update(f":{c.old_charged}:{c.new_charged}".encode())
        return "rr-" + h.hexdigest()[:20]


def parse_when(text: str, *, end: bool = False) -> datetime:
    """YYYY-MM-DD (UTC; as an end, the whole day is included) or an ISO date-time."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RerateError(f"not a date: {text!r} (YYYY-MM-DD or ISO 8601)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_SELECT = """
SELECT id, account_id, currency, callee, answer_time, duration_s, cost_micros,
    charged_micros, charge, source, call_id, charge_reason
FROM cdrs
WHERE start_time >= %s AND start_time < %s AND (%s::text IS NULL OR account_id = %s)
  AND answer_time IS NOT NULL
ORDER BY account_id, id
"""


@dataclass(frozen=True)
class _Row:
    cdr_id: int
    account_id: str
    currency: str
    callee: str
    answer: datetime
    duration_s: int
    cost: int
    charged: int
    charge: str
    source: str
    call_id: str
    reason: str

    def keep_reason(self) -> str:
        """A held-back call keeps saying so ("capped" when it had no reason yet)."""
        if self.charge in LEDGER_CHARGES and held_back(self.cost, self.charged, self.reason):
            return self.reason if self.reason not in FULL_CHARGE_REASONS else "capped"
        return ""


async def compute(
    db: BillingDB,
    plan_for: PlanFor,
    *,
    start: datetime,
    end: datetime,
    account_id: str | None = None,
    plan_label: str = "",
    tenant: str = "",
    category: str = "",
    source_rating: Mapping[str, tuple[str, str]] | None = None,
) -> Report:
    """Price the answered CDRs started in [start, end) again; change nothing.

    ``source_rating``: a mediation source's (tenant, category), used for its CDRs
    when ``tenant`` / ``category`` are not given (mediation priced them with those);
    any other CDR is priced with the plan's tenant and category "call".
    """
    if end <= start:
        raise RerateError("--to must be after --from")
    report = Report(start, end, account_id, plan_label)

    async def fetch(conn: Conn) -> list[_Row]:
        cur = await conn.execute(_SELECT, (start, end, account_id, account_id))
        return [_Row(*row) for row in await cur.fetchall()]

    for row in await db.run(fetch):
        diff = report.accounts.setdefault(
            (row.account_id, row.currency), AccountDiff(row.account_id, row.currency)
        )
        own_tenant, own_category = (source_rating or {}).get(row.source, ("", ""))
        price = await _price(
            report, diff, plan_for, row, tenant or own_tenant, category or own_category or "call"
        )
        if price is None:
            continue
        new_cost, billed_s = price
        new_charged = target_charge(row.charge, row.cost, row.charged, new_cost, row.reason)
        diff.cdrs += 1
        diff.old_micros += row.cost
        diff.new_micros += new_cost
        diff.old_charged += row.charged
        diff.new_charged += new_charged
        if new_cost != row.cost or new_charged != row.charged:
            report.changes.append(
                Change(
                    row.cdr_id, row.account_id, row.currency, row.cost, new_cost, billed_s,
                    row.source, row.call_id, row.charge, row.charged, new_charged,
                    row.keep_reason(),
                )
            )  # fmt: skip
    return report


async def _price(
    report: Report, diff: AccountDiff, plan_for: PlanFor, row: _Row, tenant: str, category: str
) -> tuple[int, int] | None:
    """(new cost, billed seconds), or None counted as unrated."""
    plan = await plan_for(row.account_id, row.source)
    if plan is None:
        diff.unrated += 1
        report.errors["no tariff plan"] = report.errors.get("no tariff plan", 0) + 1
        return None
    if plan.currency and plan.currency != row.currency:
        # Live credit control refuses such a tariff: its prices are not this money.
        reason = f"plan prices in {plan.currency}, the CDRs are in {row.currency}"
        diff.unrated += 1
        report.errors[reason] = report.errors.get(reason, 0) + 1
        return None
    try:
        price = plan.rate(
            subject=row.account_id,
            destination=row.callee.lstrip("+"),
            start=row.answer,
            usage_ns=seconds_to_ns(row.duration_s),
            tenant=tenant,
            category=category,
        )
    except Exception as exc:  # a rating refusal leaves the CDR as it is, counted
        reason = str(getattr(exc, "code", type(exc).__name__))
        diff.unrated += 1
        report.errors[reason] = report.errors.get(reason, 0) + 1
        return None
    return price.cost_micros, billed_seconds(price.billed_ns)
