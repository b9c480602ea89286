"""Short codes and extensions in a tariff: `[numbers]` are whole numbers matched
exactly, so `+494711` (extension 4711 dialled from a German gateway) is rated apart
from the real numbers beginning with the same digits (+49 471 1..., Bremerhaven),
which a prefix `494711` would also match. `chargingd rate --country` reads the digits
as dialled as the daemon does and shows the number it rated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chargingd.app.cli import main
from chargingd.rating.loaders import TariffLoadError, load_plan
from chargingd.rating.prefixes import PrefixIndex

S = 1_000_000_000
TARIFF = """
[tariff]
id = "short"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
DE = ["49"]
DE_EMERGENCY = ["49110", "49112"]
US = ["1"]
US_EMERGENCY = ["1911"]

[numbers]
PBX = ["+494711", "494712"]

[rates.NATIONAL]
rate = "0.60"
unit = "60s"
increment = "1s"

[rates.FREE]
rate = "0"
unit = "60s"
increment = "60s"

[plans.P]
[[plans.P.rates]]
destinations = ["DE", "US"]
rate = "NATIONAL"
[[plans.P.rates]]
destinations = ["DE_EMERGENCY", "US_EMERGENCY", "PBX"]
rate = "FREE"

[[profiles]]
subject = "*any"
plan = "P"
from = 2020-01-01T00:00:00Z
"""


@pytest.fixture
def tariff(tmp_path: Path) -> Path:
    path = tmp_path / "short.toml"
    path.write_text(TARIFF)
    return path


def _rate(capsys: pytest.CaptureFixture[str], plan: Path, *args: str) -> dict[str, object]:
    code = main(
        ["rate", "--plan", str(plan), "--subject", "a", "--start", "2026-03-02T10:00:00Z",
         "--usage", "60", *args]
    )  # fmt: skip
    body: dict[str, object] = json.loads(capsys.readouterr().out)
    assert code == 0, body
    return body


@pytest.mark.parametrize(
    ("dialled", "country", "number", "destination", "cost"),
    [
        ("4711", "DE", "+494711", "PBX", "0.0000"),  # the extension, as the daemon reads it
        ("4712", "DE", "+494712", "PBX", "0.0000"),
        ("0471123456", "DE", "+49471123456", "DE", "0.6000"),  # not the extension
        ("47111", "DE", "+4947111", "DE", "0.6000"),
        ("112", "DE", "+49112", "DE_EMERGENCY", "0.0000"),
        ("911", "US", "+1911", "US_EMERGENCY", "0.0000"),
        ("911", "DE", "+49911", "DE", "0.6000"),  # 911 is no short code in Germany
    ],
)
def test_short_numbers_as_dialled(
    capsys: pytest.CaptureFixture[str],
    tariff: Path,
    dialled: str,
    country: str,
    number: str,
    destination: str,
    cost: str,
) -> None:
    body = _rate(capsys, tariff, "--destination", dialled, "--country", country)
    assert (body["number"], body["destination_id"], body["cost"]) == (number, destination, cost)


def test_a_whole_number_never_answers_for_the_longer_numbers_it_begins(tariff: Path) -> None:
    """Both orders, through the plan's memories (cards and resolutions are kept by the
    digits that decide a match: a whole number is its own key)."""
    plan = load_plan(tariff)
    when = datetime(2026, 3, 2, 10, tzinfo=UTC)

    def cost(number: str) -> int:
        card = plan.card(subject="a", destination=number, start_ns=int(when.timestamp()) * S)
        return card.price(60 * S).cost_micros

    for order in (("494711", "49471123456"), ("49471123456", "494711")):
        assert [cost(n) for n in order] == [0 if n == "494711" else 600_000 for n in order]
    full = plan.rate(subject="a", destination="+494711", start=when, usage_ns=60 * S)
    assert (full.destination_id, full.matched_prefix) == ("PBX", "494711")


def test_prefix_index_whole_numbers_first() -> None:
    index = PrefixIndex()
    index.add_many("DE", ["49", "4947"])
    index.add_whole("+494711", "PBX")
    assert list(index.matches("494711")) == [
        ("494711", ("PBX",)),
        ("4947", ("DE",)),
        ("49", ("DE",)),
    ]
    assert list(index.matches("4947112")) == [("4947", ("DE",)), ("49", ("DE",))]
    assert index.significant("494711") == "=494711"
    assert index.significant("4947112") == "4947"
    assert index.longest_in("494711", {"DE"}) == ("4947", ("DE",))
    assert index.longest_in("+494711", {"PBX", "DE"}) == ("494711", ("PBX",))
    assert index.destination_ids() == {"DE", "PBX"} and len(index) == 3


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ('PBX = ["47a1"]', "numbers.PBX: number '47a1' is not 1-15 digits"),
        ('PBX = ["+"]', "numbers.PBX: number '+' is not 1-15 digits"),
        ('PBX = "4711"', 'numbers.PBX: must be a list of whole numbers, e.g. ["+494711"]'),
    ],
)
def test_bad_whole_numbers_are_refused_at_load(tmp_path: Path, numbers: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TARIFF.replace('PBX = ["+494711", "494712"]', numbers))
    with pytest.raises(TariffLoadError, match=message.replace("[", r"\[").replace("+", r"\+")):
        load_plan(path)
