"""The rating engine remembers resolve() answers; they must equal a cold engine's.

Engine.resolve keeps answers by exact instant, and for plans with no period-bound
destination by profile-activation span. Compared here against a freshly loaded plan
(empty caches) across period boundaries, activation switches and timed destinations.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from paths import FIXTURES, REPO

from chargingd.rating.loaders import load_plan
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

ROOT = REPO
SAMPLE = ROOT / "config" / "tariffs" / "sample.toml"
TIMED = FIXTURES / "cgrates" / "timed_destinations"
S = 1_000_000_000


def _answer(plan: TariffPlan, tenant: str, subject: str, dest: str, start: datetime) -> object:
    try:
        cost = plan.rate(
            tenant=tenant, subject=subject, destination=dest, start=start, usage_ns=90 * S
        )
        paid = plan.max_usage(
            tenant=tenant, subject=subject, destination=dest, start=start, amount_micros=70_000
        )
    except RatingError as exc:
        return type(exc).__name__
    return (cost.cost_micros, cost.destination_id, cost.matched_prefix, cost.plan_id, paid)


def _instants(plan: TariffPlan, base: datetime) -> list[datetime]:
    grid = [base + timedelta(minutes=45 * i) for i in range(7 * 32)]
    switches = [a.activation_time for p in plan.profiles for a in p.activations]
    near = [s + timedelta(microseconds=d) for s in switches for d in (-1, 0, 1)]
    return grid + near


@pytest.mark.parametrize(
    ("loader", "base", "tenant", "subjects", "numbers"),
    [
        (
            lambda: load_plan(SAMPLE),
            datetime(2026, 12, 28, tzinfo=UTC),  # the week of the 2027 price change
            "",
            ["acc1", "wholesale", "carrier-b"],
            ["442079460000", "447700900123", "33612345678", "9999"],
        ),
        (
            lambda: load_tp_dir(TIMED, rounding_decimals=5),
            datetime(2024, 1, 8, tzinfo=UTC),  # a Monday
            "t1",
            ["alice", "bob"],
            ["447123", "447912", "33123"],
        ),
    ],
)
def test_warm_engine_answers_like_a_cold_one(
    loader: object, base: datetime, tenant: str, subjects: list[str], numbers: list[str]
) -> None:
    assert callable(loader)
    warm: TariffPlan = loader()
    instants = _instants(warm, base)
    queries = list(itertools.product(subjects, numbers, instants))
    warm_answers = [_answer(warm, tenant, s, n, t) for s, n, t in queries]
    warm_again = [_answer(warm, tenant, s, n, t) for s, n, t in queries]  # all cached now
    cold_answers = []
    for i, (s, n, t) in enumerate(queries):
        if i % 40 == 0:
            cold: TariffPlan = loader()  # fresh caches every few queries
        cold_answers.append(_answer(cold, tenant, s, n, t))
    assert warm_answers == warm_again == cold_answers
    assert any(isinstance(a, tuple) for a in warm_answers)


def test_rate_without_breakdown_has_the_same_total() -> None:
    plan = load_plan(SAMPLE)
    start = datetime(2027, 1, 4, 7, 59, 30, tzinfo=UTC)  # a Monday, 07:59:30 London
    for usage_s in (0, 1, 59, 61, 3600):
        full = plan.rate(subject="a", destination="442079460000", start=start, usage_ns=usage_s * S)
        bare = plan.rate(
            subject="a",
            destination="442079460000",
            start=start,
            usage_ns=usage_s * S,
            breakdown=False,
        )
        assert (bare.cost_micros, bare.billed_ns, bare.destination_id) == (
            full.cost_micros,
            full.billed_ns,
            full.destination_id,
        )
        assert bare.spans == ()
        assert len(full.spans) >= (1 if usage_s else 0)
