"""The native tariff file: the shipped sample prices as worked out by hand; bad files fail
with the file, the line and the key path."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from paths import FIXTURES, REPO

from chargingd.rating.loaders import TariffLoadError, load_plan
from chargingd.rating.model import PricingMode, UnknownDestination
from chargingd.rating.plan import TariffPlan

SAMPLE = REPO / "config" / "tariffs" / "sample.toml"
CGRATES_FIXTURES = FIXTURES / "cgrates"
S = 1_000_000_000

MINIMAL = """
[tariff]
id = "mini"
timezone = "UTC"

[destinations]
UK = ["44"]

[rates.R]
connect_fee = 0.4
slots = [
  { start = "0s", rate = 0.2, unit = "60s", increment = "60s" },
  { start = "60s", rate = 0.1, unit = "60s", increment = "1s" },
]

[plans.P]
[[plans.P.rates]]
destinations = ["UK"]
rate = "R"

[[profiles]]
plan = "P"
"""


@pytest.fixture(scope="module")
def sample() -> TariffPlan:
    return load_plan(SAMPLE)


def _cost(plan: TariffPlan, subject: str, number: str, start: str, usage_s: int) -> str:
    when = datetime.fromisoformat(start)
    return plan.rate(subject=subject, destination=number, start=when, usage_ns=usage_s * S).cost


def test_sample_mobile_call_crossing_peak_end(sample: TariffPlan) -> None:
    # Monday 18:58:30 London (GMT): 0.05 connect + first minute block at peak 0.12 +
    # 30 s peak per second (0.09/min) 0.045 + 90 s off-peak per second (0.04/min) 0.06.
    assert _cost(sample, "alice", "447700900123", "2026-03-02T18:58:30Z", 180) == "0.2750"


def test_sample_christmas_eve_into_christmas(sample: TariffPlan) -> None:
    # 23:58 off-peak: 2 min x 0.01, then the holiday (off-peak price) 3 min x 0.01.
    assert _cost(sample, "alice", "442071234567", "2026-12-24T23:58:00Z", 300) == "0.05"
    # Christmas Day at 10:00 is a holiday, not peak (0.03/min + 0.02 connect).
    assert _cost(sample, "alice", "442071234567", "2026-12-25T10:00:00Z", 60) == "0.01"
    assert _cost(sample, "alice", "442071234567", "2026-12-23T10:00:00Z", 60) == "0.05"


def test_sample_wholesale_fallback_and_price_change(sample: TariffPlan) -> None:
    # carrier-b has its own UK mobile price (0.0042/min per second: 61 s = 0.00427) ...
    assert _cost(sample, "carrier-b", "447700900123", "2026-03-02T10:00:00Z", 61) == "0.004270"
    # ... and falls back to the wholesale subject for France (the same EU price).
    when = datetime(2026, 3, 2, 10, tzinfo=UTC)
    fr = sample.rate(subject="carrier-b", destination="33142", start=when, usage_ns=61 * S)
    assert (fr.plan_id, fr.subject) == ("WHOLESALE", "wholesale")
    # The 2027 mobile price drop: 61 s at 0.0189/min = 0.019215.
    assert _cost(sample, "wholesale", "447700", "2027-03-02T10:00:00Z", 61) == "0.019215"
    # 2026: 61 s at 0.0215/min = 0.0218583.., rounded up at 6 decimals.
    assert _cost(sample, "wholesale", "447700", "2026-03-02T10:00:00Z", 61) == "0.021859"


def test_sample_premium_is_cut_at_max_cost_and_intl_min_duration(sample: TariffPlan) -> None:
    when = datetime(2026, 3, 2, 10, tzinfo=UTC)
    # *disconnect at 15.00: 0.50 connect, then 1.50/min (0.025/s): 14.50 buys 580 s.
    granted = sample.max_usage(
        subject="alice", destination="449011", start=when, amount_micros=100_000_000
    )
    assert granted == 580 * S
    # France fixed: a 3 s call is billed as 10 s, rounded up to the first 30 s block.
    assert _cost(sample, "alice", "33142", "2026-03-02T10:00:00Z", 3) == "0.0250"
    with pytest.raises(UnknownDestination):
        sample.rate(subject="alice", destination="8613", start=when, usage_ns=S)


def test_minimal_file_reads_floats_exactly(tmp_path: Path) -> None:
    path = tmp_path / "mini.toml"
    path.write_text(MINIMAL)
    plan = load_plan(path)
    assert plan.id == "mini" and plan.mode is PricingMode.EXACT
    assert _cost(plan, "x", "4420", "2026-03-02T10:00:00Z", 120) == "0.7000"
    cgr = load_plan(path.with_name("mini.toml"), rounding_decimals=5)
    assert cgr.rounding_decimals == 5
    path.write_text(MINIMAL.replace('timezone = "UTC"', 'timezone = "UTC"\npricing = "cgrates"'))
    assert _cost(load_plan(path), "x", "4420", "2026-03-02T10:00:00Z", 120) == "0.7002"


def test_destination_deck_file(tmp_path: Path) -> None:
    (tmp_path / "deck.csv").write_text("prefix,destination\n447,UK_MOBILE\n+4420,UK_LONDON\n")
    text = MINIMAL.replace('id = "mini"', 'id = "mini"\ndestination_files = ["deck.csv"]')
    text = text.replace('destinations = ["UK"]', 'destinations = ["UK", "UK_MOBILE"]')
    (tmp_path / "t.toml").write_text(text)
    plan = load_plan(tmp_path / "t.toml")
    when = datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert plan.rate(subject="a", destination="4477", start=when, usage_ns=S).destination_id == (
        "UK_MOBILE"
    )
    (tmp_path / "deck.csv").write_text("447,UK_MOBILE\n44x7,UK_MOBILE\n")
    with pytest.raises(TariffLoadError, match=r"deck.csv:2: prefix '44x7' is not digits"):
        load_plan(tmp_path / "t.toml")


def _error(tmp_path: Path, text: str) -> TariffLoadError:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TariffLoadError) as caught:
        load_plan(path)
    assert str(path) in str(caught.value)
    return caught.value


def _line(text: str, needle: str, nth: int = 0) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), 1) if line.strip().startswith(needle)]
    return hits[nth]


@pytest.mark.parametrize(
    ("old", "new", "key", "reason", "line_of"),
    [
        (
            'rate = "R"',
            'rate = "NOPE"',
            "plans.P.rates[0]",
            "unknown rate 'NOPE'",
            'rate = "NOPE"',
        ),
        (
            'rate = "R"',
            'rate = "R"\nperiod = "X"',
            "plans.P.rates[0]",
            "unknown period 'X'",
            'period = "X"',
        ),
        (
            'rate = "R"',
            'rate = "R"\ncolour = 1',
            "plans.P.rates[0].colour",
            "unknown key 'colour'",
            "[[plans.P.rates]]",
        ),
        ('increment = "1s"', 'increment = "1 sec"', "rates.R", "not a duration", '{ start = "60s"'),
        ('UK = ["44"]', 'UK = ["4a"]', "destinations.UK", "not digits", "UK ="),
        (
            'timezone = "UTC"',
            'timezone = "Mars/Base"',
            "tariff.timezone",
            "unknown time zone",
            "timezone =",
        ),
        # Live credit control refuses every call of an account whose currency is not the
        # tariff's: "eur" or "EURO" loaded, then refused every call (system_error).
        (
            'timezone = "UTC"',
            'timezone = "UTC"\ncurrency = "eur"',
            "tariff.currency",
            "'eur' is not an ISO 4217 currency code",
            "currency =",
        ),
        (
            'timezone = "UTC"',
            'timezone = "UTC"\ncurrency = "EURO"',
            "tariff.currency",
            "not an ISO 4217",
            "currency =",
        ),
        ("connect_fee = 0.4", 'connect_fee = "lots"', "rates.R", "not an amount", "connect_fee ="),
        ("connect_fee = 0.4", "connect_fee = -1", "rates.R", "connect fee must be", "[rates.R]"),
        (
            'destinations = ["UK"]',
            'destinations = ["MARS"]',
            "plans.P",
            "unknown destination 'MARS'",
            "[plans.P]",
        ),
        ('plan = "P"', 'plan = "Q"', "profiles[0].plan", "unknown plan 'Q'", 'plan = "Q"'),
        # The line is the bad key's own, not its table's header (was "[tariff]": line 1
        # of a file whose [tariff] has a dozen keys), and the type is named in English.
        (
            'timezone = "UTC"',
            'timezone = "UTC"\nrounding = "up"\ndecimals = "4"',
            "tariff.decimals",
            "must be an integer",
            "decimals =",
        ),
    ],
)
def test_semantic_errors_name_key_line_and_reason(
    tmp_path: Path, old: str, new: str, key: str, reason: str, line_of: str
) -> None:
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)
    error = _error(tmp_path, text)
    assert error.key == key
    assert reason in error.reason
    assert error.line == _line(text, line_of)


def test_second_binding_error_points_at_its_own_table(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[plans.P.rates]]\ndestinations = ["UK"]\nrate = "R"\nperiod = "NOPE"\n'
    error = _error(tmp_path, text)
    assert error.key == "plans.P.rates[1]"
    assert error.line == _line(text, 'period = "NOPE"')


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = MINIMAL.replace('rate = "R"', 'rate = "R', 1)
    error = _error(tmp_path, text)
    assert error.line == _line(text, 'rate = "R')
    assert f"bad.toml:{error.line}" in str(error)


def test_missing_file_and_missing_profiles(tmp_path: Path) -> None:
    with pytest.raises(TariffLoadError, match="cannot read"):
        load_plan(tmp_path / "none.toml")
    error = _error(tmp_path, MINIMAL.replace('[[profiles]]\nplan = "P"', ""))
    assert "no [[profiles]]" in error.reason


@pytest.mark.skipif(not CGRATES_FIXTURES.is_dir(), reason="no CGRateS fixtures")
def test_a_directory_is_a_cgrates_tariff_plan() -> None:
    first = sorted(p for p in CGRATES_FIXTURES.iterdir() if p.is_dir())[0]
    plan = load_plan(first, rounding_decimals=5)
    assert plan.mode is PricingMode.CGRATES and plan.rounding_decimals == 5


@pytest.mark.parametrize("literal", ["5e-2", "+0.4", "4E-1"])
def test_amount_with_an_exponent_gives_the_line(tmp_path: Path, literal: str) -> None:
    """A TOML float written with an exponent or a "+" is refused with its line, like
    every other bad value (it failed inside tomllib's parse_float: no line at all)."""
    text = MINIMAL.replace("connect_fee = 0.4", f"connect_fee = {literal}", 1)
    assert text != MINIMAL
    error = _error(tmp_path, text)
    assert "is not an amount" in error.reason
    assert error.line == _line(text, f"connect_fee = {literal}")
    assert f"bad.toml:{error.line}:" in str(error)
