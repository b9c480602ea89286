"""RateCard: one call's rating, resolved once; price and max-usage from it (pure).

Credit control rates the same call several times per request (the first grant, the
usage a hold pays for, the Session-Timeout the available money buys). A card
resolves the subject and destination once and finds the rate in force at the start
and how long it stays in force (the *horizon*: the next period boundary or profile
activation). A price whose billed usage ends before the horizon depends only on the
destination rate and the usage, so it is walked without period look-ups and kept
per (destination rate, usage): calls to one destination in one period share it.
Everything else takes the engine's full walk, so answers never differ from
TariffPlan.rate / TariffPlan.max_usage (tests/rating/test_card.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

from chargingd.rating.engine import Engine, _Match
from chargingd.rating.model import CallCost
from chargingd.rating.price import Call, InvalidUsage, max_usage_match, price_match

MAX_PRICES = 65_536  # remembered (destination rate, usage) prices, the oldest evicted


@dataclass(frozen=True, slots=True)
class _Priced:
    cost_micros: int
    billed_ns: int
    decimals: int
    capped: bool


class RateCard:
    """What one call costs from its start; build with TariffPlan.card()."""

    __slots__ = ("_engine", "_first", "_match", "call", "horizon_ns")

    def __init__(self, engine: Engine, call: Call) -> None:
        """Resolve the call (RatingError when its subject or destination has no rate)."""
        self._engine = engine
        self.call = call
        self._match: _Match = engine.resolve(
            call.tenant, call.category, call.subject, call.number, None, when_ns=call.start_ns
        )
        self._first, boundary = engine.at(self._match.entries, call.start_ns)
        switch = engine.next_switch(call.start_ns)
        if switch is not None:
            boundary = min(boundary, switch)
        # Usage (from the call start) that stays in the start's rate.
        self.horizon_ns = boundary - call.start_ns

    @property
    def destination_id(self) -> str:
        return self._match.destination_id

    @property
    def plan_id(self) -> str:
        return self._match.plan.id

    def price(self, usage_ns: int) -> CallCost:
        """The cost of `usage_ns` (no breakdown): TariffPlan.rate(breakdown=False)."""
        if usage_ns < 0:
            raise InvalidUsage(f"usage must not be negative: {usage_ns}")
        dr = self._first.dr
        target = max(usage_ns, dr.src.min_duration_ns)
        if usage_ns == 0 or target > self.horizon_ns:
            return price_match(self._engine, self.call, self._match, usage_ns)
        key = (id(dr), target)
        memo = self._engine.card_prices
        known = memo.get(key)
        if known is None or known[0] is not dr:
            cost = price_match(
                self._engine,
                self.call,
                self._match,
                usage_ns,
                horizon_ns=self.horizon_ns,
                first=self._first,
            )
            known = (dr, _Priced(cost.cost_micros, cost.billed_ns, cost.decimals, cost.capped))
            if len(memo) >= MAX_PRICES:
                del memo[next(iter(memo))]
            memo[key] = known
        found = known[1]
        return CallCost(
            found.cost_micros,
            usage_ns,
            found.billed_ns,
            destination_id=self._match.destination_id,
            plan_id=self._match.plan.id,
            spans=(),
            matched_prefix=self._match.prefix,
            subject=self._match.subject,
            decimals=found.decimals,
            capped=found.capped,
            tariff_id=self._engine.tariff.id,
            mode=self._engine.mode,
        )

    def max_usage(self, amount_micros: int, limit_ns: int | None = None) -> int:
        """The longest usage (ns) `amount_micros` pays for, capped at `limit_ns` (default:
        the tariff's max call duration): TariffPlan.max_usage."""
        limit = self._engine.tariff.max_call_ns if limit_ns is None else limit_ns
        return max_usage_match(
            self._engine,
            self.call,
            self._match,
            amount_micros,
            limit,
            horizon_ns=self.horizon_ns,
            first=self._first,
            price=self.price,
        )
