"""What a backdated subscription change means for invoices already issued.

Issued invoices never change (a trigger refuses it). A subscription that starts or
ends on a day an issued invoice's period covers is therefore billed by that invoice as
it was when the invoice was issued, and later runs skip the period: ending one back to
a day already invoiced leaves the customer billed for days it no longer runs (a credit
note gives them back), starting or extending one into such a period leaves days never
billed (a one-off charge bills them). ``effects`` finds those invoices and the
difference, so `ctl subscription add|end` (admin ``subscription.add|end``) answers
with warnings saying what to issue instead of accepting in silence.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chargingd.billing.db import Conn
from chargingd.invoicing.build import LineMaker, subscription_description, subscription_lines
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import Subscription, money
from chargingd.invoicing.periods import Period, window
from chargingd.invoicing.tax import TaxProfile


@dataclass(frozen=True)
class IssuedDifference:
    """One issued invoice that bills a subscription otherwise than it runs now."""

    invoice: str
    period: str
    currency: str
    decimals: int
    billed_net: int  # what the invoice billed for the subscription (0: nothing)
    billed_gross: int  # the same, tax included
    due_net: int  # what it would bill for it now
    due_gross: int

    def to_json(self) -> dict[str, Any]:
        d = self.decimals
        return {
            "invoice": self.invoice,
            "period": self.period,
            "currency": self.currency,
            "billed": money(self.billed_gross, d),
            "due_now": money(self.due_gross, d),
            "difference": money(self.due_gross - self.billed_gross, d),
        }

    def warning(self, sub: Subscription) -> str:
        d, cur = self.decimals, self.currency
        what = f"subscription {sub.id} ({sub.description})"
        if self.billed_gross > self.due_gross:
            over = money(self.billed_gross - self.due_gross, d)
            return (
                f"invoice {self.invoice} (period {self.period}) is issued and billed"
                f" {money(self.billed_gross, d)} {cur} (tax included) of {what}; as it runs"
                f" now it would be {money(self.due_gross, d)} {cur}. Issued invoices never"
                f" change: credit {over} {cur} with `chargingd invoice credit-note"
                f' {self.invoice} --amount {over} --reason "{what} ends'
                f' {sub.ends_on}"`'
            )
        short_net = money(self.due_net - self.billed_net, d)
        return (
            f"invoice {self.invoice} (period {self.period}) is issued and billed"
            f" {money(self.billed_gross, d)} {cur} (tax included) of {what}; as it runs"
            f" now it would be {money(self.due_gross, d)} {cur}. Issued invoices never change"
            f" and later runs do not bill that period again: bill the {short_net} {cur}"
            f" (net) with `chargingd ctl charge add {sub.account_id} {short_net}"
            f' --description "{sub.description}, {self.period}"`'
        )


def _period(label: str, start: datetime, end: datetime, time_zone: str) -> Period:
    """An issued invoice's period, prorated as it was: a period ends on its billing day;
    one that starts elsewhere is a transition period (the billing day changed), its
    subscriptions prorated by the days of the regular period of its label."""
    zone = zoneinfo.ZoneInfo(time_zone)
    first, last = start.astimezone(zone), end.astimezone(zone)
    regular = window(label, last.day, time_zone) if last.day <= 28 else None
    if regular is None or regular.end != last or regular.start == first:
        return Period(label, first.day, first, last)
    return regular.transition(first)


def _billed(
    lines: Sequence[tuple[str, int, int]], base: str, expected: str, expected_net: int
) -> tuple[int, int]:
    """(net, tax) of the invoice's line of this subscription: the line the subscription
    as it was would have had (its description and amount: two subscriptions may share a
    description), else one with that description, else one whose description is the
    subscription's with the days it ran; (0, 0) when the invoice has none (issued
    before the subscription was)."""
    for description, net, tax in lines:
        if description == expected and net == expected_net:
            return net, tax
    for description, net, tax in lines:
        if description == expected:
            return net, tax
    for description, net, tax in lines:
        if description == base or description.startswith(base + " ("):
            return net, tax
    return 0, 0


async def effects(
    books: Books, before: Subscription | None, after: Subscription
) -> list[IssuedDifference]:
    """Issued invoices of the subscription's account whose period it ran (or runs) some
    day of, that bill it otherwise than ``after`` would be billed."""
    first = after.starts_on if before is None else min(before.starts_on, after.starts_on)

    async def work(conn: Conn) -> list[Any]:
        cur = await conn.execute(
            "SELECT i.id, i.number, i.period, i.period_start, i.period_end, i.currency, i.tax"
            " FROM invoices i WHERE i.kind = 'invoice' AND i.account_id = %s"
            " AND i.period_end > %s ORDER BY i.period_start, i.id",
            (after.account_id, first - timedelta(days=1)),
        )
        invoices = list(await cur.fetchall())
        cur = await conn.execute(
            "SELECT invoice_id, description, amount_micros, tax_micros FROM invoice_lines"
            " WHERE kind = 'subscription' AND invoice_id = ANY(%s) ORDER BY invoice_id, line_no",
            ([row[0] for row in invoices],),
        )
        lines: dict[int, list[tuple[str, int, int]]] = {}
        for inv_id, description, net, tax in await cur.fetchall():
            lines.setdefault(int(inv_id), []).append((description, int(net), int(tax)))
        return [(row, lines.get(int(row[0]), [])) for row in invoices]

    found: list[IssuedDifference] = []
    for row, inv_lines in await books.db.run(work):
        _, number, label, start, end, currency, tax = row
        period = _period(label, start, end, books.cfg.time_zone)
        decimals = books.cfg.decimals(currency)
        make = LineMaker(TaxProfile.from_json(tax), decimals)
        was = subscription_lines(make, period, [before]) if before is not None else []
        now = subscription_lines(make, period, [after])
        if not was and not now:
            continue
        base = subscription_description(after, decimals)
        expected, expected_net = (was[0].description, was[0].amount_micros) if was else ("", 0)
        billed_net, billed_tax = _billed(inv_lines, base, expected, expected_net)
        due_net = now[0].amount_micros if now else 0
        due_tax = now[0].tax_micros if now else 0
        if (billed_net, billed_tax) != (due_net, due_tax):
            found.append(
                IssuedDifference(
                    number,
                    label,
                    currency,
                    decimals,
                    billed_net,
                    billed_net + billed_tax,
                    due_net,
                    due_net + due_tax,
                )
            )
    return found


def answer(diffs: Sequence[IssuedDifference], sub: Subscription) -> dict[str, Any]:
    """The part of an admin answer that reports them (nothing when there are none)."""
    if not diffs:
        return {}
    return {
        "issued_invoices": [d.to_json() for d in diffs],
        "warnings": [d.warning(sub) for d in diffs],
    }
