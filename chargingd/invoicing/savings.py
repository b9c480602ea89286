"""Opportunities for savings: an account's calls of a period re-priced under each plan.

Every answered call is priced again with the rating engine under every loaded plan
(``[rating] plans`` and the default plan), exactly as live rating would price it
(answer time, talk time, the callee's number). Nothing is written. A plan that
cannot price a call (no rate for its destination) is reported with the number of
calls it could not price, and is only comparable when it priced them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.invoicing.model import currency_decimals, money
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

log = logging.getLogger("chargingd.invoicing")

_NS = 1_000_000_000


@dataclass
class PlanPrice:
    plan: str
    currency: str
    calls: int = 0
    unpriced: int = 0
    total_micros: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def comparable(self) -> bool:
        return self.unpriced == 0


@dataclass
class Savings:
    account_id: str
    start: datetime
    end: datetime
    current_plan: str
    calls: int = 0
    charged_micros: int = 0  # what the ledger moved for these calls
    currency: str = ""
    plans: list[PlanPrice] = field(default_factory=list)

    def _comparable(self, p: PlanPrice) -> bool:
        same_currency = not p.currency or not self.currency or p.currency == self.currency
        return p.comparable and same_currency

    def to_json(self) -> dict[str, Any]:
        rows = []
        for p in sorted(self.plans, key=lambda p: (not self._comparable(p), p.total_micros)):
            saving = self.charged_micros - p.total_micros
            comparable = self._comparable(p)
            rows.append(
                {
                    "plan": p.plan,
                    "currency": p.currency,
                    "total": money(p.total_micros, currency_decimals(p.currency)),
                    "saving": money(saving, currency_decimals(p.currency)) if comparable else None,
                    "cheaper": comparable and saving > 0,
                    "unpriced_calls": p.unpriced,
                    "unpriced_reasons": p.reasons,
                }
            )
        return {
            "account": self.account_id,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "current_plan": self.current_plan,
            "calls": self.calls,
            "charged": money(self.charged_micros, currency_decimals(self.currency)),
            "currency": self.currency,
            "plans": rows,
        }


_CALLS = """
SELECT callee, answer_time, duration_s, charged_micros, currency FROM cdrs
WHERE account_id = %s AND start_time >= %s AND start_time < %s AND answer_time IS NOT NULL
  AND charge <> 'recorded_only'
ORDER BY start_time
"""


def _price(plan: TariffPlan, account_id: str, callee: str, answer: datetime, usage_s: int) -> int:
    cost = plan.rate(
        subject=account_id,
        destination=callee.lstrip("+"),
        start=answer,
        usage_ns=usage_s * _NS,
        breakdown=False,
    )
    return int(cost.cost_micros)


async def savings(
    db: BillingDB,
    plans: Mapping[str, TariffPlan],
    *,
    account_id: str,
    start: datetime,
    end: datetime,
    current_plan: str = "",
) -> Savings:
    """Price the account's answered calls in [start, end) under every plan."""
    result = Savings(account_id, start, end, current_plan)
    prices = {pid: PlanPrice(pid, plan.currency) for pid, plan in sorted(plans.items())}

    async def work(conn: Conn) -> None:
        async with conn.cursor(name="savings_calls") as cur:
            await cur.execute(_CALLS, (account_id, start, end))
            async for callee, answer, duration_s, charged, currency in cur:
                result.calls += 1
                result.charged_micros += int(charged)
                result.currency = currency
                for pid, plan in plans.items():
                    _add(prices[pid], plan, account_id, callee, answer, int(duration_s))

    await db.run(work)
    result.plans = list(prices.values())
    return result


def _add(
    row: PlanPrice, plan: TariffPlan, account_id: str, callee: str, answer: datetime, usage_s: int
) -> None:
    try:
        row.total_micros += _price(plan, account_id, callee, answer, usage_s)
        row.calls += 1
    except RatingError as exc:
        reason = str(getattr(exc, "code", type(exc).__name__))
        row.unpriced += 1
        row.reasons[reason] = row.reasons.get(reason, 0) + 1


def render_text(s: Savings) -> str:
    data = s.to_json()
    lines = [
        f"account {s.account_id}: {s.calls} answered calls from {s.start.date()} to"
        f" {s.end.date()} (end excluded), charged {data['charged']} {s.currency}"
        f" (current plan: {s.current_plan or 'default'})",
        f"{'plan':<24} {'total':>14} {'saving':>14}  note",
    ]
    for row in data["plans"]:
        if row["currency"] and s.currency and row["currency"] != s.currency:
            note = f"prices in {row['currency']}"
        elif row["unpriced_calls"]:
            note = f"cannot price {row['unpriced_calls']} calls"
        else:
            note = "cheaper" if row["cheaper"] else ""
        saving = row["saving"] if row["saving"] is not None else "-"
        lines.append(f"{row['plan']:<24} {row['total']:>14} {saving:>14}  {note}")
    return "\n".join(lines) + "\n"
