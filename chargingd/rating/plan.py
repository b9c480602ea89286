"""TariffPlan: a loaded tariff with its compiled engine, and the public pricing API.

`rate` prices a call; `max_usage` answers how long an amount lasts. Both are pure and
fast (no I/O); build one at start-up and share it. Dependencies point one way:
model (data) <- engine (the walk) <- price (cost, inverse rating) <- plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from chargingd.rating.engine import Engine
from chargingd.rating.model import CallCost, Tariff
from chargingd.rating.price import max_usage, price_call


@dataclass
class TariffPlan(Tariff):
    """A loaded tariff: destinations, plans, profiles, the pricing mode, its engine."""

    _engine: Engine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._engine = Engine(self)

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
        result: int = max_usage(
            self._engine,
            tenant or self.default_tenant,
            category,
            subject,
            destination,
            start,
            amount_micros,
            self.max_call_ns if limit_ns is None else limit_ns,
        )
        return result
