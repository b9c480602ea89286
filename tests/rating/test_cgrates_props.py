"""Property tests: the imported RT_20CNT plan against an independent CGRateS oracle.

The oracle below re-implements CGRateS' arithmetic for this one plan with Decimal
(engine/timespans.go createIncrementsSlice; calldesc.go GetCost): it shares no code
with chargingd's engine, so any usage and any rounding_decimals must agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES

from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.plan import TariffPlan

FIXTURE = FIXTURES / "cgrates" / "connect_fee_groups"
S = 1_000_000_000
M = 1_000_000
HOURS_3 = 3 * 3600 * S
START = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)


@cache
def _plan(decimals: int) -> TariffPlan:
    return load_tp_dir(FIXTURE, rounding_decimals=decimals)


def _q(value: Decimal, places: int, rounding: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=rounding)


def oracle_micros(usage_ns: int, decimals: int) -> int:
    """RT_20CNT: 0.4 connect, 0.2 for [0,60s) in one 60s increment, then 0.1/60s per 1s."""
    if usage_ns == 0:
        return 0  # CGRateS GetCost: a zero-length call costs nothing (TestGetCostZero)
    total = Decimal("0.4") + _q(Decimal("0.2"), decimals, ROUND_HALF_UP)
    rest_ns = usage_ns - 60 * S
    if rest_ns > 0:
        increments = -(-rest_ns // S)
        span = _q(Decimal(increments) * Decimal("0.1") / 60, decimals, ROUND_HALF_UP)
        one = _q(span / increments, decimals, ROUND_HALF_UP)
        total += one * increments
    return int(_q(total, 4, ROUND_CEILING) * M)  # DR_1002_20CNT: *up, 4 decimals


def _rate(usage_ns: int, decimals: int) -> int:
    cost = _plan(decimals).rate(subject="1001", destination="1002", start=START,
                                usage_ns=usage_ns)  # fmt: skip
    return cost.cost_micros


@settings(max_examples=300, deadline=None)
@given(usage_ns=st.integers(0, HOURS_3), decimals=st.integers(2, 8))
def test_rate_matches_the_oracle(usage_ns: int, decimals: int) -> None:
    assert _rate(usage_ns, decimals) == oracle_micros(usage_ns, decimals)


@settings(max_examples=100, deadline=None)
@given(amount_micros=st.integers(0, 20 * M))
def test_max_usage_is_the_longest_affordable_usage(amount_micros: int) -> None:
    plan = _plan(5)
    usage_ns = plan.max_usage(subject="1001", destination="1002", start=START,
                              amount_micros=amount_micros, limit_ns=HOURS_3)  # fmt: skip
    assert 0 <= usage_ns <= HOURS_3
    assert oracle_micros(usage_ns, 5) <= amount_micros
    if usage_ns < HOURS_3:
        assert oracle_micros(usage_ns + 1, 5) > amount_micros
