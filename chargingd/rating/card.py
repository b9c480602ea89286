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

from typing import Final

from chargingd.rating.engine import Engine
from chargingd.rating.model import CallCost
from chargingd.rating.price import Call, InvalidUsage, max_usage_match, price_match

MAX_PRICES = 65_536  # remembered (destination rate, usage) prices, the oldest evicted


class Cost:
    """A price without its breakdown (RateCard.cost_at): a plain class with its own
    __init__ (a dataclass's is interpreted even compiled), built per request."""

    __slots__ = ("billed_ns", "capped", "cost_micros", "decimals")

    def __init__(self, cost_micros: int, billed_ns: int, decimals: int, capped: bool) -> None:
        self.cost_micros: Final = cost_micros
        self.billed_ns: Final = billed_ns
        self.decimals: Final = decimals
        self.capped: Final = capped


class RateCard:
    """What one call costs from its start; build with TariffPlan.card()."""

    __slots__ = (
        "_boundary_ns",
        "_engine",
        "_first",
        "_last_call",
        "_match",
        "call",
        "horizon_ns",
        "until_ns",
    )

    def __init__(self, engine: Engine, call: Call) -> None:
        """Resolve the call (RatingError when its subject or destination has no rate)."""
        self._engine = engine
        self.call = call
        self._last_call = call
        self._match, timed = engine.resolve_timed(
            call.tenant, call.category, call.subject, call.number, call.start_ns
        )
        self._first, boundary = engine.at(self._match.entries, call.start_ns)
        switch = engine.next_switch(call.start_ns)
        if switch is not None:
            boundary = min(boundary, switch)
        # Usage (from the call start) that stays in the start's rate.
        self.horizon_ns = boundary - call.start_ns
        self._boundary_ns = boundary
        # Calls to the same number starting in [call.start_ns, until_ns) have the same
        # resolution and the same rate at their start, with the same boundary: Engine.at
        # finds them in the same segment of the same local day, before the same
        # activation switch. When a plan with period-bound destinations decided the
        # resolution, it holds until one of those bindings turns (in)active.
        if timed:
            stable = engine.bindings_stable_until(call.number, call.start_ns)
            self.until_ns = min(boundary, stable)
        else:
            self.until_ns = boundary

    def covers(self, start_ns: int) -> bool:
        """Whether this card prices a call to its number starting at ``start_ns``
        exactly as a card built for that start would (see price_at)."""
        begin = self.call.start_ns
        if start_ns == begin:
            return True
        return begin < start_ns < self.until_ns

    def _call_at(self, start_ns: int) -> Call:
        """The call to this number starting at start_ns (the last one kept: a request
        asks several questions of one call)."""
        call = self._last_call
        if start_ns != call.start_ns:
            call = Call(call.tenant, call.category, call.subject, call.number, start_ns)
            self._last_call = call
        return call

    @property
    def destination_id(self) -> str:
        return self._match.destination_id

    @property
    def plan_id(self) -> str:
        return self._match.plan.id

    def price(self, usage_ns: int) -> CallCost:
        """The cost of `usage_ns` (no breakdown): TariffPlan.rate(breakdown=False)."""
        return self.price_at(self.call.start_ns, usage_ns)

    def price_at(self, start_ns: int, usage_ns: int) -> CallCost:
        """price() of the call to this number starting at ``start_ns`` (covers() it)."""
        found = self.cost_at(start_ns, usage_ns)
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

    def cost_at(self, start_ns: int, usage_ns: int) -> Cost:
        """price_at()'s figures without the CallCost (credit control's question)."""
        if usage_ns < 0:
            raise InvalidUsage(f"usage must not be negative: {usage_ns}")
        dr = self._first.dr
        target = max(usage_ns, dr.src.min_duration_ns)
        horizon_ns = self._boundary_ns - start_ns
        if usage_ns == 0 or target > horizon_ns:
            cost = price_match(self._engine, self._call_at(start_ns), self._match, usage_ns)
            return Cost(cost.cost_micros, cost.billed_ns, cost.decimals, cost.capped)
        key = (id(dr), target)
        memo = self._engine.card_prices
        known = memo.get(key)
        if known is None or known[0] is not dr:
            cost = price_match(
                self._engine,
                self._call_at(start_ns),
                self._match,
                usage_ns,
                horizon_ns=horizon_ns,
                first=self._first,
            )
            known = (dr, Cost(cost.cost_micros, cost.billed_ns, cost.decimals, cost.capped))
            if len(memo) >= MAX_PRICES:
                del memo[next(iter(memo))]
            memo[key] = known
        found: Cost = known[1]
        return found

    def max_usage(self, amount_micros: int, limit_ns: int | None = None) -> int:
        """The longest usage (ns) `amount_micros` pays for, capped at `limit_ns` (default:
        the tariff's max call duration): TariffPlan.max_usage."""
        return self.max_usage_at(self.call.start_ns, amount_micros, limit_ns)

    def max_usage_at(self, start_ns: int, amount_micros: int, limit_ns: int | None = None) -> int:
        """max_usage() of the call to this number starting at ``start_ns`` (covers() it)."""
        limit = self._engine.tariff.max_call_ns if limit_ns is None else limit_ns
        call = self._call_at(start_ns)
        # The card's own price (memoised) for its own start; else price_match's (equal).
        price = self.price if start_ns == self.call.start_ns else None
        return max_usage_match(
            self._engine,
            call,
            self._match,
            amount_micros,
            limit,
            horizon_ns=self._boundary_ns - start_ns,
            first=self._first,
            price=price,
            walks=self._engine.card_walks,
            owner=self,
        )
