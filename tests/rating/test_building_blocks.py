"""Rating building blocks: Go durations, the prefix index, time periods, model checks."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from chargingd.rating.durations import DurationError, format_duration, parse_duration
from chargingd.rating.model import (
    MaxCostStrategy,
    Rate,
    RateSlot,
    RoundingMethod,
    TariffError,
)
from chargingd.rating.periods import TimePeriod, normalize_weekday, parse_time_of_day
from chargingd.rating.prefixes import PrefixError, PrefixIndex

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("90s", 90 * S),
        ("2m10s", 130 * S),
        ("1h0m21s", 3621 * S),
        ("2048ns", 2048),
        ("1.5s", 1_500_000_000),
        ("300ms", 300_000_000),
        ("1µs", 1000),
        ("1us", 1000),
        ("0s", 0),
        ("0", 0),
        ("60000000000", 60 * S),
        ("1h", 3600 * S),
        (".5m", 30 * S),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "s", "1x", "-1s", "1 s", "1.5ns", "ten", "1s2"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (90 * S, "1m30s"), (3621 * S, "1h0m21s"), (1_500_000_000, "1.5s"),
     (2048, "2.048µs"), (999, "999ns"), (300_000_000, "300ms"), (3600 * S, "1h0m0s")],
)  # fmt: skip
def test_format_duration_like_go(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


def test_prefix_index_longest_match_and_shared_prefixes() -> None:
    index = PrefixIndex()
    index.add_many("UK", ["44"])
    index.add_many("UK_MOBILE", ["447", "+4478"])
    index.add("447", "UK_MOBILE_ALL")
    index.add("447", "UK_MOBILE")  # a duplicate is ignored
    assert list(index.matches("+447812")) == [
        ("4478", ("UK_MOBILE",)),
        ("447", ("UK_MOBILE", "UK_MOBILE_ALL")),
        ("44", ("UK",)),
    ]
    assert list(index.matches("33")) == []
    # Only destinations a plan prices count: the longest such prefix wins.
    assert index.longest_in("+447812", {"UK", "UK_MOBILE_ALL"}) == ("447", ("UK_MOBILE_ALL",))
    assert index.longest_in("447812", {"UK"}) == ("44", ("UK",))
    assert index.longest_in("447812", {"FR"}) is None
    assert len(index) == 3
    assert index.destination_ids() == {"UK", "UK_MOBILE", "UK_MOBILE_ALL"}
    with pytest.raises(PrefixError):
        index.add("44a", "X")
    with pytest.raises(PrefixError):
        index.add("", "X")


def test_prefix_deck_file(tmp_path: Path) -> None:
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination\n# comment\n\n49,DE\n4915,DE_MOBILE\n")
    index = PrefixIndex()
    assert index.load_deck(deck) == 2
    assert next(index.matches("491512"))[1] == ("DE_MOBILE",)
    deck.write_text("49,DE\n4915\n")
    with pytest.raises(PrefixError, match=r"deck\.csv:2"):
        PrefixIndex().load_deck(deck)
    deck.write_text("49,\n")
    with pytest.raises(PrefixError, match="empty destination"):
        PrefixIndex().load_deck(deck)


def test_clean_deck_loads_in_bulk_and_duplicates_merge(tmp_path: Path) -> None:
    deck = tmp_path / "deck.csv"
    deck.write_text("prefix,destination\n49,DE\n4915,DE_MOBILE\n4916,DE_MOBILE\n")
    index = PrefixIndex()
    index.add("33", "FR")
    assert index.load_deck(deck) == 3
    assert [ids for _, ids in index.matches("4916123")] == [("DE_MOBILE",), ("DE",)]
    assert next(index.matches("331"))[1] == ("FR",)
    deck.write_text("49,DE\n49,DE_ALL\n")  # one prefix, two destinations: the slow path
    assert index.load_deck(deck) == 2
    assert next(index.matches("4930"))[1] == ("DE", "DE_ALL")


def test_time_periods() -> None:
    peak = TimePeriod(
        "PEAK", week_days=frozenset({1, 2, 3, 4, 5}), start_s=8 * 3600, end_s=19 * 3600
    )
    monday = date(2026, 3, 2)
    assert peak.covers(monday, 8 * 3600) and not peak.covers(monday, 19 * 3600)
    assert not peak.covers(date(2026, 3, 7), 10 * 3600)  # Saturday
    xmas = TimePeriod("XMAS", months=frozenset({12}), month_days=frozenset({25}))
    assert xmas.matches_day(date(2030, 12, 25)) and not xmas.matches_day(date(2030, 12, 24))
    only_2026 = TimePeriod("Y", years=frozenset({2026}), dates=frozenset({date(2026, 1, 1)}))
    assert only_2026.matches_day(date(2026, 1, 1)) and not only_2026.matches_day(date(2026, 1, 2))
    assert TimePeriod("A").always and not peak.always
    assert normalize_weekday(0) == 7 and normalize_weekday(7) == 7 and normalize_weekday(1) == 1
    assert parse_time_of_day("08:30") == 8 * 3600 + 1800
    assert parse_time_of_day("24:00") == 86_400
    for bad in ("8", "08:60", "25:00", "aa:bb"):
        with pytest.raises(ValueError):
            parse_time_of_day(bad)
    with pytest.raises(ValueError):
        TimePeriod("BAD", start_s=10, end_s=10)
    with pytest.raises(ValueError):
        TimePeriod("BAD", week_days=frozenset({8}))
    with pytest.raises(ValueError):
        normalize_weekday(8)


def test_model_validation_and_spellings() -> None:
    with pytest.raises(TariffError, match="first slot must start at 0s"):
        Rate("R", (RateSlot(30 * S, Decimal(1), 60 * S, S),))
    with pytest.raises(TariffError):
        RateSlot(0, Decimal(1), 0, S)
    with pytest.raises(TariffError):
        RateSlot(0, Decimal(-1), 60 * S, S)
    assert RoundingMethod.parse("*middle") is RoundingMethod.HALF_UP
    assert RoundingMethod.parse("*UP") is RoundingMethod.UP
    assert RoundingMethod.parse("half_up") is RoundingMethod.HALF_UP
    assert MaxCostStrategy.parse("*disconnect") is MaxCostStrategy.DISCONNECT
    with pytest.raises(ValueError):
        RoundingMethod.parse("*sideways")
    with pytest.raises(ValueError):
        MaxCostStrategy.parse("*maybe")
