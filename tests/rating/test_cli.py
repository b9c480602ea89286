"""`chargingd rate` and `chargingd max-usage` through chargingd.app.cli.main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import REPO, SHARED_DATA, needs_shared

from chargingd.app.cli import main

SAMPLE = str(REPO / "config" / "tariffs" / "sample.toml")
BASE = ["--plan", SAMPLE, "--subject", "alice", "--start", "2026-03-02T18:58:30Z"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_rate_prints_cost_and_breakdown(capsys: pytest.CaptureFixture[str]) -> None:
    code, body = _run(capsys, "rate", *BASE, "--destination", "+447700900123", "--usage", "3m")
    assert code == 0
    assert body["cost"] == "0.2750"
    assert body["destination_id"] == "UK_MOBILE" and body["plan_id"] == "RETAIL_PREPAID"
    spans = body["spans"]
    assert isinstance(spans, list)
    assert [(s["period"], s["billed_s"], s["cost"]) for s in spans] == [
        ("PEAK", "60", "0.12"),
        ("PEAK", "30", "0.045"),
        ("*any", "90", "0.06"),
    ]
    assert spans[1]["increment"] == "1s" and spans[1]["increments"] == 30


@pytest.mark.parametrize(
    ("usage", "billed_s"),
    [("90s", "90"), ("2m10s", "130"), ("1h0m21s", "3621"), ("1.5s", "2"), ("2048ns", "1")],
)
def test_rate_parses_go_durations(
    capsys: pytest.CaptureFixture[str], usage: str, billed_s: str
) -> None:
    args = ["--destination", "4930123", "--usage", usage]
    code, body = _run(capsys, "rate", *BASE, "--subject", "wholesale", *args)
    assert code == 0
    assert body["billed_s"] == billed_s


def test_max_usage_prints_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    code, body = _run(
        capsys, "max-usage", *BASE, "--destination", "447700900123", "--amount", "1.50"
    )
    # 0.05 + 0.12 + 30 s x 0.09/60 = 0.215; 1.285 / (0.04/60) = 1927.5 s -> 1927 s off-peak.
    assert code == 0
    assert body == {"usage_s": "2017", "usage": "33m37s", "usage_ns": 2017 * 10**9}


def test_unknown_destination_and_subject_exit_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, body = _run(capsys, "rate", *BASE, "--destination", "999", "--usage", "60s")
    assert code == 1 and body["error"] == "unknown_destination"
    code, body = _run(
        capsys, "max-usage", *BASE, "--destination", "44", "--amount", "1", "--tenant", "other"
    )
    assert code == 1 and body["error"] == "unknown_subject"
    assert "other" in str(body["message"])


def test_bad_input_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, body = _run(capsys, "rate", *BASE, "--destination", "44", "--usage", "ten minutes")
    assert code == 2 and body["error"] == "bad_request"
    code, body = _run(capsys, "max-usage", *BASE, "--destination", "44", "--amount", "1.5.0")
    assert code == 2 and body["error"] == "bad_request"
    start = ["--start", "2026-03-02T10:00:00"]
    code, body = _run(capsys, "rate", *BASE, *start, "--destination", "44", "--usage", "1s")
    assert code == 2 and "UTC offset" in str(body["message"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[tariff\n")
    code, body = _run(
        capsys, "rate", *BASE, "--plan", str(bad), "--destination", "44", "--usage", "1s"
    )
    assert code == 2 and body["error"] == "bad_tariff" and "bad.toml:1" in str(body["message"])


def test_a_destination_that_is_no_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "abc" answered exit 1 "unknown destination", as a number no tariff covers does.
    for text in ("abc", "44abc", "", "４４"):
        for name, tail in (("rate", ("--usage", "60s")), ("max-usage", ("--amount", "1"))):
            code, body = _run(capsys, name, *BASE, "--destination", text, *tail)
            assert (code, body["error"]) == (2, "bad_request"), (name, text)
            assert "is not a number" in str(body["message"])
    # A well-formed number no tariff covers stays a rating error.
    code, body = _run(capsys, "rate", *BASE, "--destination", "999", "--usage", "60s")
    assert (code, body["error"]) == (1, "unknown_destination")


CGRATES_STYLE = """
[tariff]
pricing = "cgrates"
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


def test_rounding_decimals_flag_sets_cgrates_span_rounding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = tmp_path / "cgr.toml"
    plan.write_text(CGRATES_STYLE)
    args = ["--plan", str(plan), "--subject", "x", "--destination", "4420", "--usage", "2m"]
    args += ["--start", "2026-03-02T10:00:00+01:00"]
    code, body = _run(capsys, "rate", *args)
    assert code == 0 and body["cost"] == "0.7002" and body["mode"] == "cgrates"
    # At 2 decimals one second costs 0.1/60 = 0.0017 -> 0.00: the per-second part is free.
    code, body = _run(capsys, "rate", *args, "--rounding-decimals", "2")
    assert code == 0 and body["cost"] == "0.6000"


def test_readme_examples_run_as_written(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """README "Price a call without a daemon": each command, run from the repository
    root exactly as written, succeeds and prints the value its trailing comment says."""
    import re
    import shlex

    root = REPO
    text = (root / "README.md").read_text(encoding="utf-8")
    block = text.split("Price a call without a daemon", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    commands = [line for line in block.splitlines() if line.strip()]
    assert len(commands) == 2
    monkeypatch.chdir(root)
    for line in commands:
        command, _, comment = line.partition("#")
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/chargingd"
        code, body = _run(capsys, *argv[1:])
        assert code == 0, body
        expected = re.fullmatch(r'\s*"(\w+)": "([^"]*)"\s*', comment)
        assert expected is not None, comment
        assert body[expected[1]] == expected[2]


@needs_shared("cgrates_tp")
def test_timezone_flag_reads_cgrates_timings_in_that_zone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A CGRateS TP's Timings name no zone (CGRateS general.default_timezone): an operator
    whose CGRateS ran in Europe/Berlin must be able to price in that zone by hand.
    tutorial2's PEAK starts 08:00 on weekdays; 07:30Z on a Monday is 08:30 in Berlin."""
    tp = str(SHARED_DATA / "cgrates_tp" / "tutorial2")
    args = ["--plan", tp, "--tenant", "cgrates.org", "--subject", "x"]
    args += ["--destination", "1099", "--start", "2026-03-02T07:30:00Z", "--usage", "60"]
    code, body = _run(capsys, "rate", *args)
    assert code == 0 and body["cost"] == "0.7000"  # UTC: off-peak, 0.1 + 60 x 0.01
    code, body = _run(capsys, "rate", *args, "--timezone", "Europe/Berlin")
    assert code == 0 and body["cost"] == "1.4000"  # peak: 0.2 + one 1m block of 1.2
    code, body = _run(capsys, "max-usage", *args[:-2], "--amount", "1.40")
    assert code == 0 and body["usage_s"] == "130"  # off-peak: (1.40 - 0.1) / 0.01
    code, body = _run(
        capsys, "max-usage", *args[:-2], "--amount", "1.40", "--timezone", "Europe/Berlin"
    )
    assert code == 0 and body["usage_s"] == "60"
    code, body = _run(capsys, "rate", *args, "--timezone", "Europe/Berlinx")
    assert code == 2 and body["error"] == "bad_tariff" and "Europe/Berlinx" in body["message"]


def test_timezone_flag_is_refused_for_a_native_tariff(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A native tariff names its zone in [tariff].timezone: a flag must not silently
    lose to it (or override it)."""
    code, body = _run(
        capsys, "rate", *BASE, "--destination", "447700900123", "--usage", "60",
        "--timezone", "Europe/Berlin",
    )  # fmt: skip
    assert code == 2 and body["error"] == "bad_tariff" and "[tariff].timezone" in body["message"]


def test_a_cgrates_tp_rates_its_text_destinations(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # CGRateS' tutorial2 has DST_VOICEMAIL = "voicemail" and a data plan bound to *any;
    # `rate --destination voicemail` answered exit 2 "is not a number".
    files = {
        "Destinations.csv": "#Id,Prefix\nDST_VM,voicemail\nDST_44,44\n",
        "Rates.csv": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n"
        "RT_VM,0.05,0.01,1s,1s,0s\nRT_DATA,0,1,1024,1024,0\n",
        "DestinationRates.csv": "#Id,DestinationId,RatesTag,RoundingMethod,"
        "RoundingDecimals,MaxCost,MaxCostStrategy\n"
        "DR_VM,DST_VM,RT_VM,*up,4,,\nDR_DATA,*any,RT_DATA,*up,4,,\n",
        "RatingPlans.csv": "#Id,DestinationRatesId,TimingTag,Weight\n"
        "RP_VM,DR_VM,*any,10\nRP_DATA,DR_DATA,*any,10\n",
        "RatingProfiles.csv": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,"
        "RatesFallbackSubject\ncgr.org,call,*any,2020-01-01T00:00:00Z,RP_VM,\n"
        "cgr.org,data,*any,2020-01-01T00:00:00Z,RP_DATA,\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    common = ["--plan", str(tmp_path), "--subject", "1001", "--start", "2024-01-08T10:00:00Z"]
    code, body = _run(capsys, "rate", *common, "--destination", "voicemail", "--usage", "30s")
    assert (code, body["cost"], body["destination_id"]) == (0, "0.3500", "DST_VM")
    data = [*common, "--category", "data", "--destination", "data"]
    code, body = _run(capsys, "rate", *data, "--usage", "2049ns")
    assert (code, body["cost"]) == (0, "3.0000")
    code, body = _run(capsys, "max-usage", *data, "--amount", "5")
    assert (code, body["usage_ns"]) == (0, 5120)
    # A word the plan does not know is a rating error there, not a usage error.
    code, body = _run(capsys, "rate", *common, "--destination", "fax", "--usage", "30s")
    assert (code, body["error"]) == (1, "unknown_destination")
    code, body = _run(capsys, "rate", *common, "--destination", "a b", "--usage", "30s")
    assert (code, body["error"]) == (2, "bad_request")
