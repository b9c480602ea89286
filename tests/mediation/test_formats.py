"""Each switch format: every field lands where it should; bad rows are rejected by line.

The fixtures under tests/fixtures/cdr were written from each product's documentation.
"""

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
    """UTC "YYYY-MM-DD HH:MM:SS[.fff]" -> epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def mediate(name: str, source: SourceConfig) -> tuple[dict[str, Call], dict[int, str]]:
    calls: dict[str, Call] = {}
    rejects: dict[int, str] = {}
    with open(FIXTURES / name, encoding="utf-8", newline="") as fh:
        for line_no, item in normalised(fh, "src", source):
            if isinstance(item, Reject):
                rejects[line_no] = item.reason
            else:
                assert item.call_id not in calls
                calls[item.call_id] = item
    return calls, rejects


def check(call: Call, **expected: Any) -> None:
    got = {key: getattr(call, key) for key in expected}
    assert got == expected


def de(**kw: Any) -> SourceConfig:
    """A source dialling from Germany with a Berlin clock."""
    return SourceConfig(default_country="DE", time_zone="Europe/Berlin", **kw)


ASTERISK_CSV = de(format="asterisk", loguniqueid=True, loguserfield=True)


def test_asterisk_fixture_read_with_its_declared_columns() -> None:
    calls, rejects = mediate("asterisk_Master.csv", ASTERISK_CSV)
    # uniqueid + userfield (loguniqueid=yes, loguserfield=yes); summer time (CEST, UTC+2).
    check(
        calls["1782892800.11"],
        caller="+493012345678",
        callee="+498912345678",
        start_ms=ms("2026-07-01 08:00:00"),
        answer_ms=ms("2026-07-01 08:00:07"),
        end_ms=ms("2026-07-01 08:05:07"),
        duration_s=300,
        cause=16,
        gateway="SIP/provider",
        account="acc1",
        status="normal",
    )
    assert calls["1782892800.11"].extra["userfield"] == "vip"
    # Winter time (CET, UTC+1); the international prefix 00 is stripped; BUSY is Q.850 17.
    check(
        calls["1768467600.3"],
        callee="+41441234567",
        start_ms=ms("2026-01-15 09:00:00"),
        answer_ms=0,
        end_ms=ms("2026-01-15 09:00:12"),
        duration_s=0,
        cause=17,
        status="unanswered",
    )
    check(
        calls["1782900000.21"],
        caller="+4930222333",
        callee="+33123456789",
        duration_s=60,
        gateway="PJSIP/carrier",
    )
    # NO ANSWER is Q.850 19.
    check(calls["1782903600.30"], callee="+4989555666", cause=19, status="unanswered")
    assert calls["1782907200.39"].extra["userfield"] == "project-x"
    assert len(calls) == 5
    assert rejects == {
        6: "11 columns; the source's Master.csv has 18"
        " (loguniqueid=yes, loguserfield=yes, newcdrcolumns=no)",
        7: "start is not a time: '2026-13-01 14:00:00'",
        8: "callee 'nobody' is not a telephone number",
        9: "end time before start time",
    }


_AST_BASE = (
    '"acc1","03012345678","08912345678","from-internal","""Carol"" <03012345678>",'
    '"SIP/carol-00000001","SIP/provider-00000002","Dial","SIP/provider/08912345678,60",'
    '"2026-07-01 10:00:00","2026-07-01 10:00:07","2026-07-01 10:05:07",307,300,'
    '"ANSWERED","BILLING"'
)


@pytest.mark.parametrize(
    ("options", "tail", "call_id", "extra"),
    [
        ({}, "", "SIP/carol-00000001@2026-07-01 10:00:00", {}),
        ({"loguniqueid": True}, ',"1782892800.11"', "1782892800.11", {}),
        # A userfield shaped like a uniqueid is still the userfield: the config says so.
        ({"loguserfield": True}, ',"1782892800.99"', "SIP/carol-00000001@2026-07-01 10:00:00",
         {"userfield": "1782892800.99"}),
        ({"loguniqueid": True, "loguserfield": True}, ',"1782892800.11","vip"',
         "1782892800.11", {"userfield": "vip"}),
        ({"newcdrcolumns": True}, ',"peer","1782892800.10",3',
         "SIP/carol-00000001@2026-07-01 10:00:00", {"peeraccount": "peer",
                                                    "linkedid": "1782892800.10"}),
        ({"loguniqueid": True, "loguserfield": True, "newcdrcolumns": True},
         ',"1782892800.11","","peer","1782892800.10",3', "1782892800.11",
         {"peeraccount": "peer", "linkedid": "1782892800.10"}),
    ],
)  # fmt: skip
def test_asterisk_optional_columns_come_from_the_config(
    options: dict[str, bool], tail: str, call_id: str, extra: dict[str, str]
) -> None:
    source = de(format="asterisk", **options)
    ((_, call),) = list(normalised([_AST_BASE + tail + "\n"], "s", source))
    assert isinstance(call, Call) and call.call_id == call_id
    assert {k: v for k, v in call.extra.items() if k not in ("channel", "dstchannel")} == extra
    # The same row under another layout is rejected, never guessed.
    other = de(format="asterisk", **{**options, "newcdrcolumns": not options.get("newcdrcolumns")})
    ((_, reject),) = list(normalised([_AST_BASE + tail + "\n"], "s", other))
    assert isinstance(reject, Reject) and "columns; the source's Master.csv has" in reject.reason


def test_asterisk_usegmtime_reads_utc() -> None:
    source = de(format="asterisk", loguniqueid=True, usegmtime=True)
    ((_, call),) = list(normalised([_AST_BASE + ',"u1"\n'], "s", source))
    assert isinstance(call, Call) and call.start_ms == ms("2026-07-01 10:00:00")


FS_CUSTOM = (
    "uuid",
    "caller_id_number",
    "destination_number",
    "start_epoch",
    "answer_epoch",
    "end_epoch",
    "billsec",
    "sip_term_status",
    "sip_network_ip",
)


def test_freeswitch_example_and_sql_templates() -> None:
    calls, rejects = mediate("freeswitch_example.csv", de(format="freeswitch"))
    check(
        calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000001"],
        caller="+493012345678",
        callee="+498912345678",
        start_ms=ms("2026-07-01 08:00:00"),
        answer_ms=ms("2026-07-01 08:00:07"),
        end_ms=ms("2026-07-01 08:05:07"),
        duration_s=300,
        cause=16,
        account="acc1",
        status="normal",
    )
    busy = calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000003"]
    check(busy, callee="+41441234567", answer_ms=0, duration_s=0, cause=17, status="unanswered")
    assert busy.extra["hangup_cause"] == "USER_BUSY"
    # FreeSWITCH-only cause names map to the nearest Q.850 value.
    assert calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000004"].cause == 16
    # A line of the sql template (INSERT INTO cdr VALUES (...);), 13 columns.
    check(
        calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000006"],
        caller="+4930444555",
        duration_s=40,
        account="acc3",
    )
    assert len(calls) == 4
    assert rejects == {
        4: "6 columns; the template has 15",
        5: "billsec is not an integer: 'sixty'",
        7: "INSERT statement without a VALUES (...) list",
    }


def test_freeswitch_custom_template_maps_sip_codes_per_rfc3398() -> None:
    source = SourceConfig(format="freeswitch", default_country="DE", fields=FS_CUSTOM)
    calls, rejects = mediate("freeswitch_custom.csv", source)
    assert rejects == {}
    check(
        calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000101"],
        start_ms=1782892800000,
        answer_ms=1782892807000,
        end_ms=1782893107000,
        duration_s=300,
        cause=16,  # 200: normal clearing
        gateway="198.51.100.7",
    )
    # RFC 3398 §7.2.4.1: 486 -> 17 user busy, 404 -> 1 unallocated, 503 -> 41.
    causes = {cid[-3:]: call.cause for cid, call in calls.items()}
    assert causes == {"101": 16, "102": 17, "103": 1, "104": 41}
    assert calls["5d0e3c1a-7f5b-4e2a-9c1d-000000000104"].gateway == "198.51.100.8"


def test_kamailio_syslog_pairs_invite_and_bye() -> None:
    calls, rejects = mediate(
        "kamailio_acc.log", SourceConfig(format="kamailio", default_country="DE")
    )
    check(
        calls["a1b2c3d4@198.51.100.7"],
        caller="+493012345678",
        callee="+498912345678",
        start_ms=1782892807000,
        answer_ms=1782892807000,
        end_ms=1782893107000,
        duration_s=300,  # BYE time - INVITE time
        cause=16,
        status="normal",
    )
    # BYE sent by the callee: From/To tags swapped, still the same dialog.
    check(calls["e5f6a7b8@198.51.100.7"], duration_s=90, callee="+33123456789")
    # (line 11, a re-INVITE of the open dialog of line 10, is no new call.)
    # "call missed" INVITEs: unanswered, SIP code mapped to Q.850 (486 -> 17, 404 -> 1).
    check(calls["c9d0e1f2@198.51.100.7"], status="unanswered", duration_s=0, cause=17)
    check(calls["a3b4c5d6@198.51.100.7"], status="unanswered", cause=1)
    assert len(calls) == 4
    assert rejects == {
        7: "BYE without an answered INVITE",
        9: "ACC line without timestamp (acc_time_mode=0 writes one)",
        10: "incomplete: INVITE without BYE at end of file",
    }


def test_kamailio_failed_reinvite_is_not_a_second_call() -> None:
    """A 491 re-INVITE of an open dialog is logged as "call missed" (with failed-
    transaction accounting on in-dialog requests); it must not become an unanswered
    call with the same Call-ID, which would make the real call a duplicate."""
    head = "Jul  1 08:00:07 sbc kamailio[1]: NOTICE: acc: ACC: "
    tail = "src_user=493012345678;dst_user=498912345678"
    lines = [
        f"{head}transaction answered: timestamp=1782892807;method=INVITE;from_tag=a;"
        f"to_tag=b;call_id=re1;code=200;reason=OK;{tail}\n",
        f"{head}call missed: timestamp=1782892867;method=INVITE;from_tag=b;"
        f"to_tag=a;call_id=re1;code=491;reason=Request Pending;{tail}\n",
        f"{head}transaction answered: timestamp=1782892927;method=BYE;from_tag=a;"
        f"to_tag=b;call_id=re1;code=200;reason=OK;{tail}\n",
    ]
    items = list(normalised(lines, "sbc", SourceConfig(format="kamailio")))
    assert [(n, type(i).__name__) for n, i in items] == [(1, "Call")]
    call = items[0][1]
    assert isinstance(call, Call)
    assert (call.status, call.duration_s, call.cause) == ("normal", 120, 16)


def test_kamailio_acc_table_rows() -> None:
    source = de(format="kamailio_db")
    calls, rejects = mediate("kamailio_acc_db.csv", source)
    check(
        calls["a1b2c3d4@198.51.100.7"],
        caller="+493012345678",
        start_ms=ms("2026-07-01 08:00:07"),
        end_ms=ms("2026-07-01 08:05:07"),
        duration_s=300,
    )
    check(calls["c9d0e1f2@198.51.100.7"], status="unanswered", cause=17)
    assert rejects == {
        5: "time is not a time: 'not a time'",
        6: "8 columns; the header has 10",
        7: "incomplete: INVITE without BYE at end of file",
    }


def test_cucm_flat_file() -> None:
    calls, rejects = mediate("cucm_cdr.csv", SourceConfig(format="cucm", default_country="DE"))
    first = calls["2-5001"]  # globalCallID_callManagerId - globalCallID_callId
    check(
        first,
        caller="+493012345678",
        callee="+498912345678",
        start_ms=1782892800000,
        answer_ms=1782892807000,
        end_ms=1782893107000,
        duration_s=300,
        cause=16,  # origCause_value
        gateway="10.0.0.200",  # destIpAddr -939524086: little-endian octets
        status="normal",
    )
    assert first.extra["orig_ip"] == "192.0.2.20"
    check(calls["2-5002"], answer_ms=0, cause=17, status="unanswered")  # destCause_value
    # Same callId on another node is another call.
    check(calls["3-5001"], callee="+41441234567", duration_s=60, gateway="198.51.100.30")
    assert len(calls) == 3  # the cdrRecordType 0 row is not a call record
    assert rejects == {6: "dateTimeOrigination is not an integer: 'abc'"}


def test_cisco_radius_joins_legs_by_conf_id() -> None:
    source = de(format="cisco_radius")
    calls, rejects = mediate("cisco_radius_detail", source)
    check(
        calls["11111111222222223333333344444444"],
        caller="+493012345678",
        callee="+498912345678",
        start_ms=ms("2026-07-01 08:00:00.250"),
        answer_ms=ms("2026-07-01 08:00:07.500"),
        end_ms=ms("2026-07-01 08:05:07.400"),
        duration_s=300,
        cause=16,  # hex 10
        gateway="192.0.2.50",
        status="normal",
    )
    assert calls["11111111222222223333333344444444"].extra["remote_address"] == "198.51.100.40"
    # '*' (clock not synchronised) stripped; hex 11 = 17; only the VoIP leg reported.
    check(
        calls["AAAAAAAABBBBBBBBCCCCCCCCDDDDDDDD"],
        start_ms=ms("2026-07-01 08:10:00"),
        end_ms=ms("2026-07-01 08:10:20"),
        cause=17,
        status="unanswered",
    )
    # '.' (sync lost) stripped; a CEST clock is read in the source zone; hex 1F = 31.
    check(
        calls["CCCC0001CCCC0002CCCC0003CCCC0004"],
        start_ms=ms("2026-07-01 08:20:00"),
        answer_ms=ms("2026-07-01 08:20:10"),
        duration_s=30,
        cause=31,
        gateway="192.0.2.51",
    )
    assert len(calls) == 3
    assert rejects == {
        90: "incomplete: Start without Stop at end of file",
        101: "record without h323-conf-id",
        108: "h323-disconnect-cause is not base 16: 'ZZ'",
    }


def test_cisco_radius_decimal_causes() -> None:
    lines = (FIXTURES / "cisco_radius_detail").read_text().splitlines(keepends=True)
    source = de(format="cisco_radius", radius_cause_radix=10)
    causes = {
        call.call_id: call.cause
        for _, call in normalised(lines, "src", source)
        if isinstance(call, Call)
    }
    assert causes["11111111222222223333333344444444"] == 10


GENERIC = de(
    format="csv",
    delimiter=";",
    time_format="%d.%m.%Y %H:%M:%S",
    mapping={
        "call_id": "CallRef",
        "caller": "From",
        "callee": "To",
        "start": "Begin",
        "answer": "Connected",
        "end": "Finished",
        "billsec": "Talk",
        "cause": "Cause",
        "account": "Customer",
        "gateway": "Trunk",
    },
)


def test_generic_csv_with_mapping() -> None:
    calls, rejects = mediate("generic_semicolon.csv", GENERIC)
    check(
        calls["R-0001"],
        caller="+493012345678",  # "030 1234 5678": separators dropped
        callee="+498912345678",
        start_ms=ms("2026-07-01 08:00:00"),
        answer_ms=ms("2026-07-01 08:00:07"),
        end_ms=ms("2026-07-01 08:05:07"),
        duration_s=300,
        cause=16,
        account="acc1",
        gateway="tg-7",
    )
    check(calls["R-0002"], callee="+41441234567", start_ms=ms("2026-01-15 09:00:00"), cause=17)
    assert rejects == {
        4: "start '01.07.2026 25:00:00' does not match '%d.%m.%Y %H:%M:%S'",
        5: "2 columns; the mapping needs 10",
    }


def test_generic_csv_by_index_with_epoch_times_and_no_answer_column() -> None:
    source = SourceConfig(
        format="csv",
        header=False,
        time_format="epoch",
        mapping={"caller": 0, "callee": 1, "end": 2, "billsec": 3, "sip_code": 4},
    )
    lines = [
        "4930123456,4989987654,1552294930,125,200\n",
        "4930555000,4989987654,1552295420,0,486\n",
    ]
    items = [item for _, item in normalised(lines, "src", source)]
    answered, busy = items
    assert isinstance(answered, Call) and isinstance(busy, Call)
    check(
        answered,
        caller="+4930123456",
        answer_ms=1552294805000,  # end - billsec
        end_ms=1552294930000,
        duration_s=125,
        cause=16,
    )
    check(busy, status="unanswered", cause=17)
    assert answered.call_id != busy.call_id


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("4930123456,,1552294930,125,200\n", "callee '' is not a telephone number"),
        ("4930123456,4989987654,,125,200\n", "no end time"),
        ("4930123456,4989987654,1552294930,-5,200\n", "negative talk time -5"),
        ("4930123456,4989987654,inf,125,200\n", "end is not an epoch time: 'inf'"),
        ("4930123456,4989987654,1e999,125,200\n", "end is not an epoch time: '1e999'"),
    ],
)
def test_generic_csv_bad_rows(row: str, reason: str) -> None:
    source = SourceConfig(
        format="csv",
        header=False,
        time_format="epoch",
        mapping={"caller": 0, "callee": 1, "end": 2, "billsec": 3, "sip_code": 4},
    )
    ((line_no, item),) = list(normalised([row], "src", source))
    assert line_no == 1
    assert isinstance(item, Reject)
    assert item.reason == reason


def _csv_calls(mapping: dict[str, str | int], *lines: str) -> list[Call]:
    source = de(format="csv", header=False, time_format="%Y-%m-%d %H:%M:%S", mapping=mapping)
    items = [item for _, item in normalised(list(lines), "src", source)]
    assert all(isinstance(item, Call) for item in items), items
    return [item for item in items if isinstance(item, Call)]


def test_generic_csv_without_an_end_column_computes_the_end_in_utc() -> None:
    """Many CDR exports give a start and a duration (or an answer and a billsec), no
    end: the config was refused ("needs mapping for end"). The end is computed on the
    UTC clock: across the Berlin fall-back night (2026-10-25, 03:00 CEST -> 02:00 CET)
    a call from 01:50 CEST lasting 4800 s ends at 02:10 CET (01:10 UTC), not at a
    wall-clock 03:10."""
    start_duration = {"call_id": 0, "callee": 1, "start": 2, "duration": 3, "billsec": 4}
    night, unanswered = _csv_calls(
        start_duration,
        "n1,+498912345678,2026-10-25 01:50:00,4800,4790\n",
        "n2,+498912345678,2026-10-25 01:55:00,20,0\n",
    )
    check(
        night,
        start_ms=ms("2026-10-24 23:50:00"),
        answer_ms=ms("2026-10-25 01:10:00") - 4_790_000,  # billsec before the end
        end_ms=ms("2026-10-25 01:10:00"),
        duration_s=4790,
        status="normal",
    )
    check(unanswered, end_ms=ms("2026-10-24 23:55:20"), answer_ms=0, status="unanswered")
    # answer + billsec: the end is the answer + billsec; an empty answer is unanswered.
    answer_billsec = {"call_id": 0, "callee": 1, "start": 2, "answer": 3, "billsec": 4}
    answered, busy = _csv_calls(
        answer_billsec,
        "a1,+498912345678,2026-07-01 10:00:00,2026-07-01 10:00:06,125\n",
        "a2,+498912345678,2026-07-01 10:10:00,,0\n",
    )
    check(answered, answer_ms=ms("2026-07-01 08:00:06"), end_ms=ms("2026-07-01 08:02:11"),
          duration_s=125)  # fmt: skip
    check(busy, start_ms=ms("2026-07-01 08:10:00"), end_ms=ms("2026-07-01 08:10:00"),
          status="unanswered")  # fmt: skip
    # start + billsec, nothing else: answered at its start, for billsec.
    (only,) = _csv_calls({"callee": 0, "start": 1, "billsec": 2},
                         "+498912345678,2026-07-01 10:00:00,61\n")  # fmt: skip
    check(only, answer_ms=ms("2026-07-01 08:00:00"), end_ms=ms("2026-07-01 08:01:01"),
          duration_s=61, status="normal")  # fmt: skip


# Asterisk's cdr_csv writes 16 columns with cdr.conf's [csv] defaults, 18 with the sample
# cdr.conf's loguniqueid=yes and loguserfield=yes, 19 with newcdrcolumns=yes alone, 21
# with all three (cdr_csv.c build_csv_record). A source that says none of the options
# reads them from the file's first row.
_AST_AUTO = [
    ("", "SIP/carol-00000001@2026-07-01 10:00:00", {}),
    (',"1782892800.11","vip"', "1782892800.11", {"userfield": "vip"}),
    (',"peer","1782892800.10",3', "SIP/carol-00000001@2026-07-01 10:00:00",
     {"peeraccount": "peer", "linkedid": "1782892800.10"}),
    (',"1782892800.11","","peer","1782892800.10",3', "1782892800.11",
     {"peeraccount": "peer", "linkedid": "1782892800.10"}),
]  # fmt: skip


@pytest.mark.parametrize(("tail", "call_id", "extra"), _AST_AUTO)
def test_asterisk_columns_from_the_first_row_when_the_source_says_none(
    tail: str, call_id: str, extra: dict[str, str]
) -> None:
    source = de(format="asterisk")
    ((_, call),) = list(normalised([_AST_BASE + tail + "\n"], "s", source))
    assert isinstance(call, Call) and call.call_id == call_id
    assert {k: v for k, v in call.extra.items() if k not in ("channel", "dstchannel")} == extra


def test_asterisk_the_first_rows_columns_hold_for_the_file() -> None:
    rows = [_AST_BASE + ',"1782892800.11","vip"\n', _AST_BASE.replace("acc1", "acc2") + "\n"]
    (_, first), (_, second) = list(normalised(rows, "s", de(format="asterisk")))
    assert isinstance(first, Call) and first.call_id == "1782892800.11"
    assert isinstance(second, Reject)
    assert second.reason == (
        "16 columns; this file's first row has 18"
        " (loguniqueid=yes, loguserfield=yes, newcdrcolumns=no)"
    )


@pytest.mark.parametrize("tail", [',"1782892800.11"', ',"vip","peer","1782892800.10",3'])
def test_asterisk_17_or_20_columns_ask_the_source_to_say(tail: str) -> None:
    ((_, reject),) = list(normalised([_AST_BASE + tail + "\n"], "s", de(format="asterisk")))
    assert isinstance(reject, Reject)
    assert "say which in the source (loguniqueid = true or loguserfield = true)" in reject.reason
    # Said, the same row is read.
    options = {"loguniqueid": "vip" not in tail, "loguserfield": "vip" in tail}
    source = de(format="asterisk", newcdrcolumns="peer" in tail, **options)
    ((_, call),) = list(normalised([_AST_BASE + tail + "\n"], "s", source))
    assert isinstance(call, Call)


def test_asterisk_other_counts_are_rejected_with_the_layouts_cdr_csv_writes() -> None:
    row = _AST_BASE + ',"a","b","c","d","e","f"\n'
    ((_, reject),) = list(normalised([row], "s", de(format="asterisk")))
    assert isinstance(reject, Reject) and reject.reason.startswith("22 columns; ")
    assert "a Master.csv has 16 (cdr.conf [csv] defaults), 18" in reject.reason
