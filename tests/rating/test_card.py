"""RateCard answers exactly what the full walk answers, warm or cold.

A card resolves a call once and prices usages that end before its horizon with a
boundary-free walk it remembers per (destination rate, usage). Compared here with
price.price_call / price.max_usage (the engine's full walk, resolved per question)
across period boundaries, DST changes, profile activations, fallbacks, max costs,
minimum durations and CGRateS rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from paths import FIXTURES, REPO

from chargingd.rating import price
from chargingd.rating.engine import epoch_ns
from chargingd.rating.loaders import load_plan
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

S = 1_000_000_000
CGR = FIXTURES / "cgrates"
USAGES_S = (0, 1, 5, 9, 10, 29, 30, 31, 59, 60, 61, 75, 90, 600, 3600, 4 * 3600)
AMOUNTS = (0, 1, 999, 10_000, 70_000, 1_000_000, 50_000_000, 10**15)

CASES: list[tuple[str, Callable[[], TariffPlan], datetime, str, list[str], list[str]]] = [
    (
        "sample",
        lambda: load_plan(REPO / "config" / "tariffs" / "sample.toml"),
        datetime(2026, 12, 28, tzinfo=UTC),  # the week of the 2027 price change
        "",
        ["acc1", "wholesale"],
        ["442079460000", "447700900123", "33612345678", "12125551234"],
    ),
    (
        "timed",
        lambda: load_tp_dir(CGR / "timed_destinations", rounding_decimals=5),
        datetime(2024, 5, 31, 12, tzinfo=UTC),  # carol's plan changes on June 1st
        "t1",
        ["alice", "bob", "carol"],
        ["447123", "447912", "33123"],
    ),
    (
        "peak_offpeak_dst",
        lambda: load_tp_dir(CGR / "peak_offpeak", timezone="Europe/Berlin"),
        datetime(2024, 3, 30, 12, tzinfo=UTC),  # the spring DST change in Berlin
        "t1",
        ["x"],
        ["4930123"],
    ),
    (
        "max_cost",
        lambda: load_tp_dir(CGR / "max_cost"),
        datetime(2024, 2, 1, tzinfo=UTC),
        "t1",
        ["free", "disc"],
        ["5255123"],
    ),
    (
        "rounding",
        lambda: load_tp_dir(CGR / "rounding", rounding_decimals=5),
        datetime(2024, 2, 1, tzinfo=UTC),
        "t1",
        ["x"],
        ["1555", "2555", "3555", "4555"],
    ),
    (
        "fallback",
        lambda: load_tp_dir(CGR / "fallback"),
        datetime(2024, 2, 1, tzinfo=UTC),
        "t1",
        ["gold", "nobody"],
        ["447700", "4930", "3312", "8888"],
    ),
    (
        "activation",
        lambda: load_tp_dir(CGR / "activation"),
        datetime(2024, 5, 31, 22, tzinfo=UTC),
        "acme",
        ["alice"],
        ["1555"],
    ),
]


def _instants(plan: TariffPlan, base: datetime) -> list[datetime]:
    grid = [base + timedelta(minutes=37 * i, seconds=i % 60) for i in range(2 * 24 * 60 // 37)]
    switches = [a.activation_time for p in plan.profiles for a in p.activations]
    near = [s + timedelta(seconds=d) for s in switches for d in (-3600, -61, -1, 0, 1)]
    return grid + [t for t in near if base - timedelta(days=2) < t < base + timedelta(days=2)]


def _full(plan: TariffPlan, tenant: str, subject: str, number: str, start: datetime) -> object:
    engine = plan._engine
    tenant = tenant or plan.default_tenant
    try:
        costs = [
            price.price_call(engine, tenant, "call", subject, number, start, u * S, breakdown=False)
            for u in USAGES_S
        ]
        paid = [
            price.max_usage(engine, tenant, "call", subject, number, start, a, plan.max_call_ns)
            for a in AMOUNTS
        ]
    except RatingError as exc:
        return type(exc).__name__
    fields = [(c.cost_micros, c.billed_ns, c.destination_id, c.decimals, c.capped) for c in costs]
    return fields, paid


def _carded(plan: TariffPlan, tenant: str, subject: str, number: str, start: datetime) -> object:
    try:
        card = plan.card(
            subject=subject, destination=number, start_ns=epoch_ns(start), tenant=tenant
        )
        costs = [card.price(u * S) for u in USAGES_S]
        paid = [card.max_usage(a) for a in AMOUNTS]
    except RatingError as exc:
        return type(exc).__name__
    fields = [(c.cost_micros, c.billed_ns, c.destination_id, c.decimals, c.capped) for c in costs]
    return fields, paid


@pytest.mark.parametrize(("name", "loader", "base", "tenant", "subjects", "numbers"), CASES)
def test_card_answers_like_the_full_walk(
    name: str,
    loader: Callable[[], TariffPlan],
    base: datetime,
    tenant: str,
    subjects: list[str],
    numbers: list[str],
) -> None:
    warm = loader()
    reference = loader()
    queries = list(itertools.product(subjects, numbers, _instants(warm, base)))
    expected = [_full(reference, tenant, s, n, t) for s, n, t in queries]
    assert [_carded(warm, tenant, s, n, t) for s, n, t in queries] == expected
    assert [_carded(warm, tenant, s, n, t) for s, n, t in queries] == expected  # all memoised
    assert any(isinstance(a, tuple) for a in expected), name


def test_rate_and_max_usage_go_through_the_card_and_agree() -> None:
    plan = load_plan(REPO / "config" / "tariffs" / "sample.toml")
    start = datetime(2027, 1, 4, 18, 59, 30, tzinfo=UTC)  # 30 s before off-peak in London
    card = plan.card(subject="a", destination="447700900123", start_ns=epoch_ns(start))
    assert card.horizon_ns == 30 * S
    for usage_s in (0, 10, 30, 31, 3600):
        via_rate = plan.rate(
            subject="a", destination="447700900123", start=start, usage_ns=usage_s * S
        )
        assert card.price(usage_s * S).cost_micros == via_rate.cost_micros
    assert card.max_usage(500_000) == plan.max_usage(
        subject="a", destination="447700900123", start=start, amount_micros=500_000
    )


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from chargingd.rating import card as card_module

    monkeypatch.setattr(card_module, "MAX_PRICES", 8)
    plan = load_plan(REPO / "config" / "tariffs" / "sample.toml")
    start_ns = epoch_ns(datetime(2027, 1, 9, 12, tzinfo=UTC))  # a Saturday: one rate all day
    card = plan.card(subject="a", destination="442079460000", start_ns=start_ns)
    for usage_s in range(1, 40):
        card.price(usage_s * S)
    assert len(plan._engine.card_prices) == 8


@pytest.mark.parametrize(("name", "loader", "base", "tenant", "subjects", "numbers"), CASES)
def test_a_kept_card_answers_its_full_walks_again_alike(
    name: str,
    loader: Callable[[], TariffPlan],
    base: datetime,
    tenant: str,
    subjects: list[str],
    numbers: list[str],
) -> None:
    """A card's full walks of max-usage (a call across a period boundary or an
    activation) are remembered per (card, start, budget, limit) (round 17b): the same
    card asked again, and asked of later starts it covers, answers what the full walk
    answers, for every amount and for a shorter limit too."""
    warm = loader()
    reference = loader()
    engine = reference._engine
    walked = 0
    for subject, number in itertools.product(subjects, numbers):
        for start in _instants(warm, base)[::3]:
            start_ns = epoch_ns(start)
            try:
                card = warm.card(
                    subject=subject, destination=number, start_ns=start_ns, tenant=tenant
                )
            except RatingError:
                continue
            starts = [start_ns, *(s for s in (start_ns + S, start_ns + 61 * S) if card.covers(s))]
            for _ in range(2):
                for at_ns, amount, limit in itertools.product(
                    starts, AMOUNTS, (warm.max_call_ns, 2 * 3600 * S)
                ):
                    try:
                        want: object = price.max_usage(
                            engine, tenant or reference.default_tenant, "call", subject,
                            number, datetime.fromtimestamp(at_ns / S, UTC), amount, limit,
                        )  # fmt: skip
                    except RatingError as exc:
                        want = type(exc)
                    try:
                        got: object = card.max_usage_at(at_ns, amount, limit)
                    except RatingError as exc:
                        got = type(exc)
                    assert got == want, (name, subject, number, start, at_ns, amount, limit)
            walked = max(walked, len(warm._engine.card_walks))
    if name in ("sample", "peak_offpeak_dst", "activation"):  # (boundaries within a call)
        assert walked > 0, name  # some question took the full walk, and was remembered


def test_remembered_walks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(price, "MAX_WALKS", 4)
    plan = load_plan(REPO / "config" / "tariffs" / "sample.toml")
    start = datetime(2027, 1, 4, 18, 59, 30, tzinfo=UTC)  # 30 s before off-peak in London
    card = plan.card(subject="a", destination="447700900123", start_ns=epoch_ns(start))
    for amount in range(1_000_000, 1_000_010):
        card.max_usage(amount)
    assert len(plan._engine.card_walks) == 4
