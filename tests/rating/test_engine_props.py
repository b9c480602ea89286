"""Properties of rating over random tariffs: cost never falls as a call grows, and
max_usage is exact (what it grants is paid for; one more increment is not)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chargingd.rating.model import (
    DestinationRate,
    MaxCostStrategy,
    PlanEntry,
    PricingMode,
    Rate,
    RateSlot,
    RatingActivation,
    RatingPlan,
    RatingProfile,
    RoundingMethod,
)
from chargingd.rating.periods import ANY_PERIOD, TimePeriod
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixIndex

S = 1_000_000_000
LIMIT_NS = 4 * 3600 * S
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
ZONES = ["UTC", "Europe/London", "America/New_York", "Asia/Kolkata"]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def rates(draw: st.DrawFn, rate_id: str) -> Rate:
    offsets = draw(st.sets(st.integers(1, 240), max_size=2))
    slots = []
    for start_s in [0, *sorted(offsets)]:
        price = Decimal(draw(st.integers(0, 3000))).scaleb(-draw(st.integers(0, 4)))
        unit_s = draw(st.sampled_from([1, 60]))
        increment_s = draw(st.sampled_from([1, 6, 30, 60]))
        slots.append(RateSlot(start_s * S, price, unit_s * S, increment_s * S))
    connect = Decimal(draw(st.integers(0, 50))).scaleb(-2)
    return Rate(rate_id, tuple(slots), connect)


@st.composite
def tariffs(draw: st.DrawFn, mode: PricingMode) -> TariffPlan:
    rounding = {
        "rounding_method": draw(st.sampled_from(list(RoundingMethod))),
        "rounding_decimals": draw(st.integers(0, 7)),
        "min_duration_ns": draw(st.sampled_from([0, 10 * S, 45 * S])),
    }
    if draw(st.booleans()):
        rounding["max_cost"] = Decimal(draw(st.integers(1, 2000))).scaleb(-2)
        rounding["max_cost_strategy"] = draw(st.sampled_from(list(MaxCostStrategy)))
    start_h = draw(st.integers(0, 22))
    peak = TimePeriod(
        "PEAK",
        week_days=frozenset(draw(st.sets(st.integers(1, 7), min_size=1))),
        start_s=start_h * 3600 + draw(st.integers(0, 3599)),
        end_s=draw(st.integers(start_h + 1, 24)) * 3600,
    )
    entries = [
        PlanEntry(DestinationRate("D", draw(rates("OFF")), **rounding), ANY_PERIOD, 0),  # type: ignore[arg-type]
        PlanEntry(DestinationRate("D", draw(rates("PK")), **rounding), peak, 10),  # type: ignore[arg-type]
    ]
    index = PrefixIndex()
    index.add("49", "D")
    plan = RatingPlan.build("RP", entries)
    profile = RatingProfile("t", "call", "*any", (RatingActivation(EPOCH, plan),))
    return TariffPlan(
        "prop", index, (profile,), mode=mode, rounding_decimals=draw(st.integers(2, 6)),
        default_tenant="t", max_call_ns=LIMIT_NS, timezone=ZoneInfo(draw(st.sampled_from(ZONES))),
    )  # fmt: skip


_DST_DAYS = [
    datetime(2026, 3, 8),
    datetime(2026, 3, 29),
    datetime(2026, 10, 25),
    datetime(2026, 11, 1),
]
starts = st.one_of(
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    st.builds(
        lambda day, minute: (day + timedelta(minutes=minute)).replace(tzinfo=UTC),
        st.sampled_from(_DST_DAYS),
        st.integers(-600, 1800),
    ),
)
usages = st.integers(0, 3 * 3600 * S)


def cost(plan: TariffPlan, start: datetime, usage_ns: int) -> int:
    return plan.rate(subject="s", destination="4930", start=start, usage_ns=usage_ns).cost_micros


@PROPS
@given(tariffs(PricingMode.EXACT), starts, usages, usages)
def test_cost_never_decreases_as_duration_grows(
    plan: TariffPlan, start: datetime, a_ns: int, b_ns: int
) -> None:
    short, long = sorted((a_ns, b_ns))
    assert cost(plan, start, short) <= cost(plan, start, long)


@PROPS
@given(tariffs(PricingMode.EXACT), starts, st.integers(0, 40_000_000))
def test_max_usage_is_exact(plan: TariffPlan, start: datetime, amount_micros: int) -> None:
    granted = plan.max_usage(
        subject="s", destination="4930", start=start, amount_micros=amount_micros
    )
    assert 0 <= granted <= LIMIT_NS
    assert cost(plan, start, granted) <= amount_micros
    if granted < LIMIT_NS:
        # One nanosecond more starts one more increment: the money does not cover it
        # (with *disconnect, the money is at most the max cost).
        assert cost(plan, start, granted + 1) > _budget(plan, amount_micros)


def _budget(plan: TariffPlan, amount_micros: int) -> int:
    (profile,) = plan.profiles
    rule = profile.activations[0].plan.entries["D"][0].destination_rate
    if rule.max_cost is not None and rule.max_cost_strategy is MaxCostStrategy.DISCONNECT:
        return min(amount_micros, int(rule.max_cost * 1_000_000))
    return amount_micros


@PROPS
@given(tariffs(PricingMode.CGRATES), starts, st.integers(0, 40_000_000))
def test_max_usage_is_paid_for_in_cgrates_mode(
    plan: TariffPlan, start: datetime, amount_micros: int
) -> None:
    granted = plan.max_usage(
        subject="s", destination="4930", start=start, amount_micros=amount_micros
    )
    assert cost(plan, start, granted) <= amount_micros


@settings(max_examples=60, deadline=None)
@given(tariffs(PricingMode.EXACT), starts, st.integers(0, 5_000_000))
def test_max_usage_agrees_with_a_search_over_rate(
    plan: TariffPlan, start: datetime, amount_micros: int
) -> None:
    """Cross-check: a binary search over whole seconds of rate() finds no longer usage."""
    granted = plan.max_usage(
        subject="s", destination="4930", start=start, amount_micros=amount_micros, limit_ns=1800 * S
    )
    amount_micros = _budget(plan, amount_micros)
    lo, hi = 0, 1800  # seconds; cost(lo * S) <= amount
    if cost(plan, start, hi * S) <= amount_micros:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cost(plan, start, mid * S) <= amount_micros:
            lo = mid
        else:
            hi = mid
    assert granted >= lo * S
    assert granted < (lo + 1) * S or lo == 1800


def test_walk_is_stable_over_a_dst_change() -> None:
    """Calls across the London clock changes price without looping or losing time."""
    index = PrefixIndex()
    index.add("49", "D")
    peak = TimePeriod("PEAK", start_s=3600, end_s=2 * 3600 + 1800)
    entries = [
        PlanEntry(
            DestinationRate("D", Rate("OFF", (RateSlot(0, Decimal("0.6"), 60 * S, S),))), ANY_PERIOD
        ),
        PlanEntry(
            DestinationRate("D", Rate("PK", (RateSlot(0, Decimal("1.2"), 60 * S, S),))), peak, 10
        ),
    ]
    profile = RatingProfile(
        "t", "call", "*any", (RatingActivation(EPOCH, RatingPlan.build("RP", entries)),)
    )
    plan = TariffPlan(
        "dst", index, (profile,), timezone=ZoneInfo("Europe/London"), default_tenant="t"
    )
    for day in (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 0, 0, tzinfo=UTC)):
        for minutes in range(0, 240, 7):
            start = day + timedelta(minutes=minutes)
            result = plan.rate(subject="s", destination="49", start=start, usage_ns=2 * 3600 * S)
            assert sum(s.billed_ns for s in result.spans) == 2 * 3600 * S
            assert 72_000_000 <= result.cost_micros <= 144_000_000  # all off-peak .. all peak
