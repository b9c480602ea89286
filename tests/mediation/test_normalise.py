"""Normalisation rules: E.164 numbers, zones to UTC, causes to Q.850, source config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from paths import REPO

from chargingd.core.config import ConfigError, config_from_dict, load_config
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.causes import sip_to_q850
from chargingd.mediation.normalise import Normaliser
from chargingd.mediation.records import RawCall, RowError


@pytest.mark.parametrize(
    ("country", "trunk", "idd", "unprefixed", "raw", "e164"),
    [
        ("DE", "0", "00", "international", "03012345678", "+493012345678"),
        ("DE", "0", "00", "international", "0041441234567", "+41441234567"),
        ("DE", "0", "00", "international", "4930123456", "+4930123456"),
        ("DE", "0", "00", "international", "+49 (30) 123-456", "+4930123456"),
        ("DE", "0", "00", "international", "sip:+4930123456@gw.example;user=phone", "+4930123456"),
        ("DE", "0", "00", "international", '"Al" <sip:004930123456@gw>', "+4930123456"),
        ("DE", "0", "00", "national", "30123456", "+4930123456"),
        ("US", "1", "011", "international", "01144201234567", "+44201234567"),
        ("US", "1", "011", "national", "2125550123", "+12125550123"),
        ("US", "1", "011", "national", "12125550123", "+12125550123"),
        ("FR", "0", "00", "international", "0123456789", "+33123456789"),
        # the trunk prefix printed in brackets after the country code: dropped where it
        # is dialled only nationally, kept where it is part of the number (Italy), as
        # the live path reads them (it was +490301234567)
        ("DE", "0", "00", "international", "+49 (0)30 1234567", "+49301234567"),
        ("DE", "0", "00", "international", "0049 (0)30 1234567", "+49301234567"),
        ("GB", "0", "00", "international", "+44 (0)20 7946 0000", "+442079460000"),
        ("DE", "0", "00", "international", "+39 (0)6 1234 5678", "+390612345678"),
        ("DE", "0", "00", "international", "(0)30 1234567", "+49301234567"),
    ],
)
def test_numbers_to_e164(
    country: str, trunk: str, idd: str, unprefixed: str, raw: str, e164: str
) -> None:
    source = SourceConfig(
        default_country=country,
        trunk_prefix=trunk,
        international_prefix=idd,
        unprefixed=unprefixed,
    )
    assert Normaliser("s", source).number(raw, "callee") == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "not a telephone number"),
        ("abc", "not a telephone number"),
        ("0301²3", "not a telephone number"),
        ("+1", "not a telephone number"),
        ("+4912345678901234567", "not a telephone number"),
        ("+99912", "not a telephone number"),
        ("+1212555", "not a possible E.164 number"),
    ],
)
def test_bad_numbers(raw: str, reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        Normaliser("s", SourceConfig(default_country="DE")).number(raw, "callee")


@pytest.mark.parametrize(
    ("rule", "raw", "caller", "caller_raw"),
    [
        ("fixed", "anonymous", "", None),
        ("fixed", "sip:Anonymous@anonymous.invalid", "", None),  # RFC 3323 §4.1.1.3
        ("accountcode", "0000000000", "", None),  # FreeSWITCH's default caller id
        ("fixed", "1001", "", "1001"),  # a PBX extension: kept, the call is billable
        ("accountcode", "Reception", "", "Reception"),
        ("fixed", "03012345678", "+493012345678", None),
        ("ani", "anonymous", "", None),  # no caller: Payers rejects it (nobody to charge)
    ],
)
def test_withheld_or_internal_caller_keeps_the_call(
    rule: str, raw: str, caller: str, caller_raw: str | None
) -> None:
    source = SourceConfig(default_country="DE", account_rule=rule, account="acme")
    call = Normaliser("s", source).call(
        RawCall(call_id="c", caller=raw, callee="0891234567", start=1000, answer=2000, end=9000)
    )
    assert call.caller == caller
    assert call.extra.get("caller_raw") == caller_raw
    assert call.callee == "+49891234567" and call.duration_s == 7


def test_ani_rule_rejects_a_caller_that_is_no_number() -> None:
    source = SourceConfig(default_country="DE", account_rule="ani")
    raw = RawCall(call_id="c", caller="1001", callee="0891234567", start=1, answer=2, end=9)
    with pytest.raises(RowError, match=r"caller '1001' is not a possible E\.164 number"):
        Normaliser("s", source).call(raw)


def test_national_number_needs_a_country() -> None:
    with pytest.raises(RowError, match="no default_country"):
        Normaliser("s", SourceConfig()).number("03012345678", "caller")


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        ("2026-03-29 01:30:00", "2026-03-29 00:30:00"),  # CET, just before the spring change
        ("2026-03-29 03:30:00", "2026-03-29 01:30:00"),  # CEST after it
        ("2026-10-25 02:30:00", "2026-10-25 00:30:00"),  # ambiguous hour: first (CEST), fold=0
        ("2026-10-25 03:30:00", "2026-10-25 02:30:00"),  # CET again
        ("2026-12-31 23:59:59.250", "2026-12-31 22:59:59.250"),
    ],
)
def test_local_times_to_utc_across_dst(local: str, utc: str) -> None:
    norm = Normaliser("s", SourceConfig(time_zone="Europe/Berlin"))
    expected = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    got = norm.time_ms(datetime.fromisoformat(local))
    assert got == round(expected.timestamp() * 1000)


def test_epoch_and_aware_times_pass_through() -> None:
    norm = Normaliser("s", SourceConfig(time_zone="America/New_York"))
    assert norm.time_ms(1552294800123) == 1552294800123
    aware = datetime(2019, 3, 11, 9, 0, 0, 12000, tzinfo=UTC)
    assert norm.time_ms(aware) == 1552294800012
    assert norm.time_ms(None) == 0


def _raw(**kw: object) -> RawCall:
    base: dict[str, object] = {
        "call_id": "c1",
        "caller": "+4930123456",
        "callee": "+4989987654",
        "start": 1_000_000,
        "answer": 1_005_000,
        "end": 1_130_000,
    }
    base.update(kw)
    return RawCall(**base)  # type: ignore[arg-type]


def test_cause_precedence_source_map_then_q850_then_sip() -> None:
    norm = Normaliser("s", SourceConfig(cause_map={"CONGESTION": 42}))
    assert norm.call(_raw(cause_text="CONGESTION", q850=34)).cause == 42
    assert norm.call(_raw(q850=31, sip_code=486)).cause == 31
    assert norm.call(_raw(sip_code=486)).cause == 17
    assert norm.call(_raw()).cause == 0


def test_talk_time_from_switch_or_from_times() -> None:
    norm = Normaliser("s", SourceConfig())
    assert norm.call(_raw(talk_s=120)).duration_s == 120
    assert norm.call(_raw()).duration_s == 125  # (end - answer), rounded
    unanswered = norm.call(_raw(answer=None, talk_s=30))
    assert (unanswered.status, unanswered.duration_s, unanswered.answer_ms) == ("unanswered", 0, 0)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"call_id": ""}, "no call id"),
        ({"end": None}, "no end time"),
        ({"answer": 2_000_000}, "answer time outside start..end"),
        ({"start": 2_000_000}, "end time before start time"),
    ],
)
def test_impossible_calls_are_rejected(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(RowError, match=reason):
        Normaliser("s", SourceConfig()).call(_raw(**kw))


@pytest.mark.parametrize(
    ("code", "cause"),
    [(200, 16), (404, 1), (408, 102), (480, 18), (486, 17), (503, 41), (603, 21), (499, 127)],
)
def test_rfc3398_sip_to_q850(code: int, cause: int) -> None:
    assert sip_to_q850(code) == cause


def test_sources_table_in_config() -> None:
    cfg = config_from_dict(
        {
            "mediation": {
                "sources": {
                    "pbx": {"format": "asterisk", "cause_map": {"BUSY": 17}, "charge": "ledger"},
                    "gen": {
                        "format": "csv",
                        "mapping": {"callee": 1, "end": "stop", "billsec": 2},
                        "charge": "record_only",
                    },
                }
            }
        }
    )
    assert cfg.mediation.sources["pbx"] == SourceConfig(
        format="asterisk", cause_map={"BUSY": 17}, charge="ledger"
    )
    assert cfg.mediation.sources["gen"].mapping == {"callee": 1, "end": "stop", "billsec": 2}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"format": "asterisk"}, 'charge must say whose money the calls move: "ledger"'),
        ({"charge": "debit"}, "charge must say whose money"),
        ({"charge": "ledger", "insufficient": "overdraft"}, "insufficient must be debt or cap"),
        ({"charge": "ledger", "rate": False}, 'charge = "ledger" needs rate = true'),
        ({"charge": "record_only", "match_on": ""}, "needs match_source and match_on"),
        ({"format": "nosuch"}, "format must be one of"),
        ({"time_zone": "Mars/Olympus"}, "not an IANA zone"),
        ({"account_rule": "fixed"}, "needs account"),
        ({"formt": "csv"}, "unknown key mediation.sources.x.formt"),
        ({"format": "csv", "mapping": {"callee": 1}}, "needs mapping for end"),
        ({"format": "csv", "mapping": {"callee": 1, "start": 2}}, "needs mapping for end"),
        ({"format": "csv", "mapping": {"start": 1, "end": 2}}, "needs mapping for callee"),
        ({"format": "csv", "mapping": {"callee": 1, "end": 2, "who": 3}}, "unknown fields"),
        (
            {"format": "csv", "mapping": {"callee": 1, "start": 2, "end": 3, "cause": 4}},
            "needs mapping for answer or billsec",
        ),
        ({"cause_map": {"BUSY": "17"}}, "cause_map.BUSY must be int"),
        ({"radius_cause_radix": 8}, "radix must be 10 or 16"),
        (
            {"format": "freeswitch", "fields": ["caller_id_number", "destination_number"]},
            "fields (a custom template) needs one of uuid, call_uuid",
        ),
        (
            {"format": "freeswitch", "fields": ["uuid", "destination_number", "start_stamp"]},
            "needs one of end_stamp, end_epoch, end_uepoch",
        ),
    ],
)
def test_bad_source_config_names_the_key(table: dict[str, object], message: str) -> None:
    if table != {"format": "asterisk"}:  # that case shows the missing charge
        table = {"charge": "record_only", **table}  # every source must say it
    with pytest.raises(ConfigError, match=r"my\.toml") as err:
        config_from_dict({"mediation": {"sources": {"x": table}}}, "my.toml")
    assert message in str(err.value)


def test_commented_source_example_is_the_defaults(tmp_path: Path) -> None:
    """The commented [mediation.sources.pbx1] block of the example config loads as is."""
    example = REPO / "config" / "chargingd.toml"
    lines = example.read_text().splitlines()
    start = lines.index("# [mediation.sources.pbx1]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        text = line[2:]
        if not text.lstrip().startswith("#"):
            block.append(text)
    path = tmp_path / "c.toml"
    path.write_text("\n".join(block) + "\n")
    cfg = load_config(path)
    assert cfg.mediation.sources["pbx1"] == SourceConfig(format="asterisk", charge="ledger")
