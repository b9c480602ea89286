"""Real CGRateS tariff plans (../shared/data/cgrates_tp), priced like CGRateS prices them.

engine_unit_inline is the CSV of CGRateS' engine/loader_csv_test.go; the expected costs
below are the ones CGRateS asserts on that data in engine/calldesc_test.go (cited per
case). CGRateS' unit tests run with the engine package's initial
globalRoundingDecimals = 6 (engine/libtest.go / storage init; config is not loaded),
so those cases load the plan with rounding_decimals=6. The tutorial plans have no
CGRateS cost assertions; their expected values are worked out by hand (arithmetic in
the comments) at CGRateS' configured default, rounding_decimals 5.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from paths import SHARED_DATA, needs_shared

from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

TP_ROOT = SHARED_DATA / "cgrates_tp"
pytestmark = needs_shared("cgrates_tp")
S = 1_000_000_000
M = 1_000_000


@cache
def _plan(name: str, rounding_decimals: int) -> TariffPlan:
    return load_tp_dir(TP_ROOT / name, rounding_decimals=rounding_decimals)


def _cost(
    plan: TariffPlan,
    tenant: str,
    category: str,
    subject: str,
    dest: str,
    start: datetime,
    end: datetime,
) -> int:
    usage_ns = (end - start) // timedelta(microseconds=1) * 1000
    return plan.rate(
        tenant=tenant,
        category=category,
        subject=subject,
        destination=dest,
        start=start,
        usage_ns=usage_ns,
    ).cost_micros


def _t(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (CGRateS test function, tenant/category/subject, destination, start, end, cost in micros)
ENGINE_CASES = [
    ("TestGetCost", "vdf/0/rif", "0256", "2012-02-02 17:30", "2012-02-02 18:30", 2701 * M),
    ("TestGetCostRounding", "cgrates.org/call/round", "49", "2017-02-02 17:30",
     "2017-02-02 17:33", 300_100),
    ("TestGetCostTimespans", "test/0/trp", "0256", "2013-10-08 09:23:02",
     "2013-10-08 09:24:27", 85 * M),
    ("TestGetCostRateGroups", "test/0/trp", "0256", "2013-10-07 14:50",
     "2013-10-07 14:52:12", 132 * M),
    ("TestFullDestNotFound", "vdf/0/rif", "0256308200", "2012-02-02 17:30",
     "2012-02-02 18:30", 2701 * M),
    ("TestSubjectNotFound", "vdf/0/not_exiting", "025740532", "2013-02-01 17:30",
     "2013-02-01 18:30", 2701 * M),
    ("TestMultipleRatingPlans", "vdf/0/rif", "0257308200", "2012-02-08 17:30",
     "2012-02-08 18:30", 2701 * M),
    ("TestSpansMultipleRatingPlans", "vdf/0/rif", "0257308200", "2012-02-07 23:50",
     "2012-02-08 00:30", 2100 * M),
    ("TestLessThanAMinute", "vdf/0/rif", "0257308200", "2012-02-08 23:50",
     "2012-02-08 23:50:30", 15 * M),
    ("TestUniquePrice", "vdf/0/rif", "0723045326", "2012-02-08 22:50",
     "2012-02-08 23:50:21", 1_810_500_000),
    ("TestMinutesCost", "vdf/0/rif", "0723", "2012-02-08 22:50", "2012-02-08 22:51:50", 55 * M),
    ("TestGetCostWithMaxCost", "cgrates.org/call/max", "0723123113", "2015-03-23 06:00",
     "2015-03-23 06:30", 1800 * M),
    ("TestGetCostWithMaxCostFree", "cgrates.org/call/max", "0723123113", "2015-03-23 19:00",
     "2015-03-23 19:30", 10 * M),
    ("TestGetCostRoundingIssue", "cgrates.org/call/dy", "0723123113", "2015-10-26 13:29:27",
     "2015-10-26 13:29:51", 170_000),
    ("TestCDGetCostANY", "cgrates.org/data/rif", "*any", "2014-03-04 06:00",
     "2014-03-04 06:00:01", 60 * M),
    ("TestCDDataGetCost", "cgrates.org/data/rif", "*any", "2014-03-04 06:00",
     "2014-03-04 06:01:05", 65 * M),
    ("TestGetCostZero", "vdf/0/rif", "0256", "2012-02-02 17:30", "2012-02-02 17:30", 0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "dest", "start", "end", "expected"),
    [c[1:] for c in ENGINE_CASES],
    ids=[c[0] for c in ENGINE_CASES],
)
def test_cgrates_engine_unit_cases(
    key: str, dest: str, start: str, end: str, expected: int
) -> None:
    """Expected costs asserted by cgrates/cgrates engine/calldesc_test.go (the test id)."""
    plan = _plan("engine_unit_inline", 6)
    tenant, category, subject = key.split("/")
    got = _cost(plan, tenant, category, subject, dest, _iso(start), _iso(end))
    assert got == expected


def test_cgrates_rounding_case_at_the_default_decimals() -> None:
    # TestGetCostRounding at rounding_decimals 5 (a configured CGRateS daemon):
    # 180s of 0.1/60s: 0.3 / 180 = 0.0016667 -> 0.00167 * 180 = 0.3006 -> *middle 4
    plan = _plan("engine_unit_inline", 5)
    cost = _cost(
        plan, "cgrates.org", "call", "round", "49", _t(2017, 2, 2, 17, 30), _t(2017, 2, 2, 17, 33)
    )
    assert cost == 300_600


def test_cgrates_subject_without_profile_or_wildcard_fails() -> None:
    # TestSubjectNotFoundCostNegativeOne: cgrates.org/0 has no subject and no *any profile.
    plan = _plan("engine_unit_inline", 6)
    with pytest.raises(RatingError):
        _cost(
            plan,
            "cgrates.org",
            "0",
            "not_exiting",
            "025740532",
            _t(2013, 2, 1, 17, 30),
            _t(2013, 2, 1, 18, 30),
        )


def test_cgrates_max_session_cases() -> None:
    plan = _plan("engine_unit_inline", 6)
    # TestMaxSessionTimeWithMaxCost: MX_DISC (MaxCost 10 *disconnect, 1/s), account of 11 -> 10s
    assert (
        plan.max_usage(
            tenant="cgrates.org",
            subject="max",
            destination="0723123113",
            start=_t(2015, 3, 23, 6, 0),
            amount_micros=11 * M,
            limit_ns=1800 * S,
        )
        == 10 * S
    )
    # TestMaxSessionTimeWithMaxCostFree: MX_FREE after 18:00 caps the cost -> the full 30m
    assert (
        plan.max_usage(
            tenant="cgrates.org",
            subject="max",
            destination="0723123113",
            start=_t(2015, 3, 23, 19, 0),
            amount_micros=11 * M,
            limit_ns=1800 * S,
        )
        == 1800 * S
    )
    # TestMaxSesionTimeLongerThanMoney: 10000 buys 1 connect fee + 9999s at 1/s
    assert (
        plan.max_usage(
            tenant="cgrates.org",
            subject="money",
            destination="0723",
            start=_t(2015, 7, 24, 13, 37),
            amount_micros=10_000 * M,
            limit_ns=3 * 3600 * S,
        )
        == 9999 * S
    )


TUTORIAL_DAY = _t(2014, 8, 4, 13, 0)  # a Monday after every tutorial activation time


def test_tutorial_plan() -> None:
    plan = _plan("tutorial", 5)
    # 1001 -> 1002, RT_20CNT: 0.4 + 0.2 + 60 * round5(0.1/60) = 0.6 + 0.1002 -> 0.7002
    assert (
        _cost(
            plan,
            "cgrates.org",
            "call",
            "1001",
            "1002",
            TUTORIAL_DAY,
            TUTORIAL_DAY + timedelta(minutes=2),
        )
        == 700_200
    )
    # 1003 -> 1001, RT_10CNT 90s: 0.2 + 0.1 + 30 * round5(0.025/30 = 0.00083333) = 0.0249
    assert (
        _cost(
            plan,
            "cgrates.org",
            "call",
            "1003",
            "1001",
            TUTORIAL_DAY,
            TUTORIAL_DAY + timedelta(seconds=90),
        )
        == 324_900
    )
    # 1001 before its 2014-01-14 activation: the 2010 row (RP_1002 -> DST_1001, RT_20CNT)
    early = _t(2013, 6, 3, 10, 0)
    assert (
        _cost(plan, "cgrates.org", "call", "1001", "1001", early, early + timedelta(seconds=60))
        == 600_000
    )
    # 1001 -> 1003: 0.01/s with MaxCost 0.12 *disconnect: 60s costs 0.6, 1.00 buys 12s
    assert (
        _cost(
            plan,
            "cgrates.org",
            "call",
            "1001",
            "1003",
            TUTORIAL_DAY,
            TUTORIAL_DAY + timedelta(seconds=60),
        )
        == 600_000
    )
    assert (
        plan.max_usage(
            tenant="cgrates.org",
            subject="1001",
            destination="1003",
            start=TUTORIAL_DAY,
            amount_micros=M,
            limit_ns=600 * S,
        )
        == 12 * S
    )
    # sms, RT_SMS 0.01 per unit (a bare "1" RateUnit is 1ns): 3 messages -> 0.03
    usage = plan.rate(
        tenant="cgrates.org",
        category="sms",
        subject="1001",
        destination="1002",
        start=TUTORIAL_DAY,
        usage_ns=3,
    )
    assert usage.cost_micros == 30_000


def test_testtp_plan() -> None:
    plan = _plan("testtp", 5)
    day = _t(2016, 3, 1, 12, 0)
    # RT_1CENT: Rate 1 per 1s to +4917...: 60s -> 60
    assert (
        _cost(plan, "cgrates.org", "call", "1001", "+49171234567", day, day + timedelta(seconds=60))
        == 60 * M
    )
    # free (from 2016): RT_ZERO -> 0
    assert (
        _cost(plan, "cgrates.org", "call", "free", "+49171234567", day, day + timedelta(seconds=60))
        == 0
    )

    def data(subject: str, units: int) -> int:
        return plan.rate(
            tenant="cgrates.org",
            category="data",
            subject=subject,
            destination="222",
            start=day,
            usage_ns=units,
        ).cost_micros

    # RT_DATA_2c: 0.002 per 10 units in 10-unit increments: 1000 -> 0.2; 15 -> 20 -> 0.004
    assert data("anyone", 1000) == 200_000
    assert data("anyone", 15) == 4_000
    # datar, RT_DATA_r: 0.1 per 1048576 in 10240 increments, *up 5. 1048576 units ->
    # 103 increments = 1054720; 1054720 * 0.1 / 1048576 = 0.1005859 -> 0.10059;
    # / 103 = 0.00097660 -> 0.00098; * 103 = 0.10094 -> *up 5 -> 0.10094
    assert data("datar", 1_048_576) == 100_940
    sms = plan.rate(
        tenant="cgrates.org", category="sms", subject="x", destination="1", start=day, usage_ns=3
    )
    assert sms.cost_micros == 15_000  # RT_SMS_5c 0.005 per unit, *up 4


def test_oldtutorial_plan() -> None:
    plan = _plan("oldtutorial", 5)
    peak = TUTORIAL_DAY.replace(hour=10)  # Monday 10:00, PEAK
    evening = TUTORIAL_DAY.replace(hour=20)  # Monday 20:00, OFFPEAK_EVENING
    # 1001 (RP_RETAIL2) -> 1002 at peak: RT_20CNT 120s -> 0.7002
    assert (
        _cost(plan, "cgrates.org", "call", "1001", "1002", peak, peak + timedelta(seconds=120))
        == 700_200
    )
    # off-peak: RT_10CNT 120s: 0.2 + 0.1 + 60 * round5(0.05/60 = 0.00083333) = 0.0498
    assert (
        _cost(
            plan, "cgrates.org", "call", "1001", "1002", evening, evening + timedelta(seconds=120)
        )
        == 349_800
    )
    # 1001 -> 1007: 0.01/s, MaxCost 0.62 *free: 120s would be 1.2, capped at 0.62
    assert (
        _cost(plan, "cgrates.org", "call", "1001", "1007", peak, peak + timedelta(seconds=120))
        == 620_000
    )
    # anyone else (*any, RP_RETAIL1) -> 1007: MaxCost 0.62 *disconnect: not capped,
    # but 10.00 buys only 62s
    assert (
        _cost(plan, "cgrates.org", "call", "1005", "1007", peak, peak + timedelta(seconds=120))
        == 1_200_000
    )
    assert (
        plan.max_usage(
            tenant="cgrates.org",
            subject="1005",
            destination="1007",
            start=peak,
            amount_micros=10 * M,
            limit_ns=600 * S,
        )
        == 62 * S
    )


def test_tutorial2_plan() -> None:
    plan = _plan("tutorial2", 5)
    monday = _t(2019, 3, 4, 10, 0)  # PEAK (weekdays from 08:00)

    def cost(subject: str, dest: str, start: datetime, usage_s: int) -> int:
        return _cost(
            plan, "cgrates.org", "call", subject, dest, start, start + timedelta(seconds=usage_s)
        )

    # 1001 -> 1002, RT_60C: 0.1 + 60 * 0.01 = 0.7
    assert cost("1001", "1002", monday, 60) == 700_000
    # 1001 -> 1012 is not in RP_1001: its fallback subject *any (RP_STANDARD), PEAK,
    # RT_120C 90s: 0.2 + 1.2 (first 1m increment) + 30s * 0.02 = 2.0
    assert cost("1001", "1012", monday, 90) == 2_000_000
    # same at 20:00 (OFFPEAK_EVENING, RT_60C): 0.1 + 90 * 0.01 = 1.0
    assert cost("1001", "1012", monday.replace(hour=20), 90) == 1_000_000
    # Saturday (OFFPEAK_WEEKEND 6;7), RT_60C: 0.1 + 0.6 = 0.7
    assert cost("1001", "1012", _t(2019, 3, 9, 10, 0), 60) == 700_000
    # 3012 (DST_2030), RT_120C on *any: 0.2 + 1.2 = 1.4
    assert cost("1002", "3012", monday, 60) == 1_400_000
    # the free-text destination "voicemail": RT_0 -> 0
    assert cost("1002", "voicemail", monday, 60) == 0
    # RPF_SPECIAL_BLC, RT_10C_CN: connect fee 0.1, rate 0 with RateUnit "0" (read as 1s)
    assert cost("RPF_SPECIAL_BLC", "1002", monday, 300) == 100_000
    # 2010: prefix 20 is DST_20 (DR_20_60C, NEW_YEAR only, weight 20) and DST_2030
    # (DR_2030_120C, *any, weight 10). CGRateS skips destinations with no timing active
    # at the call start (ratingprofile.go GetRatingPlansForPrefix, timeChecker):
    # 2024-01-08 -> DST_2030, RT_120C 60s: 0.2 + 1.2 = 1.4
    assert cost("1001", "2010", _t(2024, 1, 8, 10, 0), 60) == 1_400_000
    # New Year's Day -> DST_20, RT_60C: 0.1 + 60 * 0.01 = 0.7
    assert cost("1001", "2010", _t(2024, 1, 1, 10, 0), 60) == 700_000
    # from 23:59 on Dec 31 into New Year's Day: DST_2030 for the whole call (no
    # re-match): 0.2 + 1.2 (first 1m increment) + 60s * 0.02 = 2.6
    assert cost("1001", "2010", _t(2023, 12, 31, 23, 59), 120) == 2_600_000

    def units(category: str, dest: str, usage: int) -> int:
        return plan.rate(
            tenant="cgrates.org",
            category=category,
            subject="1001",
            destination=dest,
            start=monday,
            usage_ns=usage,
        ).cost_micros

    # data, RT_1024_1: 1 per 1024 units in 1024 increments: 2048 -> 2, 1025 -> 2048 -> 2
    assert units("data", "*any", 2048) == 2 * M
    assert units("data", "*any", 1025) == 2 * M
    # sms: 1002 -> RT_10C1 0.1 per message; 1012 -> DST_10, RT_20C1 0.2 per message
    assert units("sms", "1002", 1) == 100_000
    assert units("sms", "1012", 2) == 400_000
    # reseller1: RT_10CNT, 0.1 per call whatever its length
    assert units("reseller1", "1002", 600 * S) == 100_000


def test_every_reference_plan_loads() -> None:
    names = sorted(p.name for p in TP_ROOT.iterdir() if p.is_dir())
    loaded = []
    for name in names:
        try:
            load_tp_dir(TP_ROOT / name)
        except Exception as exc:  # report which plan failed and why
            loaded.append(f"{name}: {exc}")
    assert loaded == []
