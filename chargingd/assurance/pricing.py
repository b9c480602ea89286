"""Pricing what was never charged: under the account's plan, as credit control would.

A switch call from an unrated source (``rate = false``) has no cost of its own, and a
session live past its Session-Timeout has run usage nobody priced yet. Both are
priced with the plans of [rating] (sessions' Pricer: the account's tariff picks the
plan, the empty tariff the default plan), loaded once, on first use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from chargingd.assurance.model import Finding, Kind
from chargingd.core.config import RatingConfig
from chargingd.rating.model import RatingError
from chargingd.sessions.pricing import Pricer, load_pricer

TariffLookup = Callable[[str], Awaitable[str | None]]  # account id -> tariff, None: unknown


class CallPricer:
    def __init__(self, rating: RatingConfig, tariff_of: TariffLookup) -> None:
        self.rating = rating
        self.tariff_of = tariff_of
        self._pricer: Pricer | None = None

    def _plans(self) -> Pricer:
        if self._pricer is None:
            self._pricer = load_pricer(self.rating)
        return self._pricer

    def plan_call(
        self, plan_id: str, account_id: str, callee: str, start_ms: int, usage_s: int
    ) -> int | None:
        """The cost of ``usage_s`` under a plan id; None when the plan cannot price it."""
        if usage_s <= 0:
            return 0
        try:
            priced = self._plans().price(
                plan_id, subject=account_id, number=callee, start_ms=start_ms, usage_s=usage_s
            )
        except RatingError:
            return None
        return priced.cost_micros

    async def account_call(
        self, account_id: str, callee: str, start_ms: int, usage_s: int
    ) -> int | None:
        """The cost under the account's own plan; None when there is none."""
        tariff = await self.tariff_of(account_id)
        if tariff is None:
            return None
        plan_id = self._plans().plan_id_for(tariff)
        if plan_id is None:
            return None
        return self.plan_call(plan_id, account_id, callee, start_ms, usage_s)


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


async def price_unrated(
    findings: Iterable[Finding], unrated: set[str], pricer: CallPricer
) -> list[Finding]:
    """Findings about calls of an unrated source, with the money their switch duration
    costs under the account's plan (``rated_micros`` was 0); the others as they are."""
    out = []
    for f in findings:
        if f.source not in unrated or f.kind not in (Kind.UNCHARGED_CALL, Kind.DURATION_MISMATCH):
            out.append(f)
            continue
        d = f.detail
        when = _ms(d["answer"] or d["start"])
        cost = await pricer.account_call(f.account_id, d["callee"], when, d["switch_duration_s"])
        detail = dict(d, rated_micros=cost, rated_by="assurance: the account's plan")
        if cost is None:
            detail["rated_by"] = "not priced: the account has no plan that prices the call"
            cost = 0
        money = cost if f.kind is Kind.UNCHARGED_CALL else cost - int(d["live_cost_micros"])
        out.append(dataclasses.replace(f, money_micros=money, detail=detail))
    return out
