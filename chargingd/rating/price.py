"""Pricing a call and inverse rating (max usage) on top of the engine's walk (pure)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import ClassVar, Final

from chargingd.rating.engine import (
    Engine,
    _DestRate,
    _Entry,
    _Match,
    _Piece,
    _Slot,
    display_cost,
    epoch_ns,
    from_epoch_ns,
    pow10,
    slot_at,
)
from chargingd.rating.model import (
    CallCost,
    CostSpan,
    MaxCostStrategy,
    RatingError,
    RoundingMethod,
)

_MICROS = 1_000_000  # micro-units per currency unit
MAX_REMEMBERED = 65_536  # boundary-free answers kept per engine (the oldest evicted)
# full walks' answers kept per engine (the oldest evicted): more than the calls whose
# Interims come between one call's Interim and its Stop (the kit: blocks of 1,000)
MAX_WALKS = 8_192
# The enum members the walks compare with, read once (a compiled module reads a member
# of an interpreted enum class through the class's attribute look-up every time).
_DOWN: Final = RoundingMethod.DOWN
_UP: Final = RoundingMethod.UP
_FREE: Final = MaxCostStrategy.FREE
_DISCONNECT: Final = MaxCostStrategy.DISCONNECT


class InvalidUsage(RatingError):
    code: ClassVar[str] = "invalid_usage"


def _rounding(
    piece: _Piece, rank: int, decimals: int, method: RoundingMethod
) -> tuple[int, int, RoundingMethod]:
    """CGRateS GetLongestRounding: the rounding of the first span of the largest rank
    (its RoundingDecimals as written: one of 0 never rounds the total there), as
    (rank, decimals, method)."""
    dr = piece.entry.dr
    if dr.rank > rank:
        return dr.rank, dr.decimals, dr.method
    return rank, decimals, method


class Call:
    """Who calls where, from when: what a walk re-resolves with at an activation switch.
    Built per call start (RateCard): a plain class with its own __init__ (a frozen
    dataclass's is interpreted even compiled), read-only (Final), with a dataclass's
    equality, hash and repr."""

    __slots__ = ("category", "number", "start_ns", "subject", "tenant")

    def __init__(
        self, tenant: str, category: str, subject: str, number: str, start_ns: int
    ) -> None:
        self.tenant: Final = tenant
        self.category: Final = category
        self.subject: Final = subject
        self.number: Final = number
        self.start_ns: Final = start_ns

    def _values(self) -> tuple[str, str, str, str, int]:
        return (self.tenant, self.category, self.subject, self.number, self.start_ns)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Call)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"Call(tenant={self.tenant!r}, category={self.category!r}, "
            f"subject={self.subject!r}, number={self.number!r}, start_ns={self.start_ns!r})"
        )

    def rematcher(self, engine: Engine) -> Callable[[int, int], _Match | None] | None:
        return engine.rematcher(
            self.tenant, self.category, self.subject, self.number, self.start_ns
        )


def price_call(
    engine: Engine,
    tenant: str,
    category: str,
    subject: str,
    number: str,
    start: datetime,
    usage_ns: int,
    *,
    breakdown: bool = True,
) -> CallCost:
    """Price one call: walk its spans, sum, round once, apply the *free max cost.
    Without `breakdown` the result carries no spans (the same total, cheaper)."""
    if usage_ns < 0:
        raise InvalidUsage(f"usage must not be negative: {usage_ns}")
    start_ns = epoch_ns(start)
    match = engine.resolve(tenant, category, subject, number, start, when_ns=start_ns)
    call = Call(tenant, category, subject, number, start_ns)
    return price_match(engine, call, match, usage_ns, breakdown=breakdown, start=start)


def price_match(
    engine: Engine,
    call: Call,
    match: _Match,
    usage_ns: int,
    *,
    breakdown: bool = False,
    start: datetime | None = None,
    horizon_ns: int = 0,
    first: _Entry | None = None,
) -> CallCost:
    """price_call of a resolved call; `start` is needed for a breakdown only.
    `horizon_ns`: how long the rate in force at the start lasts (RateCard), 0 unknown;
    `first`: that rate's entry, when known."""
    common = {
        "destination_id": match.destination_id,
        "plan_id": match.plan.id,
        "matched_prefix": match.prefix,
        "subject": match.subject,
        "tariff_id": engine.tariff.id,
        "mode": engine.mode,
    }
    if first is None:
        first, _ = engine.at(match.entries, call.start_ns)
    if usage_ns == 0:  # unanswered: no connect fee, no minimum duration
        decimals = first.dr.src.rounding_decimals
        return CallCost(0, 0, 0, spans=(), decimals=decimals, **common)  # type: ignore[arg-type]
    target = max(usage_ns, first.dr.src.min_duration_ns)
    pieces: Iterable[_Piece]
    if target <= horizon_ns:  # no boundary, no activation before the end
        pieces = pieces_within(first, target, match.plan.id)
    else:
        pieces = engine.pieces(match, call.start_ns, target, target, call.rematcher(engine))
    if breakdown and start is None:
        start = from_epoch_ns(call.start_ns)
    total = first.dr.connect
    rank, decimals, method = -1, -1, RoundingMethod.HALF_UP
    spans: list[CostSpan] = []
    billed_end = 0
    for piece in pieces:
        units, increment_q = engine.span_units(piece.slot, piece.increments)
        total += units
        rank, decimals, method = _rounding(piece, rank, decimals, method)
        if start is not None and breakdown:
            spans.append(_span(engine, start, piece, units, increment_q, usage_ns, not spans))
        billed_end = piece.offset_ns + piece.increments * piece.slot.increment_ns
    micros = engine.final_micros(total, decimals, method)
    capped = False
    max_cost = first.dr.max_cost_micros
    if max_cost is not None and first.dr.src.max_cost_strategy is MaxCostStrategy.FREE:
        if engine.exact:
            if micros > max_cost:  # the rounded total is capped
                micros, capped = max_cost, True
        else:
            # CGRateS GetCost caps the sum before the final rounding (cost = maxCost
            # once MaxCostSoFar >= maxCost), then rounds the capped cost: a MaxCost
            # with more decimals than the RoundingDecimals is rounded too.
            max_units = max_cost * (engine.denominator // _MICROS)
            if total >= max_units:
                micros, capped = engine.final_micros(max_units, decimals, method), True
    return CallCost(
        micros,
        usage_ns,
        billed_end,
        spans=tuple(spans),
        decimals=decimals,
        capped=capped,
        **common,  # type: ignore[arg-type]
    )


def _span(
    engine: Engine,
    start: datetime,
    piece: _Piece,
    units: int,
    increment_q: int | None,
    usage_ns: int,
    first: bool,
) -> CostSpan:
    slot, dr = piece.slot, piece.entry.dr
    real = max(0, min(piece.offset_ns + piece.usage_ns, usage_ns) - piece.offset_ns)
    increment_cost = None
    if increment_q is not None:
        increment_cost = display_cost(increment_q, pow10(engine.tariff.rounding_decimals))
    return CostSpan(
        start=(start + timedelta(microseconds=piece.offset_ns // 1000)).astimezone(engine.tz),
        offset_ns=piece.offset_ns,
        usage_ns=real,
        billed_ns=piece.increments * slot.increment_ns,
        rate_id=dr.src.rate.id,
        period_id=piece.entry.period.id,
        destination_rate_id=dr.src.id,
        rate=slot.rate,
        rate_unit_ns=slot.unit_ns,
        increment_ns=slot.increment_ns,
        increments=piece.increments,
        connect_fee=dr.src.rate.connect_fee if first else Decimal(0),
        cost=display_cost(units, engine.denominator),
        increment_cost=increment_cost,
        plan_id=piece.plan_id,
    )


def max_usage(
    engine: Engine,
    tenant: str,
    category: str,
    subject: str,
    number: str,
    start: datetime,
    amount_micros: int,
    limit_ns: int,
) -> int:
    """The longest usage whose price is at most amount_micros, walking increments."""
    start_ns = epoch_ns(start)
    match = engine.resolve(tenant, category, subject, number, start, when_ns=start_ns)
    call = Call(tenant, category, subject, number, start_ns)
    return max_usage_match(engine, call, match, amount_micros, limit_ns)


def max_usage_match(
    engine: Engine,
    call: Call,
    match: _Match,
    amount_micros: int,
    limit_ns: int,
    *,
    horizon_ns: int = 0,
    first: _Entry | None = None,
    price: Callable[[int], CallCost] | None = None,
    walks: dict[tuple[int, int, int, int], tuple[object, int]] | None = None,
    owner: object = None,
) -> int:
    """max_usage of a resolved call; `price` prices a usage of it (default price_match),
    `horizon_ns` and `first` as for price_match. `walks`: the full walk's answers,
    remembered per (`owner`, start, budget, limit): `owner` (a RateCard) stands for
    everything else the walk reads (the call's match, subject and number)."""
    if limit_ns <= 0 or amount_micros < 0:
        return 0
    if first is None:
        first, _ = engine.at(match.entries, call.start_ns)
    budget = amount_micros
    if first.dr.max_cost_micros is not None:
        budget, limit_ns = _max_cost_limits(engine, call, match, first, budget, limit_ns)
        if budget < 0:
            return limit_ns  # the cost never grows past max_cost: free from there on
    result = -1
    if horizon_ns > 0:
        # Up to the horizon the boundary-free walk has the same spans as the full one
        # (a span cut at the boundary only differs past it): its answer stands if it
        # ends before the horizon or the whole walk stays within it.
        found = _afford_within(engine, first, budget, limit_ns)
        if limit_ns <= horizon_ns:
            result = limit_ns if found is None else found
        elif found is not None and found < horizon_ns:
            result = found
    if result < 0:
        result = _walked(engine, call, match, first, budget, limit_ns, walks, owner)
    result = min(result, limit_ns)
    min_ns = first.dr.min_ns
    if 0 < result < min_ns:
        # Any usage up to min_ns is billed as min_ns: affordable only if that is.
        cost = price(result) if price is not None else price_match(engine, call, match, result)
        return result if cost.cost_micros <= budget else 0
    return result


def _max_cost_limits(
    engine: Engine, call: Call, match: _Match, first: _Entry, budget: int, limit_ns: int
) -> tuple[int, int]:
    """The budget and limit of max_usage under the start's MaxCost (set): a budget of
    -1 when the call is free from some point on and the budget pays up to it."""
    dr = first.dr
    max_cost = dr.max_cost_micros
    assert max_cost is not None
    max_units = max_cost * (engine.denominator // _MICROS)
    if dr.strategy is _FREE:
        # CGRateS rounds the capped cost (price_match)
        capped = (
            max_cost if engine.exact else engine.final_micros(max_units, dr.decimals, dr.method)
        )
        return (-1 if budget >= capped else budget), limit_ns
    if engine.exact:
        return min(budget, max_cost), limit_ns
    return budget, _disconnect_at(engine, call, match, max_units, limit_ns)


def _disconnect_at(engine: Engine, call: Call, match: _Match, max_units: int, limit_ns: int) -> int:
    """Where CGRateS cuts a call whose MaxCost strategy is *disconnect (CGRATES mode):
    its debit (engine/balances.go debitMoney) pays increment after increment and cuts
    before the next one once the increments paid so far (MaxCostSoFar: not the connect
    fee, which DebitConnectionFee pays apart) reach MaxCost, so the increment that
    reaches it is still granted. `max_units`: MaxCost in 1/L units; limit_ns when the
    increments up to it never reach MaxCost."""
    paid = 0
    for piece in engine.pieces(match, call.start_ns, None, limit_ns, call.rematcher(engine)):
        if paid >= max_units:
            return piece.offset_ns
        units, increment_q = engine.span_units(piece.slot, piece.increments)
        if increment_q is None or increment_q == 0:
            paid += units
            continue
        each = increment_q * engine.digit_units
        needed = -(-(max_units - paid) // each)  # increments until MaxCost is reached
        if needed <= piece.increments:
            return min(limit_ns, piece.offset_ns + needed * piece.slot.increment_ns)
        paid += units
    return limit_ns


def _walked(
    engine: Engine,
    call: Call,
    match: _Match,
    first: _Entry,
    budget: int,
    limit_ns: int,
    walks: dict[tuple[int, int, int, int], tuple[object, int]] | None,
    owner: object,
) -> int:
    """Where the full walk's cost passes `budget` (`limit_ns`: it never does). A budget
    no walk of the match's rates can spend before the limit (`_enough`: a rich
    account's, in the kit every one) affords it without walking (round 18a). Credit
    control asks the same walk again (the Session-Timeout told, at each Interim and the
    Stop: sessions/settle.py), so it is remembered in `walks` when given (round 17b)."""
    start_ns = call.start_ns
    switches = engine.switches
    index = bisect.bisect_right(switches, start_ns)
    if index == len(switches) or switches[index] >= start_ns + limit_ns:
        # No activation switch to re-resolve at: the walk's rates are the match's.
        entries = match.entries
        if budget >= _enough(engine, entries, limit_ns) >= 0:
            return limit_ns
    key = (id(owner), start_ns, budget, limit_ns)
    if walks is not None:
        known = walks.get(key)
        if known is not None and known[0] is owner:
            return known[1]
    found = _afford_walk(engine, call, match, first, budget, limit_ns)
    result = limit_ns if found is None else found
    if walks is not None:
        if len(walks) >= MAX_WALKS:
            del walks[next(iter(walks))]  # the oldest goes
        walks[key] = (owner, result)
    return result


def _afford_within(engine: Engine, first: _Entry, budget: int, limit_ns: int) -> int | None:
    """_afford of the boundary-free walk, remembered per (destination rate, budget,
    limit): it depends on nothing else (the plan id of its pieces is not read)."""
    dr = first.dr
    if budget >= _enough_flat(engine, dr, limit_ns):
        return None  # (not remembered: a rich account's budget is seldom asked again)
    memo = engine.afford_within
    key = (id(dr), budget, limit_ns)
    known = memo.get(key)
    if known is not None and known[0] is dr:
        return known[1]
    found = _afford_flat(engine, first, budget, limit_ns)
    if len(memo) >= MAX_REMEMBERED:
        del memo[next(iter(memo))]  # the oldest goes
    memo[key] = (dr, found)
    return found


def pieces_within(entry: _Entry, target_ns: int, plan_id: str) -> Iterator[_Piece]:
    """Engine.pieces of a walk that ends before the horizon: one entry, no period
    boundary and no activation switch, so no look-ups per span."""
    dr = entry.dr
    offset = 0
    while offset < target_ns:
        slot, stop = slot_at(dr, offset, target_ns)
        increments = -(-(stop - offset) // slot.increment_ns)
        yield _Piece(offset, stop - offset, increments, slot, entry, plan_id)
        offset += increments * slot.increment_ns


def _most(bound: int, den: int, mul: int, method: RoundingMethod) -> int:
    """The largest integer x >= -1 with round_div(x * mul, den, method) <= bound."""
    if bound < 0:
        return -1
    if method is _DOWN:
        return ((bound + 1) * den - 1) // mul
    if method is _UP:
        return (bound * den) // mul
    return ((2 * bound + 1) * den - 1) // (2 * mul)


def _ceiling(engine: Engine, budget: int, decimals: int, method: RoundingMethod) -> int:
    """The largest total (1/L units) whose final rounded cost is <= budget micro-units."""
    if decimals > 6:
        # Two roundings: to `decimals`, then to micro-units (Engine.final_micros).
        units_max = _most(budget, pow10(decimals - 6), 1, method)
    else:
        units_max = budget // pow10(6 - decimals)
    return _most(units_max, engine.denominator, pow10(decimals), method)


def _units(engine: Engine, slot: _Slot, increments: int) -> int:
    """Engine.span_units(slot, increments)[0]: the cost of `increments` of a slot (1/L
    units), without the tuple."""
    if engine.exact or increments == 0:
        return increments * slot.per_increment
    den = engine.denominator
    # round_div(..., HALF_UP) twice: to `digits` decimals, then per increment
    span_q = (2 * increments * slot.per_increment * pow10(engine.digits) + den) // (2 * den)
    increment_q = (2 * span_q + increments) // (2 * increments)
    return increment_q * increments * engine.digit_units


def _fit(engine: Engine, slot: _Slot, top: int, room: int) -> int:
    """The most increments of a span of `top` increments of `slot` (0..top) costing at
    most `room` units: in CGRateS' mode the per-span rounding makes the cost not
    monotonic in the increments, so the answer is the one this search finds (a gallop
    from room's estimate, then halving): the same probes in the same order always."""
    if room < 0:
        return 0
    per_increment = slot.per_increment
    if engine.exact:
        return top if per_increment == 0 else min(top, room // per_increment)
    if _units(engine, slot, top) <= room:
        return top
    lo, hi = 0, top  # fits lo, not hi
    if per_increment > 0 and top > 1:
        # a gallop: narrow [lo, hi) around the guess by doubling steps
        guess = min(max(room // per_increment, 1), top - 1)
        step = 1
        if _units(engine, slot, guess) <= room:
            lo = guess
            while lo + step < hi:
                if _units(engine, slot, lo + step) > room:
                    hi = lo + step
                    break
                lo += step
                step *= 2
        else:
            hi = guess
            while hi - step > lo:
                if _units(engine, slot, hi - step) <= room:
                    lo = hi - step
                    break
                hi -= step
                step *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _units(engine, slot, mid) <= room:
            lo = mid
        else:
            hi = mid
    return lo


def _slot_index(starts: list[int], offset_ns: int) -> int:
    """bisect_right(starts, offset_ns) - 1 (starts[0] is 0, offset_ns >= 0): a rate
    has a slot or a few."""
    index = 0
    count = len(starts)
    while index + 1 < count and starts[index + 1] <= offset_ns:
        index += 1
    return index


def _enough(engine: Engine, entries: tuple[_Entry, ...], limit_ns: int) -> int:
    """The least budget (micro-units) no full walk over these entries (no activation
    switch on the way) passes before `limit_ns`, from any start: a budget of at least
    this much affords the limit without walking (`_least`); remembered per entries.
    -1 when the walk may meet an instant without a rate (none of the entries' periods
    is always active): it raises UnratedPeriod there, whatever the budget."""
    known = engine.enough.get(id(entries))
    if known is not None and known[0] is entries and known[1] == limit_ns:
        return known[2]
    least = -1
    if any(entry.period.always for entry in entries):
        least = _least(engine, [entry.dr for entry in entries], limit_ns)
    if len(engine.enough) >= MAX_REMEMBERED:
        del engine.enough[next(iter(engine.enough))]  # the oldest goes
    engine.enough[id(entries)] = (entries, limit_ns, least)
    return least


def _enough_flat(engine: Engine, dr: _DestRate, limit_ns: int) -> int:
    """_enough of the boundary-free walk of one rate (kept on it, for one limit)."""
    if dr.enough_limit != limit_ns:
        dr.enough = _least(engine, [dr], limit_ns)
        dr.enough_limit = limit_ns
    return dr.enough


def _least(engine: Engine, drs: list[_DestRate], limit_ns: int) -> int:
    """The least budget no walk priced by these rates only passes before `limit_ns`.

    A walk's spans are billed consecutively from the call start, so their billed
    lengths add up to where the last one ends: before limit_ns + its increment. The
    total is then at most the largest connect fee plus that length at the dearest
    rate per ns (exact mode); CGRateS' per-span rounding adds at most one digit unit
    per increment (each of span_q and increment_q rounds half up: units(k) <= k * p +
    (1 + k) * U / 2). Every ceiling a walk compares with (`_ceiling` of the budget, at
    the decimals and method of one of these rates) is the largest total whose final
    cost is within the budget, so it is at least this bound once the budget covers
    the bound's final cost at each rate's rounding."""
    slots = [slot for dr in drs for slot in dr.slots]
    billed = limit_ns + max(slot.increment_ns for slot in slots)
    bound = max(dr.connect for dr in drs) + billed * max(slot.per_ns for slot in slots)
    if not engine.exact:
        bound += (billed // min(slot.increment_ns for slot in slots) + 1) * engine.digit_units
    return max(engine.final_micros(bound, dr.decimals, dr.method) for dr in drs)


def _afford_flat(engine: Engine, first: _Entry, budget: int, limit_ns: int) -> int | None:
    """Where the cost of the boundary-free walk from the call start (`first`'s rate
    all along: pieces_within) passes `budget` micro-units; None: not before limit_ns.
    One loop over its spans (a rate's slots), no piece objects."""
    dr = first.dr
    acc = dr.connect
    ceiling = _ceiling(engine, budget, dr.decimals, dr.method)
    starts = dr.starts
    count = len(starts)
    offset = 0
    while offset < limit_ns:
        index = _slot_index(starts, offset)
        stop = limit_ns
        if index + 1 < count and starts[index + 1] < stop:
            stop = starts[index + 1]
        slot = dr.slots[index]
        step = slot.increment_ns
        increments = -(-(stop - offset) // step)
        fits = _fit(engine, slot, increments, ceiling - acc)
        if fits < increments:
            return offset + fits * step
        acc += _units(engine, slot, increments)
        offset += increments * step
    return None


def _afford_walk(
    engine: Engine, call: Call, match: _Match, first: _Entry, budget: int, limit_ns: int
) -> int | None:
    """Where the cost of the full walk (Engine.pieces of the call until limit_ns: rates
    by period, boundaries, activation switches and their re-resolution) passes
    `budget` micro-units; None: not before limit_ns. The total is rounded once as the
    first span of the largest rounding rank so far rounds (CGRateS GetLongestRounding:
    the largest RoundingDecimals as written), so its ceiling changes only where the
    rank grows. One loop, no generator and no piece objects (round 18a)."""
    acc = first.dr.connect
    rank = -1
    ceiling = -1
    start_ns = call.start_ns
    switches = engine.switches
    switch_count = len(switches)
    switch = bisect.bisect_right(switches, start_ns)
    rematch: Callable[[int, int], _Match | None] | None = None
    entries = match.entries
    offset = 0
    while offset < limit_ns:
        now = start_ns + offset
        while switch < switch_count and switches[switch] <= now:
            switch += 1
            if rematch is None:  # (made when first needed: a switch is crossed)
                rematch = call.rematcher(engine)
            found = rematch(now, start_ns) if rematch is not None else None
            if found is not None:
                entries = found.entries
        entry, boundary = engine.at(entries, now)
        if switch < switch_count and switches[switch] < boundary:
            boundary = switches[switch]
        dr = entry.dr
        starts = dr.starts
        index = _slot_index(starts, offset)
        stop = boundary - start_ns
        if limit_ns < stop:
            stop = limit_ns
        if index + 1 < len(starts) and starts[index + 1] < stop:
            stop = starts[index + 1]
        slot = dr.slots[index]
        step = slot.increment_ns
        increments = -(-(stop - offset) // step)
        if dr.rank > rank:
            rank = dr.rank
            ceiling = _ceiling(engine, budget, dr.decimals, dr.method)
        fits = _fit(engine, slot, increments, ceiling - acc)
        if fits < increments:
            return offset + fits * step
        acc += _units(engine, slot, increments)
        offset += increments * step
    return None
