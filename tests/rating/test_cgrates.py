"""CGRateS TP import priced end to end on small hand-written fixtures.

Every expected value is worked out by hand from CGRateS' rating rules (engine/
timespans.go, rateinterval.go, calldesc.go) with rounding_decimals 5 unless said:
  span cost  = round_half_up(billed_usage * Rate / RateUnit, 5)
  increment  = round_half_up(span cost / increments, 5); span = increment * increments
  total      = connect fee (first span only) + spans, then the DestinationRate's
               RoundingMethod/RoundingDecimals (the span with most decimals) once.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES as ALL_FIXTURES

from chargingd.app.cli import main
from chargingd.rating.loaders import TariffLoadError
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

FIXTURES = ALL_FIXTURES / "cgrates"
S = 1_000_000_000
M = 1_000_000  # micro-units per currency unit
MONDAY = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)  # 2024-01-08 is a Monday


def _plan(name: str, rounding_decimals: int = 5) -> TariffPlan:
    return load_tp_dir(FIXTURES / name, rounding_decimals=rounding_decimals)


def _micros(
    plan: TariffPlan,
    subject: str,
    dest: str,
    start: datetime,
    usage_ns: int,
    category: str = "call",
) -> int:
    cost = plan.rate(
        subject=subject, destination=dest, start=start, usage_ns=usage_ns, category=category
    )
    return cost.cost_micros


# -- connect fee and rate groups (the 0.7002 example) --------------------------------------


@pytest.mark.parametrize(
    ("usage_s", "expected_micros"),
    [
        # 0.4 connect + [0,60s) one 60s increment of 0.2/60s = 0.2
        # + [60s,120s) 0.1/60s * 60s = 0.1 -> /60 incr = 0.0016667 -> 0.00167 * 60 = 0.1002
        # = 0.7002 -> *up 4 -> 0.7002
        (120, 700_200),
        # 30s is billed as the whole first 60s increment: 0.4 + 0.2 = 0.6
        (30, 600_000),
        # 0.6 + 1s * 0.1/60 = 0.0016667 -> 0.00167 -> 0.60167 -> *up 4 -> 0.6017
        (61, 601_700),
        # 0.6 + 30s: 0.05 -> /30 = 0.0016667 -> 0.00167 * 30 = 0.0501 -> 0.6501
        (90, 650_100),
    ],
)
def test_connect_fee_and_group_interval_starts(usage_s: int, expected_micros: int) -> None:
    plan = _plan("connect_fee_groups")
    assert _micros(plan, "1001", "1002", MONDAY, usage_s * S) == expected_micros


def test_rounding_decimals_setting_changes_increment_rounding() -> None:
    # rounding_decimals 6: 0.1/60 = 0.0016667 -> 0.001667 * 60 = 0.10002
    # 0.4 + 0.2 + 0.10002 = 0.70002 -> *up 4 -> 0.7001
    plan = _plan("connect_fee_groups", rounding_decimals=6)
    assert _micros(plan, "1001", "1002", MONDAY, 120 * S) == 700_100


def test_connect_fee_only_on_first_span_and_breakdown() -> None:
    cost = _plan("connect_fee_groups").rate(
        subject="1001", destination="1002", start=MONDAY, usage_ns=120 * S
    )
    assert [span.connect_fee for span in cost.spans] == [Decimal("0.4"), 0]
    assert cost.billed_ns == 120 * S
    assert cost.destination_id == "DST_1002"
    assert cost.plan_id == "RP_1001"


# -- timing splits: peak/off-peak, midnight, weekday 7 -------------------------------------

PEAK_CASES = [
    # Mon 07:59:00 +120s: 60s off-peak 0.12/60*60 = 0.12, 60s peak 0.6 -> 0.72
    (datetime(2024, 1, 8, 7, 59, tzinfo=UTC), 120, 720_000),
    # Mon 18:59:30 +60s: 30s peak 0.3 + 30s evening off-peak 0.06 -> 0.36
    (datetime(2024, 1, 8, 18, 59, 30, tzinfo=UTC), 60, 360_000),
    # Fri 23:59 +120s: 60s Friday off-peak 0.12 + 60s Saturday (weekend 0.06/min) -> 0.18
    (datetime(2024, 1, 12, 23, 59, tzinfo=UTC), 120, 180_000),
    # Sun 12:00 +60s: Sunday is weekday 7 in Timings.csv -> weekend 0.06
    (datetime(2024, 1, 14, 12, 0, tzinfo=UTC), 60, 60_000),
    # Sun 23:59:30 +60s: 30s weekend 0.03 + Monday 00:00 off-peak 30s 0.06 -> 0.09
    (datetime(2024, 1, 14, 23, 59, 30, tzinfo=UTC), 60, 90_000),
    # Mon 10:00 +90s peak: 0.9
    (MONDAY, 90, 900_000),
]


@pytest.mark.parametrize(("start", "usage_s", "expected_micros"), PEAK_CASES)
def test_peak_offpeak_midnight_and_sunday(
    start: datetime, usage_s: int, expected_micros: int
) -> None:
    assert _micros(_plan("peak_offpeak"), "anyone", "4930", start, usage_s * S) == expected_micros


def test_timing_split_spans() -> None:
    cost = _plan("peak_offpeak").rate(
        subject="x",
        destination="49",
        start=datetime(2024, 1, 8, 7, 59, tzinfo=UTC),
        usage_ns=120 * S,
    )
    assert [(s.period_id, s.usage_ns) for s in cost.spans] == [
        ("OFFPEAK_MORNING", 60 * S),
        ("PEAK", 60 * S),
    ]


# -- matching: longest prefix, weight, *any destination, fallback subjects, *any subject ---

SATURDAY = datetime(2024, 1, 13, 10, 0, tzinfo=UTC)
FALLBACK_CASES = [
    ("gold", "4420", MONDAY, 600_000),  # DST_UK, RT_A 0.01/s
    ("gold", "4479", MONDAY, 1_200_000),  # longest prefix 447: RT_B 0.02/s
    ("gold", "4420", SATURDAY, 300_000),  # WEEKEND binding weight 20 beats 10: RT_F
    ("gold", "4479", SATURDAY, 1_200_000),  # the longer prefix still wins over weight
    ("gold", "4930", MONDAY, 1_800_000),  # not in RP_GOLD -> fallback silver: RT_C
    ("gold", "3310", MONDAY, 2_400_000),  # -> silver (no) -> bronze: RT_D
    ("nobody", "4930", MONDAY, 3_000_000),  # no profile -> subject *any, DST_DE: RT_E
    ("nobody", "1555", MONDAY, 1_200_000),  # subject *any, destination *any: RT_B
    # DST_UK and DST_UK_VIP share prefix 44: CGRateS takes the destination whose
    # bindings weigh most (DR_UK_VIP, 30 > 10): RT_E 0.05/s
    ("platinum", "4420", MONDAY, 3_000_000),
]


@pytest.mark.parametrize(("subject", "dest", "start", "expected_micros"), FALLBACK_CASES)
def test_matching_order(subject: str, dest: str, start: datetime, expected_micros: int) -> None:
    assert _micros(_plan("fallback"), subject, dest, start, 60 * S) == expected_micros


def test_fallback_reports_matched_subject() -> None:
    cost = _plan("fallback").rate(subject="gold", destination="3310", start=MONDAY, usage_ns=60 * S)
    assert (cost.subject, cost.plan_id, cost.destination_id) == ("bronze", "RP_BRONZE", "DST_FR")


def test_fallback_subjects_depth_first_and_at_most_two_deep() -> None:
    """CGRateS engine/calldesc.go getRatingPlansForPrefix: a fallback subject whose
    plan lacks the destination recurses into its own RatesFallbackSubject before the
    next fallback is tried, and recursionDepth > RECURSION_MAX_DEPTH (3: the subject
    1, its fallbacks 2, theirs 3) refuses a fourth level. (The fallbacks are named in
    alphabetical order, which CGRateS v0.10's utils.FallbackSubjKeys sorts them into;
    current CGRateS keeps the file's order.)"""
    plan = _plan("fallback_chain")
    # customer (RP_LOCAL) -> reseller (RP_LOCAL) -> reseller's carrier_c (0.03/s),
    # before customer's second fallback wholesale (0.02/s): 60s -> 1.80, not 1.20
    cost = plan.rate(
        tenant="cgrates.org", subject="customer", destination="4930", start=MONDAY, usage_ns=60 * S
    )
    assert (cost.subject, cost.cost_micros) == ("carrier_c", 1_800_000)
    # d1 -> d2 -> d3 -> wholesale would be depth 4: CGRateS answers
    # UNAUTHORIZED_DESTINATION (no *any profile here either)
    with pytest.raises(RatingError) as failed:
        _micros(plan, "d1", "4930", MONDAY, 60 * S)
    assert failed.value.code == "unknown_destination"
    # d2 -> d3 -> wholesale is depth 3: rated, 0.02/s
    assert _micros(plan, "d2", "4930", MONDAY, 60 * S) == 1_200_000


# -- activation times (legacy Direction layout) --------------------------------------------


def test_activation_times() -> None:
    plan = _plan("activation")
    # 2024-03-15: RP_OLD (0.6/min); the *in row of 2024-03-01 is not imported
    assert _micros(plan, "alice", "1555", datetime(2024, 3, 15, tzinfo=UTC), 60 * S) == 600_000
    # from 2024-06-01T02:00:00+02:00 (= midnight UTC): RP_NEW, 1.2/min
    assert _micros(plan, "alice", "1555", datetime(2024, 6, 1, tzinfo=UTC), 60 * S) == 1_200_000
    late_may = datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC)
    assert _micros(plan, "alice", "1555", late_may, 1 * S) == 10_000  # 0.6/60
    with pytest.raises(RatingError):  # nothing active before 2024-01-01
        _micros(plan, "alice", "1555", datetime(2023, 12, 31, tzinfo=UTC), 60 * S)


# -- MaxCost ---------------------------------------------------------------------------------


def test_max_cost_free_caps_the_cost() -> None:
    plan = _plan("max_cost")
    assert _micros(plan, "free", "555", MONDAY, 5 * S) == 5 * M  # 1/s, under the cap
    assert _micros(plan, "free", "555", MONDAY, 30 * S) == 10 * M  # 30 capped at 10
    # *free: the money never runs out past the cap, so 11 buys the whole limit
    assert (
        plan.max_usage(
            subject="free", destination="555", start=MONDAY, amount_micros=11 * M, limit_ns=1800 * S
        )
        == 1800 * S
    )


def test_max_cost_disconnect_limits_usage_not_cost() -> None:
    plan = _plan("max_cost")
    assert _micros(plan, "disc", "555", MONDAY, 30 * S) == 30 * M  # not capped
    # *disconnect: the call may last only until it costs MaxCost (10 at 1/s)
    assert (
        plan.max_usage(
            subject="disc",
            destination="555",
            start=MONDAY,
            amount_micros=1000 * M,
            limit_ns=1800 * S,
        )
        == 10 * S
    )
    assert (
        plan.max_usage(
            subject="disc", destination="555", start=MONDAY, amount_micros=4 * M, limit_ns=1800 * S
        )
        == 4 * S
    )


def test_max_cost_disconnect_cuts_where_the_increments_reach_max_cost() -> None:
    """CGRateS engine/balances.go debitMoney: the connect fee is paid apart
    (DebitConnectionFee) and skipped in the increment loop, which adds each paid
    increment to cd.MaxCostSoFar and, before the next one, cuts the call when
    `strategy == *disconnect && cd.MaxCostSoFar >= maxCost`; getMaxSessionDuration
    answers the duration of the increments kept. RT_1C_CF: 0.10 connect, 0.01/s."""
    plan = _plan("max_cost_disconnect")

    def max_usage(dest: str, amount_micros: int) -> int:
        return plan.max_usage(
            subject="x", destination=dest, start=MONDAY, amount_micros=amount_micros,
            limit_ns=3600 * S,
        )  # fmt: skip

    # MaxCost 0.12: 12 increments reach it (the 0.10 connect fee does not count): 12 s
    assert max_usage("900123", 10 * M) == 12 * S
    # MaxCost 0.125: 12 increments (0.12) are below it, the 13th reaches it: 13 s
    assert max_usage("901123", 10 * M) == 13 * S
    # the money still limits: 0.15 pays the connect fee and 5 s
    assert max_usage("900123", 150_000) == 5 * S
    # the cost is not capped: 60 s = 0.10 + 0.60
    assert _micros(plan, "x", "900123", MONDAY, 60 * S) == 700_000


def test_max_cost_free_caps_before_the_final_rounding() -> None:
    """CGRateS engine/calldesc.go GetCost: `if strategy == *free && MaxCostSoFar >=
    maxCost { cost = maxCost }`, then `cc.Cost = utils.Round(cc.Cost,
    GetLongestRounding())`: the unrounded sum is compared and the capped cost rounded.
    DR_49: 0.01/s, *up 2, MaxCost 0.625 *free."""
    plan = _plan("max_cost_decimals")
    cost = plan.rate(subject="x", destination="4930", start=MONDAY, usage_ns=120 * S)
    assert (cost.cost_micros, cost.capped) == (630_000, True)  # 0.625 -> *up 2 -> 0.63
    assert _micros(plan, "x", "4930", MONDAY, 63 * S) == 630_000  # 0.63 >= 0.625: capped
    assert _micros(plan, "x", "4930", MONDAY, 62 * S) == 620_000  # 0.62 < 0.625
    # 0.63 pays for any call; 0.625 for 62 s (63 s cost 0.63)
    assert (
        plan.max_usage(
            subject="x", destination="4930", start=MONDAY, amount_micros=630_000, limit_ns=3600 * S
        )
        == 3600 * S
    )
    assert (
        plan.max_usage(
            subject="x", destination="4930", start=MONDAY, amount_micros=625_000, limit_ns=3600 * S
        )
        == 62 * S
    )


# -- rounding methods ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest", "usage_s", "expected_micros"),
    [
        ("155", 15, 20_000),  # 0.015 *up 2 -> 0.02
        ("155", 14, 20_000),  # 0.014 *up 2 -> 0.02
        ("255", 15, 20_000),  # 0.015 *middle 2 -> 0.02
        ("255", 14, 10_000),  # 0.014 *middle 2 -> 0.01
        ("355", 15, 10_000),  # 0.015 *down 2 -> 0.01
        ("355", 14, 10_000),  # 0.014 *down 2 -> 0.01
    ],
)
def test_rounding_methods(dest: str, usage_s: int, expected_micros: int) -> None:
    assert _micros(_plan("rounding"), "x", dest, MONDAY, usage_s * S) == expected_micros


def test_total_rounded_once_with_the_longest_decimals() -> None:
    # 11:59:50 +20s on DST_MIX: 10s AM (*down 1) 0.0123 + 10s PM (*up 3) 0.0123 = 0.0246;
    # the PM span has the most decimals, so the total is *up 3 -> 0.025
    # (per-span rounding would give 0.0 + 0.013; AM's rule would give 0.0)
    start = datetime(2024, 1, 8, 11, 59, 50, tzinfo=UTC)
    assert _micros(_plan("rounding"), "x", "455", start, 20 * S) == 25_000


def test_rounding_decimals_zero_does_not_round_the_total() -> None:
    """CGRateS engine/callcost.go GetLongestRounding starts from (0, "") and takes a
    span's rounding only for RoundingDecimals > 0; utils.Round with method "" returns
    the value unrounded. So "*up,0" and "*down,0" leave the total as the spans sum it
    (chargingd: micro-units), and a span of the same call with decimals > 0 rounds it."""
    plan = _plan("rounding_zero")
    # DST_UP0 (*up 0): 0.15 connect fee + 70s at 0.01/s = 0.85, not 1
    assert _micros(plan, "x", "555", MONDAY, 70 * S) == 850_000
    # DST_DOWN0 (*down 0): 70s at 0.01/s = 0.7, not 0
    assert _micros(plan, "x", "855", MONDAY, 70 * S) == 700_000
    # max usage: 0.50 buys 35s after the 0.15 connect fee (was 0: any usage cost 1)
    found = plan.max_usage(
        subject="x", destination="555", start=MONDAY, amount_micros=500_000, limit_ns=600 * S
    )
    assert found == 35 * S
    # 11:59:30 +60s, 30s AM then 30s PM at 0.0111/s: 0.333 + 0.333 = 0.666. The AM span's
    # RoundingDecimals 0 never counts, the PM span's *up 2 rounds the total -> 0.67, in
    # either order (23:59:30: PM, then AM after midnight)
    noon = datetime(2024, 1, 8, 11, 59, 30, tzinfo=UTC)
    night = datetime(2024, 1, 8, 23, 59, 30, tzinfo=UTC)
    for dest in ("655", "755"):  # AM "*up,0" / AM no RoundingMethod, decimals 0
        assert _micros(plan, "x", dest, noon, 60 * S) == 670_000
        assert _micros(plan, "x", dest, night, 60 * S) == 670_000
    # the AM span alone (10:00, 60s): 0.666, not rounded
    assert _micros(plan, "x", "655", MONDAY, 60 * S) == 666_000
    assert _micros(plan, "x", "755", MONDAY, 60 * S) == 666_000


# -- data and SMS units: bare integers are nanoseconds --------------------------------------


@pytest.mark.parametrize(
    ("category", "usage_ns", "expected_micros"),
    [
        ("data", 1024, 1 * M),  # one 1024-unit increment at 1 per 1024
        ("data", 1500, 2 * M),  # rounded up to 2048 -> 2
        ("data", 10_240, 10 * M),
        ("sms", 1, 10_000),  # RT_SMS 0.01 per unit
        ("sms", 3, 30_000),
        ("data2k", 100, 500_000),  # "2048ns" increment, 0.5 each
        ("data2k", 4096, 1 * M),
    ],
)
def test_data_units(category: str, usage_ns: int, expected_micros: int) -> None:
    plan = _plan("data_units")
    assert _micros(plan, "x", "*any", MONDAY, usage_ns, category=category) == expected_micros


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_rate_cli_on_a_tp_directory(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--plan", str(FIXTURES / "connect_fee_groups"), "--subject", "1001",
            "--destination", "1002", "--start", "2024-01-08T10:00:00Z"]  # fmt: skip
    code, out = _cli(capsys, "rate", *base, "--usage", "2m")
    assert code == 0
    assert (out["cost"], out["cost_micros"], out["plan_id"]) == ("0.7002", 700_200, "RP_1001")
    code, out = _cli(capsys, "rate", *base, "--usage", "120s", "--rounding-decimals", "6")
    assert (code, out["cost_micros"]) == (0, 700_100)
    # 0.65 buys the first minute (0.6) and 29 one-second increments of 0.00167:
    # 0.64843 -> *up 4 -> 0.6485 <= 0.65, while 30 of them make 0.6501
    code, out = _cli(capsys, "max-usage", *base, "--amount", "0.65")
    assert (code, out["usage_ns"]) == (0, 89 * S)


def test_rate_cli_reports_a_bad_tp_row(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "connect_fee_groups", tmp_path / "tp")
    with (tmp_path / "tp" / "Rates.csv").open("a", encoding="utf-8") as handle:
        handle.write("RT_BAD,0,zero,60s,1s,0s\n")
    code, out = _cli(capsys, "rate", "--plan", str(tmp_path / "tp"), "--subject", "1001",
                     "--destination", "1002", "--start", "2024-01-08T10:00:00Z",
                     "--usage", "60s")  # fmt: skip
    assert code == 2
    assert out["error"] == "bad_tariff"
    assert "Rates.csv:5" in out["message"]


# -- time zone and timing end times ----------------------------------------------------------


def test_time_zone_setting() -> None:
    # CGRateS general.default_timezone: Timings are local times. 07:59 UTC on a Monday
    # is 08:59 in Berlin (CET, +01:00): 120s of PEAK, 0.6/min -> 1.2
    plan = load_tp_dir(FIXTURES / "peak_offpeak", timezone="Europe/Berlin")
    start = datetime(2024, 1, 8, 7, 59, tzinfo=UTC)
    assert _micros(plan, "x", "49", start, 120 * S) == 1_200_000
    with pytest.raises(TariffLoadError, match="time zone"):
        load_tp_dir(FIXTURES / "peak_offpeak", timezone="Mars/Olympus")


def test_timing_with_an_inclusive_end_time(tmp_path: Path) -> None:
    directory = tmp_path / "lunch"
    shutil.copytree(FIXTURES / "peak_offpeak", directory)
    # LUNCH 12:00:00-12:59:59 (CGRateS end times are inclusive), weight 20, 0.012/s
    with (directory / "Timings.csv").open("a", encoding="utf-8") as handle:
        handle.write("LUNCH,*any,*any,*any,*any,12:00:00;12:59:59\n")
    with (directory / "Rates.csv").open("a", encoding="utf-8") as handle:
        handle.write("RT_LUNCH,0,0.72,60s,1s,0s\n")
    with (directory / "DestinationRates.csv").open("a", encoding="utf-8") as handle:
        handle.write("DR_LUNCH,DST_49,RT_LUNCH,*up,4,0,\n")
    with (directory / "RatingPlans.csv").open("a", encoding="utf-8") as handle:
        handle.write("RP_STD,DR_LUNCH,LUNCH,20\n")
    plan = load_tp_dir(directory)
    # Mon 12:59:30 +60s: 30s lunch (0.36) + 30s back to PEAK at 13:00:00 (0.3) -> 0.66
    start = datetime(2024, 1, 8, 12, 59, 30, tzinfo=UTC)
    assert _micros(plan, "x", "49", start, 60 * S) == 660_000
    # Mon 11:59:30 +60s: 30s PEAK (0.3) + 30s lunch from 12:00:00 (0.36) -> 0.66
    assert _micros(plan, "x", "49", start.replace(hour=11), 60 * S) == 660_000
    # Sat 12:30 +60s: lunch applies every day (weekdays *any) -> 0.72
    assert _micros(plan, "x", "49", datetime(2024, 1, 13, 12, 30, tzinfo=UTC), 60 * S) == 720_000


def test_the_daemons_plans_read_a_tp_directory_with_the_configured_cgrates_settings() -> None:
    """A CGRateS operator's Timings mean their cgrates.json default_timezone ("Local"
    by default). `chargingd rate --timezone` honoured it, but the daemon's [rating]
    plans (live calls, mediation, rerate, invoices) read a TP directory in UTC with no
    setting: PEAK 08:00 Berlin was priced from 09:00 Berlin, a wrong price an hour a
    day. [rating] cgrates_timezone / cgrates_rounding_decimals now reach every load."""
    from chargingd.core.config import RatingConfig, config_from_dict
    from chargingd.sessions.pricing import load_pricer

    tp = str(FIXTURES / "peak_offpeak")
    # Mon 2024-01-08 07:30 UTC is 08:30 in Berlin: peak there (0.6/min), not in UTC.
    start_ms = int(datetime(2024, 1, 8, 7, 30, tzinfo=UTC).timestamp() * 1000)
    prices = {}
    for zone in ("UTC", "Europe/Berlin"):
        pricer = load_pricer(RatingConfig(plans={"cg": tp}, cgrates_timezone=zone))
        priced = pricer.price("cg", subject="a", number="4930123456", start_ms=start_ms,
                              usage_s=60)  # fmt: skip
        prices[zone] = priced.cost_micros
    assert prices == {"UTC": 120_000, "Europe/Berlin": 600_000}
    with pytest.raises(Exception, match="cgrates_timezone 'Mars/Base' is not an IANA zone"):
        config_from_dict({"rating": {"cgrates_timezone": "Mars/Base"}})
