"""The max-usage walks of rating/price.py against the plain full walk they replace.

`_afford_walk` (the full walk's answer in one loop: round 18a) and `_afford_flat`
(the boundary-free one) must answer exactly what `_afford` over `Engine.pieces` (and
over `pieces_within`) answered before, and `max_usage` / `RateCard.max_usage_at`
what max-usage over that walk answered, for every plan rating supports. The
reference below is that code as it was (rating/price.py before round 18a), kept
apart from the module so a change there cannot change it too: the generator of
pieces, `_fit` with its gallop and halving, `_ceiling`, `span_units`.

The calls start on random instants before and around the period boundaries (and
activation switches) of every plan of the rating tests: the sample tariff, the
CGRateS fixtures, the shared CGRateS reference plans when present, and random
tariffs (both pricing modes, every rounding method, minimum durations, max costs
*free and *disconnect, peak/weekend/holiday periods, slots by offset, activation
switches and fallbacks) with random budgets and limits.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from paths import FIXTURES, REPO, SHARED_DATA

from chargingd.rating import price
from chargingd.rating.engine import Engine, _Entry, _Match, _Piece, epoch_ns, round_div
from chargingd.rating.loaders import load_plan
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import (
    DestinationRate,
    MaxCostStrategy,
    PlanEntry,
    PricingMode,
    Rate,
    RateSlot,
    RatingActivation,
    RatingError,
    RatingPlan,
    RatingProfile,
    RoundingMethod,
)
from chargingd.rating.periods import ANY_PERIOD, TimePeriod
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixIndex

S = 1_000_000_000
H = 3600 * S
CGR = FIXTURES / "cgrates"
TP = SHARED_DATA / "cgrates_tp"

# -- the reference: rating/price.py's walk before round 18a ---------------------------


def ref_span_units(engine: Engine, slot: object, increments: int) -> int:
    billed = increments * slot.increment_ns  # type: ignore[attr-defined]
    per_ns: int = slot.per_ns  # type: ignore[attr-defined]
    if engine.mode is PricingMode.EXACT or increments == 0:
        return billed * per_ns
    digits = engine.tariff.rounding_decimals
    den = engine.denominator
    span_q = round_div(billed * per_ns * 10**digits, den, RoundingMethod.HALF_UP)
    increment_q = round_div(span_q, increments, RoundingMethod.HALF_UP)
    return increment_q * increments * (den // 10**digits)


def ref_most(bound: int, den: int, mul: int, method: RoundingMethod) -> int:
    if bound < 0:
        return -1
    if method is RoundingMethod.DOWN:
        return ((bound + 1) * den - 1) // mul
    if method is RoundingMethod.UP:
        return (bound * den) // mul
    return ((2 * bound + 1) * den - 1) // (2 * mul)


def ref_ceiling(engine: Engine, budget: int, decimals: int, method: RoundingMethod) -> int:
    if decimals > 6:
        units_max = ref_most(budget, 10 ** (decimals - 6), 1, method)
    else:
        units_max = budget // 10 ** (6 - decimals)
    return ref_most(units_max, engine.denominator, 10**decimals, method)


def ref_gallop(ok: Callable[[int], bool], guess: int, lo: int, hi: int) -> tuple[int, int]:
    step = 1
    if ok(guess):
        lo = guess
        while lo + step < hi:
            if not ok(lo + step):
                return lo, lo + step
            lo += step
            step *= 2
        return lo, hi
    hi = guess
    while hi - step > lo:
        if ok(hi - step):
            return hi - step, hi
        hi -= step
        step *= 2
    return lo, hi


def ref_fit(engine: Engine, piece: _Piece, room: int) -> int:
    slot, top = piece.slot, piece.increments
    if room < 0:
        return 0
    per_increment = slot.increment_ns * slot.per_ns
    if engine.mode is PricingMode.EXACT:
        return top if per_increment == 0 else min(top, room // per_increment)

    def ok(n: int) -> bool:
        return ref_span_units(engine, slot, n) <= room

    if ok(top):
        return top
    lo, hi = 0, top
    if per_increment > 0 and top > 1:
        lo, hi = ref_gallop(ok, min(max(room // per_increment, 1), top - 1), lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def ref_afford(engine: Engine, first: _Entry, pieces: Iterable[_Piece], budget: int) -> int | None:
    acc = first.dr.connect
    decimals, method = -1, RoundingMethod.HALF_UP
    ceiling = -1
    for piece in pieces:
        src = piece.entry.dr.src
        if src.rounding_decimals > decimals:
            decimals, method = src.rounding_decimals, src.rounding_method
            ceiling = ref_ceiling(engine, budget, decimals, method)
        fits = ref_fit(engine, piece, ceiling - acc)
        if fits < piece.increments:
            return piece.offset_ns + fits * piece.slot.increment_ns
        acc += ref_span_units(engine, piece.slot, piece.increments)
    return None


def ref_pieces_within(entry: _Entry, target_ns: int) -> Iterable[_Piece]:
    dr = entry.dr
    offset = 0
    while offset < target_ns:
        index = bisect.bisect_right(dr.starts, offset) - 1
        stop = target_ns
        if index + 1 < len(dr.starts):
            stop = min(stop, dr.starts[index + 1])
        slot = dr.slots[index]
        increments = -(-(stop - offset) // slot.increment_ns)
        yield _Piece(offset, stop - offset, increments, slot, entry, "")
        offset += increments * slot.increment_ns


def ref_disconnect_at(
    engine: Engine, call: price.Call, match: _Match, max_units: int, limit_ns: int
) -> int:
    """CGRateS' *disconnect cut, increment by increment: before each increment, the
    increments paid so far (no connect fee) at MaxCost or more end the call."""
    paid = 0
    walk = engine.pieces(match, call.start_ns, None, limit_ns, call.rematcher(engine))
    for piece in walk:
        units = ref_span_units(engine, piece.slot, piece.increments)
        each = units // piece.increments  # every increment of a span costs the same
        # the first increment k (0-based) before which the paid ones reach MaxCost
        k = 0 if paid >= max_units else (-1 if each == 0 else -(-(max_units - paid) // each))
        if 0 <= k < piece.increments:
            return piece.offset_ns + k * piece.slot.increment_ns
        paid += units
    return limit_ns


def ref_max_usage(
    engine: Engine, call: price.Call, match: _Match, amount: int, limit_ns: int
) -> int:
    """max_usage_match before round 18a, always by the full walk (its horizon shortcut
    answered what the full walk answers: tests/rating/test_card.py)."""
    if limit_ns <= 0 or amount < 0:
        return 0
    first, _ = engine.at(match.entries, call.start_ns)
    src = first.dr.src
    budget = amount
    max_cost = first.dr.max_cost_micros
    if max_cost is not None:
        cgrates = engine.mode is PricingMode.CGRATES
        max_units = max_cost * engine.denominator // 1_000_000
        free_from = max_cost
        if cgrates:  # CGRateS rounds the capped cost
            free_from = engine.final_micros(max_units, src.rounding_decimals, src.rounding_method)
        if src.max_cost_strategy is MaxCostStrategy.FREE and budget >= free_from:
            return limit_ns
        if src.max_cost_strategy is MaxCostStrategy.DISCONNECT and not cgrates:
            budget = min(budget, max_cost)
        if src.max_cost_strategy is MaxCostStrategy.DISCONNECT and cgrates:
            limit_ns = ref_disconnect_at(engine, call, match, max_units, limit_ns)
    walk = engine.pieces(match, call.start_ns, None, limit_ns, call.rematcher(engine))
    found = ref_afford(engine, first, walk, budget)
    result = min(limit_ns if found is None else found, limit_ns)
    if 0 < result < src.min_duration_ns:
        cost = price.price_match(engine, call, match, result)
        return result if cost.cost_micros <= budget else 0
    return result


# -- the plans ------------------------------------------------------------------------

ZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "Asia/Kolkata")


def _decimal(rng: random.Random, top: int, places: int) -> Decimal:
    return Decimal(rng.randrange(top)).scaleb(-rng.randrange(places + 1))


def _rate(rng: random.Random, rate_id: str) -> Rate:
    offsets = {0} | {
        rng.choice((1, 10, 30, 60, 61, 90, 240, 3600)) for _ in range(rng.randrange(3))
    }
    slots = []
    for start_s in sorted(offsets):
        unit_ns = rng.choice((S, 60 * S, 1024, 7 * S))
        increment_ns = rng.choice((S, 6 * S, 30 * S, 60 * S, 7 * S, 1024, 1))
        slots.append(RateSlot(start_s * S, _decimal(rng, 3000, 5), unit_ns, increment_ns))
    return Rate(rate_id, tuple(slots), _decimal(rng, 60, 3))


def _dest_rate(rng: random.Random, dest: str, rate_id: str) -> DestinationRate:
    max_cost = None
    if rng.random() < 0.35:
        max_cost = _decimal(rng, 3000, 2)
    return DestinationRate(
        dest,
        _rate(rng, rate_id),
        rounding_method=rng.choice(list(RoundingMethod)),
        rounding_decimals=rng.randrange(0, 9),
        max_cost=max_cost,
        max_cost_strategy=rng.choice(list(MaxCostStrategy)),
        min_duration_ns=rng.choice((0, 0, 10 * S, 45 * S, 90 * S)),
        id=rate_id,
    )


def _periods(rng: random.Random) -> list[TimePeriod]:
    start_s = rng.randrange(0, 23 * 3600)
    end_s = rng.randrange(start_s + 1, 24 * 3600 + 1)
    days = frozenset(rng.sample(range(1, 8), rng.randrange(1, 6)))
    holidays = frozenset(
        date(2026, 12, 25) + timedelta(days=rng.randrange(-400, 400)) for _ in "ab"
    )
    return [
        TimePeriod("PEAK", week_days=days, start_s=start_s, end_s=end_s),
        TimePeriod("WEEKEND", week_days=frozenset({6, 7})),
        TimePeriod("HOLIDAY", dates=holidays | {date(2026, 12, 25)}),
        TimePeriod("NIGHT", start_s=rng.randrange(0, 6 * 3600), end_s=6 * 3600 + 1),
    ]


def random_tariff(seed: int) -> TariffPlan:
    """A random tariff: two destinations (one always rated, one in some periods only),
    two plans with an activation switch between them, a fallback subject."""
    rng = random.Random(seed)
    mode = rng.choice(list(PricingMode))
    periods = _periods(rng)
    plans = []
    for name in ("A", "B"):
        entries = [PlanEntry(_dest_rate(rng, "D", f"{name}D0"), ANY_PERIOD, 0)]
        for k, period in enumerate(rng.sample(periods, rng.randrange(0, 4))):
            weight = float(rng.randrange(1, 40))
            entries.append(PlanEntry(_dest_rate(rng, "D", f"{name}D{k + 1}"), period, weight))
        timed = rng.choice(periods)
        entries.append(PlanEntry(_dest_rate(rng, "E", f"{name}E"), timed, 10))
        if rng.random() < 0.5:
            entries.append(PlanEntry(_dest_rate(rng, "E", f"{name}E1"), rng.choice(periods), 20))
        plans.append(RatingPlan.build(name, entries))
    index = PrefixIndex()
    index.add("49", "D")
    index.add("4930", "E")
    # the switch among the instants the test's calls start near (not on a midnight)
    switch = datetime(2026, 12, 25, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(-3 * 86400, 3 * 86400), microseconds=rng.randrange(10**6)
    )
    epoch = datetime(2020, 1, 1, tzinfo=UTC)
    timeline = (RatingActivation(epoch, plans[0]), RatingActivation(switch, plans[1]))
    profiles = (
        RatingProfile("t", "call", "*any", timeline),
        RatingProfile("t", "call", "fb", (RatingActivation(epoch, plans[1], ("*any",)),)),
    )
    return TariffPlan(
        f"random-{seed}", index, profiles, timezone=ZoneInfo(rng.choice(ZONES)), mode=mode,
        rounding_decimals=rng.randrange(0, 9), default_tenant="t", max_call_ns=3 * H,
    )  # fmt: skip


# (name, loader, (tenant, category, subject) asked, numbers, instants the starts gather near)
Case = tuple[str, Callable[[], TariffPlan], list[tuple[str, str, str]], list[str], list[datetime]]
WEEK = [datetime(2026, 12, 6, tzinfo=UTC) + timedelta(hours=7 * k) for k in range(24)]
CASES: list[Case] = [
    (
        "sample",
        lambda: load_plan(REPO / "config" / "tariffs" / "sample.toml"),
        [("example.net", "call", s) for s in ("acc1", "wholesale", "carrier-b")],
        ["442079460000", "447700900123", "33612345678", "12125551234", "4930123", "448712"],
        [*WEEK, datetime(2026, 12, 31, 22, tzinfo=UTC), datetime(2027, 3, 28, tzinfo=UTC)],
    ),
    (
        "timed",
        lambda: load_tp_dir(CGR / "timed_destinations", rounding_decimals=5),
        [("t1", "call", s) for s in ("alice", "bob", "carol")],
        ["447123", "447912", "33123"],
        [datetime(2024, 5, 31, 12, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(12)],
    ),
    (
        "peak_offpeak_dst",
        lambda: load_tp_dir(CGR / "peak_offpeak", timezone="Europe/Berlin"),
        [("t1", "call", "x")],
        ["4930123"],
        [datetime(2024, 3, 30, 12, tzinfo=UTC) + timedelta(hours=3 * k) for k in range(16)],
    ),
    (
        "max_cost",
        lambda: load_tp_dir(CGR / "max_cost"),
        [("t1", "call", s) for s in ("free", "disc")],
        ["5255123"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(8)],
    ),
    (
        "rounding",
        lambda: load_tp_dir(CGR / "rounding", rounding_decimals=5),
        [("t1", "call", "x")],
        ["1555", "2555", "3555", "4555"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(8)],
    ),
    (
        "rounding_2",
        lambda: load_tp_dir(CGR / "rounding", rounding_decimals=2),
        [("t1", "call", "x")],
        ["1555", "2555", "3555", "4555"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(8)],
    ),
    (
        "fallback",
        lambda: load_tp_dir(CGR / "fallback"),
        [("t1", "call", s) for s in ("gold", "nobody")],
        ["447700", "4930", "3312", "8888"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(8)],
    ),
    (
        "activation",
        lambda: load_tp_dir(CGR / "activation"),
        [("acme", "call", "alice")],
        ["1555"],
        [datetime(2024, 5, 31, 20, tzinfo=UTC) + timedelta(minutes=50 * k) for k in range(8)],
    ),
    (
        "connect_fee_groups",
        lambda: load_tp_dir(CGR / "connect_fee_groups"),
        [("cgrates.org", "call", "1001")],
        ["1002"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(4)],
    ),
    (
        "data_units",
        lambda: load_tp_dir(CGR / "data_units"),
        [("t1", c, "*any") for c in ("data", "sms", "data2k")],
        ["1"],
        [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(4)],
    ),
]


def rounded_up_tariff(rate: str, decimals: int) -> TariffPlan:
    """CGRateS' per-span rounding billing more than the rate: `rate` per second in
    1 s increments, each increment's cost rounded half up to `decimals` (0.006 at 2
    decimals: 0.01 a second, 1.67 times the rate)."""
    index = PrefixIndex()
    index.add("1", "D")
    peak = TimePeriod("PEAK", week_days=frozenset({1, 2, 3, 4, 5}), start_s=8 * 3600)
    entries = [
        PlanEntry(
            DestinationRate("D", Rate("R", (RateSlot(0, Decimal(rate), S, S),)), id="R"),
            ANY_PERIOD,
        ),
        PlanEntry(
            DestinationRate("D", Rate("P", (RateSlot(0, Decimal(rate) * 2, S, S),)), id="P"),
            peak,
            10,
        ),
    ]
    profile = RatingProfile(
        "t",
        "call",
        "*any",
        (RatingActivation(datetime(2020, 1, 1, tzinfo=UTC), RatingPlan.build("RP", entries)),),
    )
    return TariffPlan(
        "rounded-up", index, (profile,), mode=PricingMode.CGRATES, rounding_decimals=decimals,
        default_tenant="t", max_call_ns=3 * H,
    )  # fmt: skip


CASES += [
    (
        f"rounded_up_{rate}_{decimals}",
        lambda rate=rate, decimals=decimals: rounded_up_tariff(rate, decimals),  # type: ignore[misc]
        [("t", "call", "x")],
        ["1555", "1666"],
        [datetime(2026, 12, 6, tzinfo=UTC) + timedelta(hours=5 * k) for k in range(12)],
    )
    for rate, decimals in (("0.006", 2), ("0.0045", 2), ("0.00051", 3))
]


def _shared(name: str, decimals: int) -> Case:
    def load() -> TariffPlan:
        return load_tp_dir(TP / name, rounding_decimals=decimals)

    plan = load()
    askers = sorted({(p.tenant, p.category, p.subject) for p in plan.profiles})
    prefixes = sorted(plan.destinations._map)[:12]  # (a test may read the index)
    when = sorted({a.activation_time for p in plan.profiles for a in p.activations})[-1]
    instants = [
        max(when, datetime(2024, 1, 1, tzinfo=UTC)) + timedelta(hours=5 * k) for k in range(6)
    ]
    return (f"tp-{name}", load, askers[:6], [p + "123" for p in prefixes], instants)


def _cases() -> list[Case]:
    cases = list(CASES)
    if TP.is_dir():
        for name, decimals in (
            ("engine_unit_inline", 6), ("tutorial", 5), ("testtp", 5), ("oldtutorial", 5),
            ("tutorial2", 5),
        ):  # fmt: skip
            if (TP / name).is_dir():
                cases.append(_shared(name, decimals))
    for seed in range(12):
        cases.append(
            (
                f"random-{seed}",
                lambda seed=seed: random_tariff(seed),  # type: ignore[misc]
                [("t", "call", "*any"), ("t", "call", "fb")],
                ["4912", "493012"],
                [
                    datetime(2026, 12, 25, tzinfo=UTC) + timedelta(hours=11 * k)
                    for k in range(-8, 9)
                ],
            )
        )
    return cases


# -- the comparison ---------------------------------------------------------------------


def _budget(rng: random.Random) -> int:
    kind = rng.random()
    if kind < 0.08:
        return rng.choice((0, 1, 10**15))
    return int(10 ** rng.uniform(0, 9))  # 1 micro-unit .. 1,000 currency units


def _limit(rng: random.Random, plan: TariffPlan) -> int:
    kind = rng.random()
    if kind < 0.5:
        return plan.max_call_ns
    if kind < 0.7:
        return rng.randrange(1, 120 * S)
    return rng.randrange(1, 4 * H)


def _starts(rng: random.Random, engine: Engine, match: _Match, near: datetime) -> list[int]:
    """Starts in the max call duration before the next boundary after `near` (and the
    next activation switch), a few just after them; at ns, ms and s precision."""
    near_ns = epoch_ns(near) + rng.randrange(0, 3 * H)
    try:
        _, boundary = engine.at(match.entries, near_ns)
    except RatingError:
        boundary = near_ns
    marks = [boundary]
    switch = engine.next_switch(near_ns)
    if switch is not None and switch - near_ns < 2 * 24 * H:
        marks.append(switch)
    out = []
    for mark in marks:
        for _ in range(8):
            at = mark - rng.randrange(-120 * S, 3 * H + 60 * S)
            grain = rng.choice((1, 1_000_000, S))
            out.append(at - at % grain)
    return out


def _ask(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except RatingError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_the_walks_answer_as_the_full_walk(case: Case) -> None:
    name, loader, askers, numbers, instants = case
    plan, reference = loader(), loader()
    engine, ref_engine = plan._engine, reference._engine
    rng = random.Random(name)
    compared = walked = 0
    for (tenant, category, subject), number, near in (
        (a, n, t) for a in askers for n in numbers for t in instants
    ):
        try:
            match0 = ref_engine.resolve(tenant, category, subject, number, near)
        except RatingError:
            continue
        for start_ns in _starts(rng, ref_engine, match0, near):
            call = price.Call(tenant, category, subject, number, start_ns)
            start = datetime.fromtimestamp(start_ns // S, UTC) + timedelta(
                microseconds=start_ns % S // 1000
            )
            try:
                match = engine.resolve(tenant, category, subject, number, start, when_ns=start_ns)
                ref_match = ref_engine.resolve(
                    tenant, category, subject, number, start, when_ns=start_ns
                )
                first, _ = engine.at(match.entries, start_ns)
                ref_first, _ = ref_engine.at(ref_match.entries, start_ns)
            except RatingError:
                continue
            card = plan.card(
                subject=subject, destination=number, start_ns=start_ns, tenant=tenant,
                category=category,
            )  # fmt: skip
            for _ in range(6):
                budget, limit = _budget(rng), _limit(rng, plan)
                where = (name, tenant, subject, number, start_ns, budget, limit)
                # the full walk, as one loop and as the pieces
                rematch = call.rematcher(ref_engine)
                walk = ref_engine.pieces(ref_match, start_ns, None, limit, rematch)
                want = _ask(ref_afford, ref_engine, ref_first, walk, budget)
                got = _ask(price._afford_walk, engine, call, match, first, budget, limit)
                assert got == want, where
                walked += want is not None
                # the boundary-free walk of the start's rate
                flat = ref_afford(
                    ref_engine, ref_first, ref_pieces_within(ref_first, limit), budget
                )
                assert price._afford_flat(engine, first, budget, limit) == flat, where
                # max usage: the card (its horizon, its memos), the plain function
                want = _ask(ref_max_usage, ref_engine, call, ref_match, budget, limit)
                assert _ask(card.max_usage_at, start_ns, budget, limit) == want, where
                plain = _ask(price.max_usage_match, engine, call, match, budget, limit)
                assert plain == want, where
                if start_ns % 1000 == 0:  # (a datetime: to the microsecond)
                    asked = (tenant, category, subject, number, start, budget, limit)
                    assert _ask(price.max_usage, engine, *asked) == want, where
                compared += 1
    assert compared > 50, name
    if name in ("sample", "timed", "peak_offpeak_dst", "max_cost", "rounding", "activation"):
        assert walked > 0, name  # some walks ran out of money before the limit


def test_later_starts_on_one_card_answer_as_the_full_walk() -> None:
    """Credit control asks one card of many starts (Pricer: the starts it covers, up to
    the boundary): calls answered every few seconds through the 3 h before each
    boundary of a week of the sample tariff, as the daemon asks them."""
    plan, reference = (load_plan(REPO / "config" / "tariffs" / "sample.toml") for _ in "ab")
    engine = reference._engine
    rng = random.Random(18)
    numbers = ["442079460000", "447700900123", "33612345678", "12125551234"]
    for boundary in (
        datetime(2026, 12, 7, tzinfo=UTC),
        datetime(2026, 12, 7, 8, tzinfo=UTC),
        datetime(2026, 12, 7, 19, tzinfo=UTC),
        datetime(2026, 12, 12, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    ):
        start_ns = epoch_ns(boundary) - 3 * H
        card = None
        while start_ns < epoch_ns(boundary) + 60 * S:
            number = rng.choice(numbers)
            subject = rng.choice(("acc1", "wholesale"))
            if card is None or not card.covers(start_ns) or rng.random() < 0.2:
                card = plan.card(subject=subject, destination=number, start_ns=start_ns)
                number, subject = card.call.number, card.call.subject
            else:
                number, subject = card.call.number, card.call.subject
            call = price.Call("example.net", "call", subject, number, start_ns)
            match = engine.resolve("example.net", "call", subject, number, None, when_ns=start_ns)
            for amount in (10**15, rng.randrange(1, 30_000_000), rng.randrange(1, 200_000)):
                want = ref_max_usage(engine, call, match, amount, plan.max_call_ns)
                assert card.max_usage_at(start_ns, amount) == want, (start_ns, number, amount)
            start_ns += rng.randrange(1, 40 * S)


@pytest.mark.parametrize("mode", list(PricingMode))
def test_fit_units_and_ceiling_answer_as_before(mode: PricingMode) -> None:
    """The per-span pieces alone, on rates whose per-increment cost sits near half a
    rounding digit (CGRateS' rounded cost is then not monotonic in the increments, so
    `_fit`'s answer is the one its gallop and halving find): the same as before."""
    rng = random.Random(str(mode))
    for decimals in (0, 1, 2, 3, 5):
        rates = [
            Rate(f"R{k}", (RateSlot(0, Decimal(rate), unit, inc),), Decimal("0.01"))
            for k, (rate, unit, inc) in enumerate(
                (
                    ("0.45", S, S), ("0.0045", S, S), ("0.0049", S, S), ("0.0051", S, S),
                    ("0.006", S, S), ("0.00123", S, 6 * S), ("0.15", 60 * S, 7 * S),
                    ("1.5", 60 * S, 1), ("0.0215", 60 * S, S), ("0", S, S),
                )
            )
        ]  # fmt: skip
        index = PrefixIndex()
        entries = []
        for k, rate in enumerate(rates):
            index.add(f"{k + 1}", f"D{k}")
            method = rng.choice(list(RoundingMethod))
            dest_rate = DestinationRate(
                f"D{k}", rate, rounding_method=method, rounding_decimals=rng.randrange(9)
            )
            entries.append(PlanEntry(dest_rate))
        profile = RatingProfile(
            "t", "call", "*any",
            (RatingActivation(datetime(2020, 1, 1, tzinfo=UTC), RatingPlan.build("RP", entries)),),
        )  # fmt: skip
        plan = TariffPlan(
            "fit", index, (profile,), mode=mode, rounding_decimals=decimals, default_tenant="t"
        )
        engine = plan._engine
        for bound in engine.plans.values():
            for entry in (e for es in bound.values() for e in es):
                slot = entry.dr.slots[0]
                for _ in range(300):
                    top = rng.choice((1, 2, 3, rng.randrange(1, 50), rng.randrange(1, 20_000)))
                    per = max(slot.per_ns * slot.increment_ns, 1)
                    room = rng.randrange(-per, per * top * 2 + engine.denominator)
                    piece = _Piece(0, top * slot.increment_ns, top, slot, entry, "RP")
                    assert price._fit(engine, slot, top, room) == ref_fit(engine, piece, room)
                    assert price._units(engine, slot, top) == ref_span_units(engine, slot, top)
                budget = int(10 ** rng.uniform(0, 12))
                for places in range(13):
                    for method in RoundingMethod:
                        assert price._ceiling(engine, budget, places, method) == ref_ceiling(
                            engine, budget, places, method
                        )
