"""Destinations whose timings are not active at the call start (fixture timed_destinations).

CGRateS (engine/ratingprofile.go GetRatingPlansForPrefix, v0.10/master): per prefix,
longest first, a destination of the plan counts only if one of its bindings' timings
is active at the call start (cd.TimeStart); of those the highest weight wins. If none
is active, the next shorter prefix is tried, then *any, then the fallback subjects.
The destination chosen at the start rates the whole call (no re-match per span).

Every rate is per minute in 60 s increments with round prices, so a call costs
minutes x rate (no span or increment rounding comes into play); rounding_decimals 5.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from paths import FIXTURES

from chargingd.rating.engine import UnratedPeriod
from chargingd.rating.loaders import load_plan
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import CallCost
from chargingd.rating.plan import TariffPlan

FIXTURE = FIXTURES / "cgrates" / "timed_destinations"
S = 1_000_000_000
M = 1_000_000
MONDAY_10 = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)  # 2024-01-08 is a Monday
MONDAY_03 = datetime(2024, 1, 8, 3, 0, tzinfo=UTC)
SATURDAY_10 = datetime(2024, 1, 13, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def plan() -> TariffPlan:
    return load_tp_dir(FIXTURE, rounding_decimals=5)


def _rate(plan: TariffPlan, subject: str, dest: str, start: datetime, usage_s: int) -> CallCost:
    return plan.rate(
        tenant="t1", subject=subject, destination=dest, start=start, usage_ns=usage_s * S
    )


def test_inactive_heavier_destination_is_skipped(plan: TariffPlan) -> None:
    # 447 -> DST_UK_MOB_NIGHT (weight 20, NIGHT only) and DST_UK_MOB (weight 10, *any).
    # Monday 10:00: NIGHT is not active, so DST_UK_MOB, RT_DAY: 2 min x 0.10 = 0.20.
    cost = _rate(plan, "alice", "447123", MONDAY_10, 120)
    assert (cost.destination_id, cost.matched_prefix) == ("DST_UK_MOB", "447")
    assert cost.cost_micros == 200_000
    # 03:00: NIGHT is active, the heavier DST_UK_MOB_NIGHT wins, RT_NIGHT: 2 x 0.02 = 0.04.
    cost = _rate(plan, "alice", "447123", MONDAY_03, 120)
    assert cost.destination_id == "DST_UK_MOB_NIGHT"
    assert cost.cost_micros == 40_000


def test_no_active_destination_at_the_longest_prefix_falls_to_a_shorter_one(
    plan: TariffPlan,
) -> None:
    # 4479 -> only DST_UK_MOB_9 (WEEKEND). On a Monday it is skipped and prefix 447 is
    # tried: DST_UK_MOB, RT_DAY: 1 min x 0.10 = 0.10.
    cost = _rate(plan, "alice", "447912", MONDAY_10, 60)
    assert (cost.destination_id, cost.matched_prefix) == ("DST_UK_MOB", "447")
    assert cost.cost_micros == 100_000
    # Saturday: DST_UK_MOB_9, RT_WKND: 1 min x 0.01 = 0.01.
    cost = _rate(plan, "alice", "447912", SATURDAY_10, 60)
    assert (cost.destination_id, cost.matched_prefix) == ("DST_UK_MOB_9", "4479")
    assert cost.cost_micros == 10_000


def test_no_active_destination_falls_to_any_then_fallback_subject(plan: TariffPlan) -> None:
    # 33 -> DST_FR_NIGHT only (NIGHT). alice (no profile: subject *any, RP_STD) at 10:00:
    # the *any destination, RT_ANY: 1 min x 0.50 = 0.50.
    cost = _rate(plan, "alice", "33123", MONDAY_10, 60)
    assert (cost.destination_id, cost.plan_id) == ("*any", "RP_STD")
    assert cost.cost_micros == 500_000
    # bob's RP_BOB has only DST_FR_NIGHT: at 10:00 nothing in it is active, so his
    # fallback subject *any (RP_STD) rates it: *any, 0.50.
    cost = _rate(plan, "bob", "33123", MONDAY_10, 60)
    assert (cost.subject, cost.plan_id, cost.destination_id) == ("*any", "RP_STD", "*any")
    assert cost.cost_micros == 500_000
    # at 03:00 bob's own plan: DST_FR_NIGHT, RT_NIGHT: 1 x 0.02 = 0.02.
    cost = _rate(plan, "bob", "33123", MONDAY_03, 60)
    assert (cost.subject, cost.plan_id, cost.destination_id) == ("bob", "RP_BOB", "DST_FR_NIGHT")
    assert cost.cost_micros == 20_000


def test_call_crossing_into_the_skipped_timing_keeps_its_destination(plan: TariffPlan) -> None:
    # Monday 23:59, 3 min: NIGHT is inactive at the start, so DST_UK_MOB rates the whole
    # call, also after midnight when NIGHT is active (CGRateS splits the call by day
    # and by the chosen destination's intervals, never re-matching the destination):
    # 23:59-00:00 1 x 0.10 + 00:00-00:02 2 x 0.10 = 0.30 (not 0.10 + 2 x 0.02 = 0.14).
    start = datetime(2024, 1, 8, 23, 59, tzinfo=UTC)
    cost = _rate(plan, "alice", "447123", start, 180)
    assert cost.cost_micros == 300_000
    assert len(cost.spans) == 2
    assert {s.destination_rate_id for s in cost.spans} == {"DR_DAY"}


def test_call_leaving_the_chosen_timing_is_unrated(plan: TariffPlan) -> None:
    # Tuesday 07:59, 2 min: DST_UK_MOB_NIGHT is chosen (NIGHT active at the start); at
    # 08:00 it has no binding, and chargingd refuses to price the rest rather than
    # switch destination mid-call (CGRateS keeps the destination too).
    start = datetime(2024, 1, 9, 7, 59, tzinfo=UTC)
    with pytest.raises(UnratedPeriod):
        _rate(plan, "alice", "447123", start, 120)
    # 60 s fits in the night: 1 x 0.02.
    assert _rate(plan, "alice", "447123", start, 60).cost_micros == 20_000


def test_activation_switch_checks_timings_at_the_call_start(plan: TariffPlan) -> None:
    # carol: RP_STD, then RP_B from 2024-06-01 00:00. Call 2024-05-31 23:59, 2 min.
    # First minute RP_STD at 23:59: NIGHT inactive -> DST_UK_MOB, RT_DAY 0.10.
    # From 00:00 RP_B; CGRateS checks the timings of every activation's plan at
    # cd.TimeStart (23:59, NIGHT inactive) -> DST_UK_MOB, DR_B_DAY, RT_B_DAY 0.20.
    # Total 0.30 (checking at 00:00 would give DR_B_NIGHT: 0.10 + 0.04 = 0.14).
    start = datetime(2024, 5, 31, 23, 59, tzinfo=UTC)
    cost = _rate(plan, "carol", "447123", start, 120)
    assert [s.destination_rate_id for s in cost.spans] == ["DR_DAY", "DR_B_DAY"]
    assert cost.cost_micros == 300_000


def test_max_usage_on_the_skipped_destination(plan: TariffPlan) -> None:
    # Monday 10:00 to 447: RT_DAY 0.10 per started minute; 0.25 pays 2 minutes.
    usage = plan.max_usage(
        tenant="t1",
        subject="alice",
        destination="447123",
        start=MONDAY_10,
        amount_micros=250_000,
        limit_ns=3600 * S,
    )
    assert usage == 120 * S


NATIVE = """
[tariff]
id = "timed"
timezone = "UTC"

[destinations]
UK_MOB_NIGHT = ["447"]
UK_MOB = ["447"]

[periods.NIGHT]
start = "00:00"
end = "08:00"

[rates.NIGHT]
rate = "0.02"
unit = "60s"
increment = "60s"

[rates.DAY]
rate = "0.10"
unit = "60s"
increment = "60s"

[rates.B_NIGHT]
rate = "0.04"
unit = "60s"
increment = "60s"

[rates.B_DAY]
rate = "0.20"
unit = "60s"
increment = "60s"

[plans.STD]
[[plans.STD.rates]]
destinations = ["UK_MOB_NIGHT"]
rate = "NIGHT"
period = "NIGHT"
weight = 20

[[plans.STD.rates]]
destinations = ["UK_MOB"]
rate = "DAY"
weight = 10

[plans.B]
[[plans.B.rates]]
destinations = ["UK_MOB_NIGHT"]
rate = "B_NIGHT"
period = "NIGHT"
weight = 20

[[plans.B.rates]]
destinations = ["UK_MOB"]
rate = "B_DAY"
weight = 10

[[profiles]]
plan = "STD"

[[profiles]]
subject = "carol"
plan = "STD"

[[profiles]]
subject = "carol"
plan = "B"
from = 2024-06-01T00:00:00Z
"""


def test_native_plan_skips_inactive_destinations_too(tmp_path: Path) -> None:
    path = tmp_path / "timed.toml"
    path.write_text(NATIVE)
    native = load_plan(path)

    def rate(subject: str, start: datetime, usage_s: int) -> CallCost:
        return native.rate(subject=subject, destination="447123", start=start, usage_ns=usage_s * S)

    # 10:00: UK_MOB_NIGHT has no rate now -> UK_MOB, 2 x 0.10 = 0.20; 03:00: 2 x 0.02.
    day = rate("alice", MONDAY_10, 120)
    assert (day.destination_id, day.cost) == ("UK_MOB", "0.2000")
    assert rate("alice", MONDAY_03, 120).cost == "0.0400"
    # At an activation switch a native plan is matched at the switch time (00:00, NIGHT
    # active): 0.10 + B_NIGHT 0.04 = 0.14 (CGRateS mode checks the call start: 0.30).
    cost = rate("carol", datetime(2024, 5, 31, 23, 59, tzinfo=UTC), 120)
    assert cost.cost == "0.1400"
