"""CGRateS TP CSV parsing: columns, Go durations, timings, legacy layouts, bad rows."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from paths import FIXTURES as ALL_FIXTURES

from chargingd.rating.loaders import TariffLoadError, load_plan
from chargingd.rating.loaders.cgrates import ignored_files, load_tp_dir
from chargingd.rating.loaders.cgrates_csv import (
    parse_activation_time,
    parse_go_duration_ns,
    parse_timing_time,
    parse_week_days,
    read_tp_dir,
)

FIXTURES = ALL_FIXTURES / "cgrates"
S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("60s", 60 * S),
        ("1m", 60 * S),
        ("1h", 3600 * S),
        ("1m30s", 90 * S),
        ("0s", 0),
        ("0", 0),
        ("", 0),  # CGRateS: an empty duration is 0
        ("1024", 1024),  # bare integers are nanoseconds (ParseDurationWithNanosecs)
        ("2048ns", 2048),
        ("1.5s", 1_500_000_000),
        ("300ms", 300_000_000),
        ("10us", 10_000),
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_go_duration_ns(text) == ns


@pytest.mark.parametrize("text", ["-1s", "1x", "s", "1m30", "*any"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration_ns(text)


def test_week_day_7_is_sunday() -> None:
    # Go's time.Weekday: 0 = Sunday; CGRateS files write Sunday as 7 (stored as 7 % 7).
    assert parse_week_days("6;7") == (0, 6)
    assert parse_week_days("0;7") == (0,)
    assert parse_week_days("*any") == ()
    assert parse_week_days("1;2;3;4;5") == (1, 2, 3, 4, 5)
    with pytest.raises(ValueError):
        parse_week_days("8")


def test_timing_times() -> None:
    assert parse_timing_time("00:00:00") == (0, None)
    assert parse_timing_time("08:00:00") == (8 * 3600, None)
    assert parse_timing_time("*asap") == (0, None)  # rating: from midnight
    assert parse_timing_time("08:00:00;18:59:59") == (8 * 3600, 18 * 3600 + 59 * 60 + 59)
    for bad in ("25:00:00", "8am", "10:00:00;09:00:00"):
        with pytest.raises(ValueError):
            parse_timing_time(bad)


def test_activation_times() -> None:
    utc = datetime(2014, 1, 14, tzinfo=UTC)
    assert parse_activation_time("2014-01-14T00:00:00Z") == utc
    assert parse_activation_time("2014-01-14T02:00:00+02:00") == utc
    assert parse_activation_time("2014-01-14 00:00:00") == utc
    assert parse_activation_time(str(int(utc.timestamp()))) == utc
    with pytest.raises(ValueError):
        parse_activation_time("yesterday")


def test_fixture_columns_parsed() -> None:
    files = read_tp_dir(FIXTURES / "connect_fee_groups")
    first, second = files.rates["RT_20CNT"]
    assert (first.connect_fee, first.rate) == (Decimal("0.4"), Decimal("0.2"))
    assert (first.rate_unit_ns, first.rate_increment_ns) == (60 * S, 60 * S)
    assert (second.group_interval_start_ns, second.rate_increment_ns) == (60 * S, S)
    (dr,) = files.destination_rates["DR_1002_20CNT"]
    assert (dr.rounding_method, dr.rounding_decimals, dr.max_cost) == ("*up", 4, Decimal(0))
    assert files.timings == {}  # Timings.csv is optional (*any only)
    (profile,) = files.rating_profiles
    assert profile.activation == datetime(2014, 1, 14, tzinfo=UTC)


def test_legacy_direction_column_and_short_destination_rates() -> None:
    files = read_tp_dir(FIXTURES / "activation")
    # the *in row is skipped: CGRateS rates calls in the *out direction only
    assert [(p.subject, p.rating_plan_id) for p in files.rating_profiles] == [
        ("alice", "RP_OLD"),
        ("alice", "RP_NEW"),
    ]
    assert files.rating_profiles[1].activation == datetime(2024, 6, 1, tzinfo=UTC)
    (dr,) = files.destination_rates["DR_OLD"]  # 5 columns: no MaxCost
    assert (dr.max_cost, dr.max_cost_strategy) == (Decimal(0), "")


def test_fallback_subjects_split_on_semicolons() -> None:
    files = read_tp_dir(FIXTURES / "fallback")
    gold = next(p for p in files.rating_profiles if p.subject == "gold")
    assert gold.fallback_subjects == ("silver", "bronze")


def test_data_units_and_empty_connect_fee() -> None:
    files = read_tp_dir(FIXTURES / "data_units")
    (one_k,) = files.rates["RT_1024_1"]
    assert (one_k.rate_unit_ns, one_k.rate_increment_ns) == (1024, 1024)
    (two_k,) = files.rates["RT_2K"]
    assert (two_k.connect_fee, two_k.rate_unit_ns) == (Decimal(0), 2048)


def test_every_fixture_and_the_dispatcher_load() -> None:
    for directory in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        plan = load_tp_dir(directory)
        assert plan.id == directory.name
        assert plan.rounding_decimals == 5
    plan = load_plan(FIXTURES / "connect_fee_groups", rounding_decimals=6)
    assert plan.rounding_decimals == 6


# -- bad input: a typed error naming file, line and reason --------------------------------


def _copy(tmp_path: Path, name: str = "connect_fee_groups") -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.mark.parametrize(
    ("file", "row", "reason"),
    [
        ("Rates.csv", "RT_BAD,0,abc,60s,1s,0s\n", "not a number"),
        ("Rates.csv", "RT_BAD,0,0.1,60x,1s,0s\n", "duration"),
        ("Rates.csv", "RT_BAD,0,0.1,60s,1s\n", "5 columns"),
        ("Rates.csv", "RT_20CNT,0,0.3,60s,1s,60s\n", "two rows"),
        ("Rates.csv", "RT_LATE,0,0.3,60s,1s,10s\n", "first slot must start at 0s"),
        ("DestinationRates.csv", "DR_X,DST_NOPE,RT_20CNT,*up,4,0,\n", "unknown destination"),
        ("DestinationRates.csv", "DR_X,DST_1002,RT_NOPE,*up,4,0,\n", "unknown rate"),
        ("DestinationRates.csv", "DR_X,DST_1002,RT_20CNT,*sideways,4,0,\n", "RoundingMethod"),
        ("DestinationRates.csv", "DR_X,DST_1002,RT_20CNT,*up,4,1,*maybe\n", "MaxCostStrategy"),
        ("RatingPlans.csv", "RP_X,DR_NOPE,*any,10\n", "unknown DestinationRates"),
        ("RatingPlans.csv", "RP_X,DR_1002_20CNT,NIGHTS,10\n", "unknown timing"),
        ("RatingProfiles.csv", "cgrates.org,call,x,2014-01-14T00:00:00Z,RP_NOPE,\n", "unknown"),
        ("RatingProfiles.csv", "cgrates.org,call,x,someday,RP_1001,\n", "activation time"),
        ("RatingProfiles.csv", "cgrates.org,call,1001,2014-01-14T00:00:00Z,RP_1001,\n", "two"),
        ("Destinations.csv", "DST_BAD,+\n", "not digits"),
    ],
)
def test_bad_row_names_file_line_and_reason(
    tmp_path: Path, file: str, row: str, reason: str
) -> None:
    directory = _copy(tmp_path)
    path = directory / file
    lines = path.read_text(encoding="utf-8").splitlines()
    _append(path, row)
    with pytest.raises(TariffLoadError) as caught:
        load_tp_dir(directory)
    error = caught.value
    assert error.file == str(path)
    assert error.line == len(lines) + 1
    assert reason in error.reason


def test_bad_timing_row(tmp_path: Path) -> None:
    directory = _copy(tmp_path, "peak_offpeak")
    _append(directory / "Timings.csv", "BAD,*any,13,*any,*any,00:00:00\n")
    with pytest.raises(TariffLoadError, match=r"Timings\.csv:7: bad month '13'"):
        load_tp_dir(directory)


def test_missing_required_file_and_not_a_directory(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "RatingPlans.csv").unlink()
    with pytest.raises(TariffLoadError, match=r"RatingPlans\.csv: missing"):
        load_tp_dir(directory)
    with pytest.raises(TariffLoadError, match="not a directory"):
        load_tp_dir(tmp_path / "nowhere")


def test_bad_rounding_decimals_setting() -> None:
    with pytest.raises(TariffLoadError, match="rounding_decimals"):
        load_tp_dir(FIXTURES / "connect_fee_groups", rounding_decimals=13)


def test_comments_blank_lines_and_no_trailing_newline(tmp_path: Path) -> None:
    # tutorial2 has comment lines and blank lines inside files; tutorial lacks final newlines.
    directory = _copy(tmp_path)
    rates = directory / "Rates.csv"
    rates.write_text(
        "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n\n"
        "# the connect fee group\nRT_20CNT,0.4,0.2,60s,60s,0s\n\n"
        "  RT_20CNT, 0, 0.1, 60s, 1s, 60s",
        encoding="utf-8",
    )
    files = read_tp_dir(directory)
    assert [s.line for s in files.rates["RT_20CNT"]] == [4, 6]
    assert files.rates["RT_20CNT"][1].rate == Decimal("0.1")


def test_other_tp_files_are_reported_as_ignored(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "AccountActions.csv").write_text("#Tenant,Account\n", encoding="utf-8")
    (directory / "ActionPlans.csv").write_text("#Id\n", encoding="utf-8")
    assert ignored_files(directory) == ("AccountActions.csv", "ActionPlans.csv")


def test_profiles_with_a_trailing_cdr_stat_queue_column(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "RatingProfiles.csv").write_text(
        "#Tenant,Category,Subject,ActivationTime,RatingPlanId,RatesFallbackSubject,"
        "CdrStatQueueIds\ncgrates.org,call,1001,2014-01-14T00:00:00Z,RP_1001,1002;1003,Q1\n",
        encoding="utf-8",
    )
    (profile,) = read_tp_dir(directory).rating_profiles
    assert (profile.rating_plan_id, profile.fallback_subjects) == ("RP_1001", ("1002", "1003"))
