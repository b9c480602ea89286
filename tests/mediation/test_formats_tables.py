"""kamailio_cdrs (Kamailio acc_cdrs) and opensips_db (OpenSIPS acc in CDR mode): every
field where it should land, local times, extra columns, damaged rows by line, and the
configuration errors an operator gets for a source that cannot be read right.

The fixtures were written from the modules' documentation and source (Kamailio
acc_cdr.c: start/end DATETIME, duration "%ld.%06ld"; OpenSIPS acc README, "CDRs
accounting": time, duration, setuptime, created)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from paths import FIXTURES as ALL_FIXTURES

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised
from chargingd.mediation.records import Reject

FIXTURES = ALL_FIXTURES / "cdr"


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def de(**kw: Any) -> SourceConfig:
    """A source dialling from Germany with a Berlin clock."""
    return SourceConfig(default_country="DE", time_zone="Europe/Berlin", charge="ledger", **kw)


def read(lines: list[str], source: SourceConfig) -> tuple[dict[str, Call], dict[int, str]]:
    calls: dict[str, Call] = {}
    rejects: dict[int, str] = {}
    for line_no, item in normalised(lines, "src", source):
        if isinstance(item, Reject):
            rejects[line_no] = item.reason
        else:
            calls[item.call_id] = item
    return calls, rejects


def fixture(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)


def test_kamailio_cdrs_start_on_confirmed() -> None:
    calls, rejects = read(fixture("kamailio_acc_cdrs.csv"), de(format="kamailio_cdrs",
                                                              cdr_start="confirmed"))  # fmt: skip
    one = calls["k1a2b3c4@198.51.100.7"]
    # Local CEST (UTC+2); start_time is the answer; duration 300.25 -> 300 s.
    assert (one.caller, one.callee, one.start_ms, one.answer_ms, one.end_ms) == (
        "+493012345678", "+498912345678", ms("2026-07-01 08:00:07"),
        ms("2026-07-01 08:00:07"), ms("2026-07-01 08:05:07"),
    )  # fmt: skip
    assert (one.duration_s, one.cause, one.status) == (300, 16, "normal")
    assert one.extra["duration"] == "300.250000"
    # A failed dialog (cdr_on_failed): end = start, duration 0; its sip_code column: 486.
    busy = calls["k5e6f7a8@198.51.100.7"]
    assert (busy.answer_ms, busy.duration_s, busy.cause, busy.status) == (0, 0, 17, "unanswered")
    # Winter (CET, UTC+1); 59.6 s rounds to 60; international prefix 00 stripped.
    winter = calls["k9b0c1d2@198.51.100.7"]
    assert (winter.start_ms, winter.duration_s, winter.callee) == (
        ms("2026-01-15 08:00:00"), 60, "+41441234567")  # fmt: skip
    # No callid value: the table's id keeps the call unique (re-runs stay duplicates).
    assert calls["acc_cdrs:8"].duration_s == 45
    assert rejects == {
        5: "start_time is not a time: 'not a time'",
        6: "duration is not a number of seconds: '-5.000000'",
        7: "6 columns; the header has 8",
        8: "damaged record: a quoted field never closes",
    }


def test_kamailio_cdrs_created_start_bills_from_the_invite() -> None:
    """Kamailio's default: start_time is the INVITE; the duration includes the ringing."""
    calls, _ = read(fixture("kamailio_acc_cdrs.csv"), de(format="kamailio_cdrs",
                                                        cdr_start="created"))  # fmt: skip
    one = calls["k1a2b3c4@198.51.100.7"]
    assert (one.start_ms, one.answer_ms, one.duration_s) == (
        ms("2026-07-01 08:00:07"), ms("2026-07-01 08:00:07"), 300)  # fmt: skip
    assert one.extra["cdr_start"] == "created"


def test_kamailio_cdrs_renamed_columns_through_mapping() -> None:
    """cdr_start_id / cdr_extra names are the operator's: the mapping names them."""
    lines = [
        "id,t_start,t_end,secs,sip_callid,caller_id,callee_id,acct\n",
        "1,2026-07-01 10:00:07,2026-07-01 10:01:07,60.000,m1@x,03012345678,08912345678,c-9\n",
    ]
    source = de(format="kamailio_cdrs", cdr_start="confirmed", mapping={
        "start": "t_start", "end": "t_end", "duration": "secs", "call_id": "sip_callid",
        "account": "acct"})  # fmt: skip
    calls, rejects = read(lines, source)
    assert rejects == {}
    call = calls["m1@x"]
    assert (call.caller, call.callee, call.account, call.duration_s) == (
        "+493012345678", "+498912345678", "c-9", 60)  # fmt: skip
    # A mapped column the header lacks rejects every row, saying which.
    bad = de(format="kamailio_cdrs", cdr_start="confirmed", mapping={"callee": "nosuch"})
    _, rejects = read(lines, bad)
    nosuch = "the header has no column nosuch (see the source's mapping)"
    assert rejects == {1: nosuch, 2: nosuch}  # the header line too (it may be a call)


def test_opensips_cdr_mode_rows() -> None:
    calls, rejects = read(fixture("opensips_acc_cdr.csv"), de(format="opensips_db"))
    one = calls["o1a2b3c4@198.51.100.9"]
    # created = INVITE (start), time = answer, ms_duration gives the end to the ms;
    # caller_id/callee_id extra columns hold SIP URIs: their user part is the number.
    assert (one.caller, one.callee, one.start_ms, one.answer_ms, one.end_ms) == (
        "+493012345678", "+498912345678", ms("2026-07-01 08:00:00"),
        ms("2026-07-01 08:00:07"), ms("2026-07-01 08:05:07.250"),
    )  # fmt: skip
    assert (one.duration_s, one.cause, one.status) == (300, 16, "normal")
    assert one.extra["setuptime_s"] == "7"
    busy = calls["o5e6f7a8@198.51.100.9"]  # 486 -> Q.850 17, ends when it failed
    assert (busy.status, busy.cause, busy.answer_ms, busy.end_ms, busy.duration_s) == (
        "unanswered", 17, 0, ms("2026-07-01 08:02:05"), 0)  # fmt: skip
    assert calls["o9b0c1d2@198.51.100.9"].cause == 127  # 487: no RFC 3398 mapping
    # created empty: start = time - setuptime; winter time (CET).
    winter = calls["oaabbccd@198.51.100.9"]
    assert (winter.start_ms, winter.answer_ms, winter.duration_s) == (
        ms("2026-01-15 08:00:00"), ms("2026-01-15 08:00:10"), 50)  # fmt: skip
    assert len(calls) == 4  # the BYE row (transaction accounting) is no call
    assert rejects == {6: "sip_code is not an integer: 'abc'", 7: "9 columns; the header has 14"}


def test_opensips_cause_map_names_a_sip_reason() -> None:
    source = de(format="opensips_db", cause_map={"Request Terminated": 16})
    calls, _ = read(fixture("opensips_acc_cdr.csv"), source)
    assert calls["o9b0c1d2@198.51.100.9"].cause == 16


def test_opensips_table_without_cdr_columns_is_rejected_clearly() -> None:
    lines = ["id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,dst_user\n",
             "1,INVITE,a,b,c@x,200,OK,2026-07-01 10:00:00,08912345678\n"]  # fmt: skip
    _, rejects = read(lines, de(format="opensips_db"))
    why = ("the header has no duration, setuptime, created column: not an acc"
           ' table in CDR mode (do_accounting("db", "cdr"))')  # fmt: skip
    assert rejects == {1: why, 2: why}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "kamailio_cdrs"}, "format 'kamailio_cdrs' needs cdr_start"),
        ({"format": "kamailio_cdrs", "cdr_start": "answer"}, "cdr_start must be confirmed or"),
        ({"format": "opensips_db", "mapping": {"start": "created"}}, "mapping may name only"),
        ({"format": "opensips_db", "mapping": {"caller": 3}}, "must be a column name"),
        ({"format": "nosuch"}, "format must be one of"),
    ],
)
def test_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SourceConfig(charge="ledger", **options).validate()


def test_new_formats_validate() -> None:
    for fmt in ("opensips_db", "freeswitch_json", "freeswitch_xml"):
        SourceConfig(format=fmt, charge="ledger").validate()
    SourceConfig(format="kamailio_cdrs", cdr_start="created", charge="ledger").validate()
