"""Pricer reuses one RateCard per number (its leading digits a prefix can cover) for
every call starting before its rate can change; each call is still priced exactly as
by a card built for its own start.

Many calls at random starts (clustered at period boundaries, DST changes and
profile activations), asked in time order and shuffled, through one Pricer (cards
reused) and through fresh cards of a second copy of the plan (nothing reused):
every price, billed length and paid usage must be equal. A wrong validity interval
(a card used past its boundary or activation) gives another rate or split.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from paths import FIXTURES, REPO

from chargingd.rating.loaders import load_plan
from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan
from chargingd.sessions.pricing import Pricer

MS = 1_000_000
CGR = FIXTURES / "cgrates"
USAGES_S = (0, 1, 29, 61, 1800, 7200)
AMOUNTS = (1, 70_000, 5_000_000)


def _cgr(name: str, night: str = "", **kw: object) -> Callable[[], TariffPlan]:
    def load() -> TariffPlan:
        path = CGR / name
        if night:  # the NIGHT timing moved: a destination turns active mid-day
            path = Path(tempfile.mkdtemp(prefix="cards-")) / name
            shutil.copytree(CGR / name, path)
            timings = (path / "Timings.csv").read_text().replace("00:00:00;07:59:59", night)
            (path / "Timings.csv").write_text(timings)
        plan = load_tp_dir(path, **kw)  # type: ignore[arg-type]
        plan.default_tenant = plan.default_tenant or "t1"
        return plan

    return load


CASES: list[tuple[str, Callable[[], TariffPlan], datetime, list[str], list[str]]] = [
    (  # London local time, DST end in October, the 2027 activation of WHOLESALE_2027
        "sample",
        lambda: load_plan(REPO / "config" / "tariffs" / "sample.toml"),
        datetime(2026, 12, 30, tzinfo=UTC),
        ["acc1", "wholesale", "acc2", "carrier-b"],
        ["+442079460000", "447700900123", "+12125551234", "+33612345678", "442079812345"],
    ),
    (
        "sample_dst",
        lambda: load_plan(REPO / "config" / "tariffs" / "sample.toml"),
        datetime(2026, 10, 24, tzinfo=UTC),
        ["acc1"],
        ["442079460000", "447700900123"],
    ),
    (
        "peak_offpeak_dst",
        _cgr("peak_offpeak", timezone="Europe/Berlin"),
        datetime(2024, 3, 29, tzinfo=UTC),
        ["x"],
        ["4930123"],
    ),
    (
        "timed",
        _cgr("timed_destinations", rounding_decimals=5),
        datetime(2024, 5, 30, tzinfo=UTC),
        ["alice", "bob", "carol"],
        ["447123", "447912"],
    ),
    (  # a longer-prefix destination bound only 19:30-23:59:59 Berlin time
        "timed_evening",
        _cgr("timed_destinations", "19:30:00;23:59:59", timezone="Europe/Berlin"),
        datetime(2024, 3, 29, tzinfo=UTC),
        ["alice", "bob", "dave"],
        ["447123", "447912", "33123", "4471239", "4479"],
    ),
    ("activation", _cgr("activation"), datetime(2024, 5, 30, tzinfo=UTC), ["alice"], ["1555"]),
]


def _starts(plan: TariffPlan, base: datetime, rng: random.Random) -> list[int]:
    """ms starts over four days: random, at every hour +-3 s, at activations +-3 s."""
    base_ms = int(base.timestamp() * 1000)
    span_ms = 4 * 86_400_000
    starts = [base_ms + rng.randrange(span_ms) for _ in range(150)]
    hours = [base_ms + h * 3_600_000 for h in range(96)]
    switches = [
        int(a.activation_time.timestamp() * 1000) for p in plan.profiles for a in p.activations
    ]
    for mark in [*rng.sample(hours, 40), *switches]:
        starts += [mark + d for d in (-3000, -1, 0, 1, 999, 3000)]
    starts += [s + rng.randrange(1, 90_000) for s in rng.sample(starts, 60)]
    return [s for s in starts if base_ms - span_ms < s < base_ms + 2 * span_ms]


def _fresh(plan: TariffPlan, subject: str, number: str, start_ms: int) -> object:
    try:
        card = plan.card(subject=subject, destination=number.lstrip("+"), start_ns=start_ms * MS)
        costs = [card.price(u * 1_000_000_000) for u in USAGES_S]
        paid = [card.max_usage(a) // 1_000_000_000 for a in AMOUNTS]
    except RatingError as exc:
        return type(exc).__name__
    return [
        (c.cost_micros, -(-c.billed_ns // 1_000_000_000), c.destination_id) for c in costs
    ], paid


def _reused(pricer: Pricer, subject: str, number: str, start_ms: int, seen: set[object]) -> object:
    try:
        costs = [
            pricer.price("p", subject=subject, number=number, start_ms=start_ms, usage_s=u)
            for u in USAGES_S
        ]
        paid = [
            pricer.paid_s("p", subject=subject, number=number, start_ms=start_ms, amount_micros=a)
            for a in AMOUNTS
        ]
    except RatingError as exc:
        return type(exc).__name__
    seen.add(pricer._last_card)  # the card that answered them
    return [(c.cost_micros, c.billed_s, c.destination_id) for c in costs], paid


@pytest.mark.parametrize(("name", "loader", "base", "subjects", "numbers"), CASES)
def test_reused_cards_price_like_fresh_ones(
    name: str,
    loader: Callable[[], TariffPlan],
    base: datetime,
    subjects: list[str],
    numbers: list[str],
) -> None:
    rng = random.Random(name)
    reference = loader()
    pricer = Pricer({"p": loader()})
    starts = _starts(reference, base, rng)
    queries = [(s, n, t) for s in subjects for n in numbers for t in sorted(starts)]
    shuffled = rng.sample(queries, len(queries))
    expected = {q: _fresh(reference, *q) for q in queries}
    cards: set[object] = set()
    for order in (queries, shuffled):
        got = {q: _reused(pricer, *q, cards) for q in order}
        wrong = [(q, got[q], expected[q]) for q in order if got[q] != expected[q]]
        assert not wrong, wrong[:3]
    assert any(isinstance(a, tuple) for a in expected.values()), name
    # Cards were shared: far fewer cards than calls priced.
    priced = sum(isinstance(a, tuple) for a in expected.values())
    assert 0 < len(cards) < priced, (len(cards), priced)


def test_a_card_is_reused_until_its_boundary_only() -> None:
    plan = load_plan(REPO / "config" / "tariffs" / "sample.toml")
    pricer = Pricer({"p": plan})
    # Monday 4 January 2027, peak until 19:00 London (= UTC in winter).
    first = int(datetime(2027, 1, 4, 18, 0, tzinfo=UTC).timestamp() * 1000)
    card = pricer._card("p", "acc1", "447700900123", first * MS)
    assert card.until_ns == int(datetime(2027, 1, 4, 19, tzinfo=UTC).timestamp()) * 10**9
    later = first + 3_599_999
    assert pricer._card("p", "acc1", "447700900123", later * MS) is card
    at_boundary = (first + 3_600_000) * MS
    assert pricer._card("p", "acc1", "447700900123", at_boundary) is not card

    def cost(start_ms: int) -> int:
        number = "447700900123"
        found = pricer.price("p", subject="acc1", number=number, start_ms=start_ms, usage_s=1800)
        return found.cost_micros

    # Ten minutes: all peak, split at 19:00 (5 min each), all off-peak.
    assert cost(first) > cost(first + 55 * 60_000) > cost(first + 3_600_000)


def test_the_last_card_answers_only_the_same_question_it_covers() -> None:
    # Pricer._card keeps the last card it answered (an authorize's price, then the
    # usage its hold pays for): taken for the same plan, subject and number at a start
    # it covers, never for another question or past its boundary.
    plan = load_plan(REPO / "config" / "tariffs" / "sample.toml")
    pricer = Pricer({"p": plan, "q": load_plan(REPO / "config" / "tariffs" / "sample.toml")})
    first = int(datetime(2027, 1, 4, 18, 0, tzinfo=UTC).timestamp() * 1000)
    card = pricer._card("p", "acc1", "447700900123", first * MS)
    assert pricer._card("p", "acc1", "447700900123", (first + 1000) * MS) is card
    assert pricer._card("q", "acc1", "447700900123", first * MS) is not card
    assert pricer._card("p", "acc1", "447700900123", first * MS) is card  # from _cards
    other = pricer._card("p", "acc1", "12125551234", first * MS)
    assert other is not card and other.destination_id != card.destination_id
    assert pricer._card("p", "acc1", "447700900123", first * MS) is card
    late = pricer._card("p", "acc1", "447700900123", (first + 3_600_000) * MS)
    assert late is not card and not card.covers((first + 3_600_000) * MS)
    # every answer as a card built for its own start prices it
    for number, start_ms in [("447700900123", first + 5), ("447700900123", first + 3_600_001)]:
        for subject in ("acc1", "wholesale"):
            got = pricer.price("p", subject=subject, number=number, start_ms=start_ms, usage_s=1800)
            assert (got.cost_micros, got.billed_s, got.destination_id) == _fresh(
                plan, subject, number, start_ms
            )[0][4]  # type: ignore[index]  # (USAGES_S[4]: 1800)


def test_a_numbers_card_is_taken_again_only_for_its_plan_and_subject() -> None:
    """Pricer._card's card by number (round 19a: a call's later questions among other
    calls'): the same number asked under two plans (one of them dearer) and three
    subjects (three rates), interleaved with other numbers, across a period boundary,
    and past CARDS_MAX numbers (the memo forgotten): every answer as a fresh card's.
    Fails when the memo is taken for another plan or subject, or past its card's
    boundary."""
    sample = REPO / "config" / "tariffs" / "sample.toml"
    dear = Path(tempfile.mkdtemp(prefix="cards-")) / "dear.toml"
    dear.write_text(sample.read_text().replace('rate = "0.', 'rate = "1.'))
    plans = {"p": load_plan(sample), "q": load_plan(dear)}
    assert plans["p"] is not plans["q"]
    pricer = Pricer(plans)
    fresh = {"p": load_plan(sample), "q": load_plan(dear)}
    rng = random.Random(19)
    # Monday 4 January 2027, peak until 19:00 London (= UTC in winter)
    base_ms = int(datetime(2027, 1, 4, 18, 55, tzinfo=UTC).timestamp() * 1000)
    number = "447700900123"
    others = [f"4420794{n:05d}" for n in range(40)]
    answers: set[tuple[int, int, str]] = set()
    for i in range(3000):
        plan_id = rng.choice("pq")
        subject = rng.choice(["acc1", "wholesale", "carrier-b"])
        called = number if i % 2 else rng.choice(others)
        start_ms = base_ms + rng.randrange(600_000)  # across 19:00
        usage_s = rng.choice((1, 61, 600))
        got = pricer.price(
            plan_id, subject=subject, number=called, start_ms=start_ms, usage_s=usage_s
        )
        card = fresh[plan_id].card(subject=subject, destination=called, start_ns=start_ms * MS)
        want = card.price(usage_s * 1_000_000_000)
        assert (got.cost_micros, got.destination_id) == (want.cost_micros, want.destination_id)
        paid = pricer.paid_s(
            plan_id, subject=subject, number=called, start_ms=start_ms, amount_micros=70_000
        )
        assert paid == card.max_usage(70_000) // 1_000_000_000
        if called == number and usage_s == 600:
            answers.add((got.cost_micros, start_ms >= base_ms + 300_000, plan_id + subject))
        if i == 1500:  # past CARDS_MAX numbers: the memo forgotten, then built again
            for n in range(5000):
                pricer.paid_s(
                    "p", subject="acc1", number=f"3361{n:06d}", start_ms=base_ms,
                    amount_micros=1,
                )  # fmt: skip
    # every plan, subject and period answered, not all at one price
    assert len({a[2] for a in answers}) == 6 and len({a[0] for a in answers}) >= 6
