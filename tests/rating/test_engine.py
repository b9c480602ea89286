"""Rating engine: every feature against a hand-computed price, built directly in the model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

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
    UnknownDestination,
    UnknownSubject,
)
from chargingd.rating.periods import ANY_PERIOD, TimePeriod
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixIndex

S = 1_000_000_000
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 2026-03-02 is a Monday
PEAK = TimePeriod("PEAK", week_days=frozenset({1, 2, 3, 4, 5}), start_s=8 * 3600, end_s=19 * 3600)
WEEKEND = TimePeriod("WEEKEND", week_days=frozenset({6, 7}))
XMAS = TimePeriod("XMAS", dates=frozenset({datetime(2026, 12, 25).date()}))


def per_minute(rate_id: str, price: str, increment_s: int = 1, connect: str = "0") -> Rate:
    return Rate(rate_id, (RateSlot(0, D(price), 60 * S, increment_s * S),), D(connect))


def dr(rate: Rate, dest: str = "UK", **kw: object) -> DestinationRate:
    kw.setdefault("rounding_decimals", 6)
    return DestinationRate(dest, rate, id=rate.id, **kw)  # type: ignore[arg-type]


def tariff(
    entries: list[PlanEntry],
    *,
    mode: PricingMode = PricingMode.EXACT,
    tz: str = "UTC",
    extra_profiles: tuple[RatingProfile, ...] = (),
) -> TariffPlan:
    index = PrefixIndex()
    index.add_many("UK", ["44"])
    index.add_many("UK_MOBILE", ["447"])
    index.add_many("FR", ["33"])
    plan = RatingPlan.build("RP", entries)
    profile = RatingProfile("t", "call", "*any", (RatingActivation(EPOCH, plan),))
    return TariffPlan(
        "test", index, (profile, *extra_profiles), timezone=ZoneInfo(tz), mode=mode,
        default_tenant="t",
    )  # fmt: skip


def price(plan: TariffPlan, usage_s: float, start: datetime = MONDAY_10, dest: str = "4420",
          subject: str = "alice") -> int:  # fmt: skip
    usage_ns = int(D(str(usage_s)) * S)
    return plan.rate(subject=subject, destination=dest, start=start, usage_ns=usage_ns).cost_micros


def max_s(plan: TariffPlan, amount: str, start: datetime = MONDAY_10, dest: str = "4420") -> D:
    micros = int(D(amount) * 1_000_000)
    ns = plan.max_usage(subject="alice", destination=dest, start=start, amount_micros=micros)
    return D(ns) / S


# -- the example of the issue: exact 0.70, CGRateS 0.7002 -------------------------------


def _two_slot_rate() -> Rate:
    return Rate(
        "R",
        (RateSlot(0, D("0.2"), 60 * S, 60 * S), RateSlot(60 * S, D("0.1"), 60 * S, 1 * S)),
        D("0.4"),
    )


def test_exact_mode_prices_the_issue_example_at_070() -> None:
    plan = tariff([PlanEntry(dr(_two_slot_rate(), rounding_decimals=4))])
    cost = plan.rate(subject="a", destination="4420", start=MONDAY_10, usage_ns=120 * S)
    assert cost.cost_micros == 700_000
    assert [s.billed_ns for s in cost.spans] == [60 * S, 60 * S]
    assert [s.increments for s in cost.spans] == [1, 60]
    assert cost.to_json()["cost"] == "0.7000"


def test_cgrates_mode_prices_the_issue_example_at_07002() -> None:
    # 60 increments of 1 s cost 0.1/60 = 0.0016666 -> 0.00167 each, x60 = 0.1002.
    plan = tariff([PlanEntry(dr(_two_slot_rate(), rounding_decimals=4))], mode=PricingMode.CGRATES)
    cost = plan.rate(subject="a", destination="4420", start=MONDAY_10, usage_ns=120 * S)
    assert cost.cost_micros == 700_200
    assert cost.spans[1].increment_cost == D("0.00167")
    body = cost.to_json()
    assert body["cost"] == "0.7002"
    assert body["spans"][1]["cost"] == "0.1002"
    assert body["spans"][0]["connect_fee"] == "0.4" and body["spans"][1]["connect_fee"] == "0"


# -- connect fee, increments, tiers -------------------------------------------------------


def test_connect_fee_and_increment_round_up() -> None:
    plan = tariff([PlanEntry(dr(per_minute("R", "0.6", increment_s=60, connect="0.1")))])
    assert price(plan, 61) == 1_300_000  # 0.1 + 2 started minutes x 0.6
    assert price(plan, 60) == 700_000
    assert price(plan, 0.5) == 700_000
    assert price(plan, 0) == 0  # an unanswered call costs nothing, not even the connect fee
    cost = plan.rate(subject="a", destination="4420", start=MONDAY_10, usage_ns=61 * S)
    assert cost.billed_ns == 120 * S and cost.usage_ns == 61 * S


def test_thirty_six_tiers() -> None:
    # "30/6": the first 30 s as one block, then 6 s steps, 0.06/min.
    rate = Rate(
        "R", (RateSlot(0, D("0.06"), 60 * S, 30 * S), RateSlot(30 * S, D("0.06"), 60 * S, 6 * S))
    )
    plan = tariff([PlanEntry(dr(rate))])
    assert price(plan, 1) == 30_000  # 30 s
    assert price(plan, 30) == 30_000
    assert price(plan, 31) == 36_000  # 36 s
    assert price(plan, 61) == 66_000  # 66 s


def test_tier_slot_is_chosen_by_offset_from_call_start() -> None:
    # Peak ends at 19:00 30 s into the call; the off-peak span starts at offset 30 s, so it
    # still uses the first slot (the 60 s block) until offset 60 s, then per second.
    rate_peak = Rate("P", (RateSlot(0, D("1.2"), 60 * S, 1 * S),))
    rate_off = Rate(
        "O", (RateSlot(0, D("0.6"), 60 * S, 60 * S), RateSlot(60 * S, D("0.06"), 60 * S, S))
    )
    plan = tariff([PlanEntry(dr(rate_off)), PlanEntry(dr(rate_peak), PEAK, 10)])
    start = MONDAY_10.replace(hour=18, minute=59, second=30)
    cost = plan.rate(subject="a", destination="4420", start=start, usage_ns=150 * S)
    # [0,30) peak 30 x 1.2/60 = 0.6; [30,60) off-peak slot 1: one 60 s block = 0.6, billed
    # to offset 90 (the block eats into the next slot); [90,150) 60 s x 0.06/60 = 0.06.
    assert [(s.rate_id, s.offset_ns // S, s.billed_ns // S) for s in cost.spans] == [
        ("P", 0, 30),
        ("O", 30, 60),
        ("O", 90, 60),
    ]
    assert cost.cost_micros == 1_260_000


# -- time periods: peak/off-peak, midnight, holidays, weights ------------------------------


def test_call_crossing_peak_end_is_split() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("OFF", "0.06"))),
            PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
        ]
    )
    start = MONDAY_10.replace(hour=18, minute=59)
    cost = plan.rate(subject="a", destination="4420", start=start, usage_ns=120 * S)
    assert [s.period_id for s in cost.spans] == ["PEAK", "*any"]
    assert cost.cost_micros == 120_000 + 60_000


def test_call_crossing_midnight_into_weekend() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("WK", "0.10"))),
            PlanEntry(dr(per_minute("WE", "0.02")), WEEKEND, 10),
        ]
    )
    friday = datetime(2026, 3, 6, 23, 59, 30, tzinfo=UTC)
    cost = plan.rate(subject="a", destination="4420", start=friday, usage_ns=90 * S)
    assert [(s.rate_id, s.usage_ns // S) for s in cost.spans] == [("WK", 30), ("WE", 60)]
    assert cost.cost_micros == 50_000 + 20_000
    assert cost.spans[1].start == datetime(2026, 3, 7, tzinfo=UTC)


def test_midnight_splits_a_span_even_with_the_same_rate() -> None:
    plan = tariff([PlanEntry(dr(per_minute("R", "0.6")))])
    start = datetime(2026, 3, 3, 23, 59, 50, tzinfo=UTC)
    cost = plan.rate(subject="a", destination="4420", start=start, usage_ns=20 * S)
    assert [s.usage_ns // S for s in cost.spans] == [10, 10]
    assert cost.cost_micros == 200_000


def test_calls_across_midnight_in_turn_price_as_on_a_fresh_plan() -> None:
    # The engine keeps the last two local days: calls crossing midnight read today and
    # tomorrow in turn, then a third day and a DST day (London, 2026-03-29) come in.
    def plan() -> TariffPlan:
        entries = [
            PlanEntry(dr(per_minute("OFF", "0.05"))),
            PlanEntry(dr(per_minute("PK", "0.10")), PEAK, 10),
            PlanEntry(dr(per_minute("WE", "0.02")), WEEKEND, 20),
        ]
        return tariff(entries, tz="Europe/London")

    kept = plan()
    starts = [datetime(2026, 3, 6, 23, 50, tzinfo=UTC), datetime(2026, 3, 6, 12, tzinfo=UTC)] * 3
    starts += [
        datetime(2026, 3, 9, 7, 59, 30, tzinfo=UTC),
        datetime(2026, 3, 28, 23, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 59, tzinfo=UTC),
        datetime(2026, 3, 6, 23, 50, tzinfo=UTC),
    ]
    for start in starts:
        assert price(kept, 3600, start) == price(plan(), 3600, start), start
        assert max_s(kept, "1", start) == max_s(plan(), "1", start), start


def test_holiday_beats_peak_and_starts_at_midnight() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("OFF", "0.06"))),
            PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
            PlanEntry(dr(per_minute("HOL", "0.03")), XMAS, 50),
        ]
    )
    # Friday 25 December 10:00 is peak time, but the holiday weighs more.
    assert price(plan, 60, datetime(2026, 12, 25, 10, tzinfo=UTC)) == 30_000
    # Christmas Eve 23:59 (off-peak), two minutes: one off-peak, one holiday.
    cost = plan.rate(
        subject="a", destination="4420", start=datetime(2026, 12, 24, 23, 59, tzinfo=UTC),
        usage_ns=120 * S,
    )  # fmt: skip
    assert [s.rate_id for s in cost.spans] == ["OFF", "HOL"]
    assert cost.cost_micros == 60_000 + 30_000


def test_weights_decide_overlaps() -> None:
    low = [
        PlanEntry(dr(per_minute("ANY", "0.06")), ANY_PERIOD, 20),
        PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
    ]
    assert price(tariff(low), 60) == 60_000  # *any at weight 20 beats peak at 10
    high = [
        PlanEntry(dr(per_minute("ANY", "0.06")), ANY_PERIOD, 10),
        PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 20),
    ]
    assert price(tariff(high), 60) == 120_000
    # Equal weights: the period that started later wins (CGRateS' closest left margin).
    equal = [
        PlanEntry(dr(per_minute("ANY", "0.06")), ANY_PERIOD, 10),
        PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
    ]
    assert price(tariff(equal), 60) == 120_000


def test_periods_use_the_tariff_time_zone() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("OFF", "0.06"))),
            PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
        ],
        tz="Europe/London",
    )
    # 1 July: London is UTC+1, so peak ends at 18:00 UTC.
    start = datetime(2026, 7, 1, 17, 59, tzinfo=UTC)
    cost = plan.rate(subject="a", destination="4420", start=start, usage_ns=120 * S)
    assert [s.rate_id for s in cost.spans] == ["PK", "OFF"]
    assert cost.spans[1].start.isoformat() == "2026-07-01T19:00:00+01:00"


# -- minimum duration, rounding, max cost --------------------------------------------------


def test_minimum_duration() -> None:
    plan = tariff([PlanEntry(dr(per_minute("R", "0.6"), min_duration_ns=10 * S))])
    assert price(plan, 3) == 100_000  # billed as 10 s
    assert price(plan, 12) == 120_000
    assert price(plan, 0) == 0
    assert max_s(plan, "0.09") == 0  # 10 s cost 0.10: nothing shorter is sold
    assert max_s(plan, "0.10") == 10
    assert max_s(plan, "0.125") == 12


@pytest.mark.parametrize(
    ("method", "usage_s", "expected"),
    [
        (RoundingMethod.UP, 1, 10_000),  # 0.0025 -> 0.01
        (RoundingMethod.HALF_UP, 1, 0),  # 0.0025 -> 0.00
        (RoundingMethod.DOWN, 1, 0),
        (RoundingMethod.UP, 2, 10_000),  # 0.005 -> 0.01
        (RoundingMethod.HALF_UP, 2, 10_000),  # 0.005 -> 0.01
        (RoundingMethod.DOWN, 2, 0),
        (RoundingMethod.UP, 3, 10_000),  # 0.0075
        (RoundingMethod.HALF_UP, 3, 10_000),
        (RoundingMethod.DOWN, 3, 0),
        (RoundingMethod.DOWN, 5, 10_000),  # 0.0125 -> 0.01
        (RoundingMethod.HALF_UP, 5, 10_000),
        (RoundingMethod.UP, 5, 20_000),
    ],
)
def test_rounding_methods(method: RoundingMethod, usage_s: int, expected: int) -> None:
    rate = Rate("R", (RateSlot(0, D("0.0025"), S, S),))
    plan = tariff([PlanEntry(dr(rate, rounding_method=method, rounding_decimals=2))])
    assert price(plan, usage_s) == expected


def test_decimals_beyond_micros_round_again_with_the_method() -> None:
    rate = Rate("R", (RateSlot(0, D("0.0000004"), S, S),))  # 0.4 micro per second
    up = tariff([PlanEntry(dr(rate, rounding_method=RoundingMethod.UP, rounding_decimals=8))])
    down = tariff([PlanEntry(dr(rate, rounding_method=RoundingMethod.DOWN, rounding_decimals=8))])
    assert price(up, 1) == 1 and price(down, 1) == 0
    assert price(up, 5) == 2 and price(down, 5) == 2


def test_max_cost_free_caps_the_cost() -> None:
    rate = per_minute("R", "1.00")
    plan = tariff([PlanEntry(dr(rate, max_cost=D("2.00"), max_cost_strategy=MaxCostStrategy.FREE))])
    cost = plan.rate(subject="a", destination="4420", start=MONDAY_10, usage_ns=300 * S)
    assert cost.cost_micros == 2_000_000 and cost.capped
    assert price(plan, 90) == 1_500_000
    assert max_s(plan, "1.00") == 60
    assert max_s(plan, "2.00") == 3 * 3600  # free from there on: the max call duration
    assert plan.max_usage(
        subject="a", destination="4420", start=MONDAY_10, amount_micros=2_000_000, limit_ns=600 * S
    ) == 600 * S  # fmt: skip


def test_max_cost_disconnect_limits_only_max_usage() -> None:
    rate = per_minute("R", "1.00")
    strategy = MaxCostStrategy.DISCONNECT
    plan = tariff([PlanEntry(dr(rate, max_cost=D("2.00"), max_cost_strategy=strategy))])
    cost = plan.rate(subject="a", destination="4420", start=MONDAY_10, usage_ns=300 * S)
    assert cost.cost_micros == 5_000_000 and not cost.capped
    assert max_s(plan, "10.00") == 120
    assert max_s(plan, "1.50") == 90


# -- profiles: activation times, fallback subjects, destinations ---------------------------


def _profiles_tariff() -> TariffPlan:
    index = PrefixIndex()
    index.add_many("UK", ["44"])
    index.add_many("UK_MOBILE", ["447"])
    old = RatingPlan.build(
        "OLD",
        [
            PlanEntry(dr(per_minute("OLD", "0.10"))),
            PlanEntry(dr(per_minute("OLDM", "0.30"), "UK_MOBILE")),
        ],
    )
    new = RatingPlan.build(
        "NEW",
        [
            PlanEntry(dr(per_minute("NEW", "0.05"))),
            PlanEntry(dr(per_minute("NEWM", "0.20"), "UK_MOBILE")),
        ],
    )
    special = RatingPlan.build("SPECIAL", [PlanEntry(dr(per_minute("SP", "0.01"), "UK_MOBILE"))])
    change = datetime(2027, 1, 1, tzinfo=UTC)
    profiles = (
        RatingProfile(
            "t", "call", "ws", (RatingActivation(change, new), RatingActivation(EPOCH, old))
        ),
        RatingProfile("t", "call", "carrier", (RatingActivation(EPOCH, special, ("ws",)),)),
        RatingProfile("t", "sms", "*any", (RatingActivation(EPOCH, old),)),
    )
    return TariffPlan("p", index, profiles, default_tenant="t")


def test_future_dated_activation() -> None:
    plan = _profiles_tariff()
    before = plan.rate(
        subject="ws", destination="4420", start=datetime(2026, 12, 31, tzinfo=UTC), usage_ns=60 * S
    )
    after = plan.rate(
        subject="ws", destination="4420", start=datetime(2027, 1, 1, tzinfo=UTC), usage_ns=60 * S
    )
    assert (before.plan_id, before.cost_micros) == ("OLD", 100_000)
    assert (after.plan_id, after.cost_micros) == ("NEW", 50_000)


def test_call_crossing_an_activation_switches_plan_mid_call() -> None:
    plan = _profiles_tariff()
    start = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    cost = plan.rate(subject="ws", destination="4420", start=start, usage_ns=120 * S)
    assert [(s.plan_id, s.rate_id) for s in cost.spans] == [("OLD", "OLD"), ("NEW", "NEW")]
    assert cost.plan_id == "OLD" and cost.cost_micros == 100_000 + 50_000
    assert plan.max_usage(subject="ws", destination="4420", start=start, amount_micros=150_000) == (
        120 * S
    )


def test_fallback_subject_and_longest_prefix() -> None:
    plan = _profiles_tariff()
    when = datetime(2026, 6, 1, tzinfo=UTC)
    mobile = plan.rate(subject="carrier", destination="+447700", start=when, usage_ns=60 * S)
    assert (mobile.plan_id, mobile.destination_id, mobile.matched_prefix) == (
        "SPECIAL",
        "UK_MOBILE",
        "447",
    )
    assert mobile.cost_micros == 10_000
    fixed = plan.rate(subject="carrier", destination="4420", start=when, usage_ns=60 * S)
    assert (fixed.plan_id, fixed.subject, fixed.cost_micros) == ("OLD", "ws", 100_000)
    ws_mobile = plan.rate(subject="ws", destination="447700", start=when, usage_ns=60 * S)
    assert ws_mobile.destination_id == "UK_MOBILE" and ws_mobile.cost_micros == 300_000


def test_unknown_subject_and_destination() -> None:
    plan = _profiles_tariff()
    when = datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(UnknownSubject) as subject_error:
        plan.rate(subject="nobody", destination="4420", start=when, usage_ns=S)
    assert subject_error.value.code == "unknown_subject"
    with pytest.raises(UnknownDestination) as dest_error:
        plan.rate(subject="ws", destination="3312", start=when, usage_ns=S)
    assert dest_error.value.code == "unknown_destination"
    with pytest.raises(UnknownDestination):
        plan.max_usage(subject="ws", destination="3312", start=when, amount_micros=1)
    # The *any subject of another category does not serve "call".
    assert (
        plan.rate(
            subject="x", destination="44", start=when, usage_ns=60 * S, category="sms"
        ).cost_micros
        == 100_000
    )


def test_start_must_be_timezone_aware() -> None:
    plan = tariff([PlanEntry(dr(per_minute("R", "0.6")))])
    with pytest.raises(Exception, match="timezone-aware"):
        plan.rate(subject="a", destination="44", start=datetime(2026, 1, 1), usage_ns=S)


# -- max usage -----------------------------------------------------------------------------


def test_max_usage_with_connect_fee_and_tiers() -> None:
    plan = tariff([PlanEntry(dr(_two_slot_rate(), rounding_decimals=4))])
    assert max_s(plan, "0.39") == 0  # not even the connect fee
    assert max_s(plan, "0.59") == 0  # the first 60 s block costs 0.60
    assert max_s(plan, "0.60") == 60
    assert max_s(plan, "0.70") == 120
    assert max_s(plan, "1.00") == 300


def test_max_usage_across_periods() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("OFF", "0.06"))),
            PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
        ]
    )
    start = MONDAY_10.replace(hour=18, minute=59)
    # 0.12 buys the last peak minute, then 0.06 buys one off-peak minute.
    assert max_s(plan, "0.18", start) == 120
    assert max_s(plan, "0.15", start) == 90


def test_max_usage_cgrates_mode_counts_rounded_increments() -> None:
    plan = tariff([PlanEntry(dr(_two_slot_rate(), rounding_decimals=4))], mode=PricingMode.CGRATES)
    assert max_s(plan, "0.70") == 119  # 0.6 + 59 x 0.00167 = 0.69853 -> 0.6985; 60 s: 0.7002
    assert max_s(plan, "0.7002") == 120


def test_max_usage_is_fast_enough_for_every_authorize() -> None:
    plan = tariff(
        [
            PlanEntry(dr(per_minute("OFF", "0.06"))),
            PlanEntry(dr(per_minute("PK", "0.12")), PEAK, 10),
        ]
    )
    begin = datetime.now(UTC)
    for n in range(2000):
        plan.max_usage(
            subject="a",
            destination="4420",
            start=MONDAY_10 + timedelta(minutes=n),
            amount_micros=5_000_000,
        )
    assert (datetime.now(UTC) - begin).total_seconds() < 2.0


def test_profiles_listed_twice_form_one_timeline() -> None:
    index = PrefixIndex()
    index.add("44", "UK")
    old = RatingPlan.build("A", [PlanEntry(dr(per_minute("A", "0.10")))])
    new = RatingPlan.build("B", [PlanEntry(dr(per_minute("B", "0.20")))])
    change = datetime(2027, 1, 1, tzinfo=UTC)
    profiles = (
        RatingProfile("t", "call", "a", (RatingActivation(EPOCH, old),)),
        RatingProfile("t", "call", "a", (RatingActivation(change, new),)),
    )
    plan = TariffPlan("twice", index, profiles, default_tenant="t")
    before = plan.rate(
        subject="a", destination="44", start=change - timedelta(days=1), usage_ns=60 * S
    )
    after = plan.rate(subject="a", destination="44", start=change, usage_ns=60 * S)
    assert (before.plan_id, before.cost_micros) == ("A", 100_000)
    assert (after.plan_id, after.cost_micros) == ("B", 200_000)


def test_a_period_starting_in_a_dst_gap_does_not_delay_a_later_one(tmp_path: Path) -> None:
    """Europe/Berlin skips 02:00-03:00 on 2026-03-29. A period starting at 02:30 (read
    as Go's time.Date reads it, as CGRateS does: 03:30 CEST) once cut the day in local
    clock order, so a heavier period starting at 03:00 only took over at 03:30: the
    half hour 03:00-03:30 CEST was priced at the day rate, 10x the night one."""
    from chargingd.rating.loaders import load_plan

    text = """
[tariff]
timezone = "Europe/Berlin"
[destinations]
DE = ["49"]
[periods.LATE]
start = "02:30"
[periods.THREE]
start = "03:00"
[rates.DAY]
rate = "0.60"
increment = "1s"
[rates.NIGHT]
rate = "0.06"
increment = "1s"
[rates.LATE]
rate = "6"
increment = "1s"
[plans.G]
[[plans.G.rates]]
destinations = ["DE"]
rate = "DAY"
[[plans.G.rates]]
destinations = ["DE"]
rate = "NIGHT"
period = "THREE"
weight = 10
[[plans.G.rates]]
destinations = ["DE"]
rate = "LATE"
period = "LATE"
weight = 5
[[profiles]]
plan = "G"
"""
    path = tmp_path / "gap.toml"
    path.write_text(text)
    plan = load_plan(path)
    start = datetime(2026, 3, 29, 0, 50, tzinfo=UTC)  # 01:50 CET
    cost = plan.rate(subject="s", destination="4930", start=start, usage_ns=50 * 60 * S)
    # 10 min DAY (to 03:00 CEST = 01:00Z), then 40 min NIGHT: 6.00 + 2.40
    assert cost.cost_micros == 8_400_000
    assert [s.rate_id for s in cost.spans] == ["DAY", "NIGHT", "NIGHT"]
    at_three = datetime(2026, 3, 29, 1, 10, tzinfo=UTC)  # 03:10 CEST
    assert (
        plan.rate(subject="s", destination="4930", start=at_three, usage_ns=60 * S).cost_micros
        == 60_000
    )
    # 0.60 pays 10 min at night from 03:10 CEST (not 1 min of day rate)
    granted = plan.max_usage(subject="s", destination="4930", start=at_three, amount_micros=600_000)
    assert granted == 10 * 60 * S
