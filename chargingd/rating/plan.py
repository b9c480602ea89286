"""TariffPlan: a loaded tariff with its compiled engine, and the public pricing API.

`rate` prices a call; `max_usage` answers how long an amount lasts; `card` resolves a
call once and answers both for it (what credit control uses: several questions per
request about one call). All are pure and fast (no I/O); build one plan at start-up
and share it. Dependencies point one way: model (data) <- engine (the walk) <- price
(cost, inverse rating) <- card <- plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from chargingd.rating.card import RateCard
from chargingd.rating.engine import Engine, epoch_ns
from chargingd.rating.model import CallCost, Tariff
from chargingd.rating.price import Call, price_call


@dataclass
class TariffPlan(Tariff):
    """A loaded tariff: destinations, plans, profiles, the pricing mode, its engine."""

    _engine: Engine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._engine = Engine(self)
        # Credit control asks this per rating question: the compiled engine's method
        # itself, not an interpreted method around it (this class is not compiled).
        vars(self)["rating_subject"] = self._engine.rating_subject

    def card(
        self,
        *,
        subject: str,
        destination: str,
        start_ns: int,
        tenant: str = "",
        category: str = "call",
    ) -> RateCard:
        """A call resolved once (epoch ns start): its price and max-usage for any usage
        or amount, equal to rate()/max_usage(); RatingError when it has no rate."""
        call = Call(tenant or self.default_tenant, category, subject, destination, start_ns)
        return RateCard(self._engine, call)

    def rating_subject(self, subject: str, *, tenant: str = "", category: str = "call") -> str:
        """`subject` when it has a rating profile, else *any: a subject without one is
        resolved exactly as *any is (Engine._resolve moves on to *any), so its cards
        answer for every such subject."""
        return self._engine.rating_subject(subject, tenant=tenant, category=category)

    def rate(
        self,
        *,
        subject: str,
        destination: str,
        start: datetime,
        usage_ns: int,
        tenant: str = "",
        category: str = "call",
        breakdown: bool = True,
    ) -> CallCost:
        """Price a call of `usage_ns` starting at `start` (timezone-aware); without
        `breakdown` the spans are left out (credit control needs the total only)."""
        if not breakdown and usage_ns >= 0:
            card = self.card(
                subject=subject,
                destination=destination,
                start_ns=epoch_ns(start),
                tenant=tenant,
                category=category,
            )
            return card.price(usage_ns)
        result: CallCost = price_call(
            self._engine,
            tenant or self.default_tenant,
            category,
            subject,
            destination,
            start,
            usage_ns,
            breakdown=breakdown,
        )
        return result

    def max_usage(
        self,
        *,
        subject: str,
        destination: str,
        start: datetime,
        amount_micros: int,
        tenant: str = "",
        category: str = "call",
        limit_ns: int | None = None,
    ) -> int:
        """The longest usage (ns) `amount_micros` pays for, capped at `limit_ns`/max_call_ns."""
        card = self.card(
            subject=subject,
            destination=destination,
            start_ns=epoch_ns(start),
            tenant=tenant,
            category=category,
        )
        return card.max_usage(amount_micros, limit_ns)
