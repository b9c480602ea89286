"""Vendor-documented files through `chargingd mediate` and the parsers, a QA pass (each
test failed before its fix): a damaged field is one reject with its reason, never a
crash, a hang or a row dropped unaccounted; the exact talk time where the switch writes
one (Kamailio acc_time_mode, OpenSIPS ms_duration, FreeSWITCH billusec); and layouts the
vendors document that were rejected (Asterisk cdr_custom's sample mapping, Kamailio's
CDR log, OpenSIPS's acc log, Cisco Accounting-On/Off, Latin-1 lines, a trailing #)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import FIXTURES

from chargingd.app.cli import main
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised, open_cdr_file
from chargingd.mediation.records import Reject

TARIFF = FIXTURES / "cdr" / "tariff_tp"


def _config(tmp_path: Path, fmt: str, extra: str = "") -> Path:
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[mediation.sources.s]\nformat = "{fmt}"\n'
        'time_zone = "Europe/Berlin"\ndefault_country = "DE"\naccount_rule = "fixed"\n'
        f'account = "c1"\nplan = "{TARIFF}"\ntenant = "chargingd.test"\n'
        f'charge = "record_only"\n{extra}'
    )
    return config


def _dry_run(tmp_path: Path, config: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "cdrs"
    path.write_text(text)
    code = main(["mediate", str(path), "--source", "s", "--config", str(config), "--dry-run",
                 "--quiet"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1, out
    return out


# CUCM CDR guide: the header line of names, the line of types, then one record per
# line; dateTimeOrigination/Connect/Disconnect are epoch seconds (UTC), duration the
# seconds connected.
CUCM = (
    '"cdrRecordType","globalCallID_callManagerId","globalCallID_callId",'
    '"origLegCallIdentifier","dateTimeOrigination","callingPartyNumber","origCause_value",'
    '"destLegIdentifier","finalCalledPartyNumber","destCause_value","dateTimeConnect",'
    '"dateTimeDisconnect","duration"\n'
    "INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),INTEGER,INTEGER,VARCHAR(50),"
    "INTEGER,INTEGER,INTEGER,INTEGER\n"
)


def test_cucm_corrupt_epoch_is_a_reject_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dateTimeConnect written with 14 digits (a damaged file) crashed the run in
    rating (OverflowError: a traceback, every later record lost); a dateTimeOrigination
    before 1970 was stored. Each is now a reject saying which time is out of range."""
    text = CUCM + (
        '1,1,7001,101,1773219600,"4930123456",0,102,"4989987654",16,99999999999990,'
        "99999999999999,125\n"
        '1,1,7002,103,-1773219600,"4930123456",0,104,"4989987654",16,0,1773219730,0\n'
        '1,1,7003,105,1773219600,"4930123456",0,106,"4989987654",16,1773219605,1773219730,'
        "125\n"
    )
    out = _dry_run(tmp_path, _config(tmp_path, "cucm"), text, capsys)
    assert "read 3, stored 1, duplicates 0, rejected 2" in out
    assert ":3: rejected: answer time out of range (1970-3000)" in out
    assert ":4: rejected: start time out of range (1970-3000): 1913-10-23T15:00:00+00:00" in out


def test_asterisk_billsec_longer_than_the_call_is_a_reject(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """cdr_csv writes billsec = end - answer. A billsec the row's own times cannot hold
    (a damaged field) was billed as it stood: 86400 s on a call answered for 125 s (and
    999999999999 s made the run rate for ever). It is a reject now; billsec within a
    second or two of end - answer (the switch's rounding) is kept."""
    row = (
        '"","+4930123456","004989987654","from-internal","","PJSIP/1001-0000000{n}",'
        '"PJSIP/trunk-0000000{n}","Dial","PJSIP/004989987654@trunk","2026-03-11 09:00:00",'
        '"2026-03-11 09:00:05","2026-03-11 09:02:10",130,{billsec},"ANSWERED","DOCUMENTATION"\n'
    )
    text = row.format(n=1, billsec=86400) + row.format(n=2, billsec=126)
    out = _dry_run(tmp_path, _config(tmp_path, "asterisk"), text, capsys)
    assert "read 2, stored 1, duplicates 0, rejected 1" in out
    assert ":1: rejected: talk time 86400 s is longer than answer to end (125 s)" in out


def test_a_non_ascii_digit_is_a_reject_not_a_crash() -> None:
    """str.isdigit() is true for "²": an acc log timestamp or a csv cause holding one
    (a damaged byte that decodes to it) crashed the run (decimal.InvalidOperation,
    ValueError) instead of rejecting that record."""
    acc = (
        "Jul  1 08:05:07 sbc2 kamailio[3108]: NOTICE: acc [acc.c:284]: ACC: transaction"
        " answered: timestamp=1782893107²;method=INVITE;from_tag=f;to_tag=t;call_id=c1;"
        "code=200;reason=OK;src_user=4930123456;dst_user=4989987654\n"
    )
    ((_, item),) = normalised([acc], "s", SourceConfig(format="kamailio"))
    assert isinstance(item, Reject) and item.reason.startswith("timestamp is not an epoch")
    source = SourceConfig(
        format="csv", time_format="epoch", header=False,
        mapping={"call_id": 0, "caller": 1, "callee": 2, "end": 3, "billsec": 4, "cause": 5},
    )  # fmt: skip
    ((_, call),) = normalised(["c1,4930123456,4989987654,1782893107,0,1²\n"], "s", source)
    assert isinstance(call, Call) and call.cause == 0


def test_kamailio_acc_time_mode_gives_the_milliseconds() -> None:
    """Kamailio acc docs, acc_time_mode: 1 logs the microseconds as time_exten (the acc
    table: time_attr = seconds, time_exten = microseconds), 2 the time with milliseconds
    as time_attr (acc.c acc_log_request / acc_db_request). They were ignored: a call
    from 09:00:05.900 to 09:01:06.300 (60.4 s) was read from the whole seconds, 61 s,
    two minutes on a 60 s increment tariff. Now 60 s; mode 3/4 (a formatted
    time_attr) keep the timestamp's seconds."""
    head = (
        "Mar 11 09:00:05 sbc1 kamailio[2211]: NOTICE: acc [acc.c:281]: ACC: transaction answered: "
    )
    users = ";src_user=4930123456;src_ip=192.0.2.10;dst_user=4930111222"
    modes = {
        "1": ("timestamp=1773219605;time_exten=900000", "timestamp=1773219666;time_exten=300000"),
        "2": ("timestamp=1773219605;time_attr=1773219605.900",
              "timestamp=1773219666;time_attr=1773219666.300"),
        "4": ("timestamp=1773219605;time_attr=2026-03-11 09:00:05",
              "timestamp=1773219666;time_attr=2026-03-11 09:01:06"),
    }  # fmt: skip
    for mode, (invite, bye) in modes.items():
        lines = [
            f"{head}{invite};method=INVITE;from_tag=f;to_tag=t;call_id=c{mode};code=200;"
            f"reason=OK{users}\n",
            f"{head}{bye};method=BYE;from_tag=t;to_tag=f;call_id=c{mode};code=200;"
            f"reason=OK{users}\n",
        ]
        ((_, call),) = normalised(lines, "s", SourceConfig(format="kamailio"))
        assert isinstance(call, Call), call
        expected = (60, 1773219605900) if mode != "4" else (61, 1773219605000)
        assert (call.duration_s, call.answer_ms) == expected, mode
    # %.3f rounds 1773219605.9996 up: the next second's .000 is still this event.
    rounded = [
        line.replace("timestamp=1773219605;time_attr=1773219605.900",
                     "timestamp=1773219605;time_attr=1773219606.000")
        for line in (
            f"{head}{modes['2'][0]};method=INVITE;from_tag=f;to_tag=t;call_id=r;code=200;"
            f"reason=OK{users}\n",
            f"{head}{modes['2'][1]};method=BYE;from_tag=t;to_tag=f;call_id=r;code=200;"
            f"reason=OK{users}\n",
        )
    ]  # fmt: skip
    ((_, call),) = normalised(rounded, "s", SourceConfig(format="kamailio"))
    assert isinstance(call, Call) and call.answer_ms == 1773219606000
    # The acc table with acc_time_mode = 1 (its time column local, to the second).
    table = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,time_attr,time_exten,"
        "src_user,dst_user\n",
        "1,INVITE,f,t,d1,200,OK,2026-03-11 10:00:05,1773219605,900000,4930123456,4930111222\n",
        "2,BYE,t,f,d1,200,OK,2026-03-11 10:01:06,1773219666,300000,4930111222,4930123456\n",
    ]
    source = SourceConfig(format="kamailio_db", time_zone="Europe/Berlin")
    ((_, call),) = normalised(table, "s", source)
    assert isinstance(call, Call) and (call.duration_s, call.end_ms) == (60, 1773219666300)


def test_asterisk_cdr_custom_sample_mapping_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asterisk's configs/samples/cdr_custom.conf.sample writes cdr-custom/Master.csv as
    ${CSV_QUOTE(${CDR(clid)})},...,start,answer,end,duration,billsec,disposition,
    amaflags,accountcode,uniqueid,userfield,${CDR(sequence)}: 19 columns, clid first,
    every value quoted, and (its "High Resolution" line) duration/billsec with
    decimals. Read as cdr_csv's 19 (newcdrcolumns), every row was rejected ("end is not
    a time: '130'"); the first row's 9th and 11th values, times, tell it apart."""
    row = (
        '"""M\u00fcller, Hans"" <+4930123456>","+4930123456","004989987654",'
        '"from-internal","PJSIP/1001-0000000{n}","PJSIP/trunk-0000000{n}","Dial",'
        '"PJSIP/004989987654@trunk,60","2026-03-11 09:{m}0:00","{answer}",'
        '"2026-03-11 09:{m}2:10","{duration}","{billsec}","{disposition}","DOCUMENTATION",'
        '"acc1","1773216000.{n}","","{n}"\n'
    )
    text = (
        row.format(n=1, m=0, answer="2026-03-11 09:00:05", duration="130", billsec="125",
                   disposition="ANSWERED")
        + row.format(n=2, m=1, answer="", duration="130", billsec="0", disposition="NO ANSWER")
        + row.format(n=3, m=2, answer="2026-03-11 09:20:05", duration="130.452",
                     billsec="124.612", disposition="ANSWERED")
    )  # fmt: skip
    source = SourceConfig(format="asterisk", time_zone="Europe/Berlin", default_country="DE")
    calls = [c for _, c in normalised(text.splitlines(keepends=True), "s", source)]
    assert [
        (c.call_id, c.caller, c.callee, c.duration_s, c.status, c.account, c.start_ms)
        for c in calls
        if isinstance(c, Call)
    ] == [
        ("1773216000.1", "+4930123456", "+4989987654", 125, "normal", "acc1", 1773216000000),
        ("1773216000.2", "+4930123456", "+4989987654", 0, "unanswered", "acc1", 1773216600000),
        ("1773216000.3", "+4930123456", "+4989987654", 125, "normal", "acc1", 1773217200000),
    ]
    path = tmp_path / "Master.csv"
    path.write_text(text)
    argv = ["mediate", str(path), "--source", "s", "--config", str(_config(tmp_path, "asterisk"))]
    assert main([*argv, "--dry-run", "--quiet"]) == 0
    assert "dry run: read 3, stored 3, duplicates 0, rejected 0" in capsys.readouterr().out


def test_latin1_display_names_in_csv_files_are_read(tmp_path: Path) -> None:
    """mod_cdr_csv (and Asterisk cdr_csv) expand a caller's display name as the channel
    holds it: from a SIP UA in UTF-8, from an ISDN display IE or an old phone in Latin-1,
    so one Master.csv can hold both. A Latin-1 line was read with U+FFFD ("M\\ufffdller",
    its reject's raw text too); each line is now read as what it is."""
    row = (
        '"{name}","+4930123456","004989987654","default","2026-03-11 09:00:00",'
        '"2026-03-11 09:00:05","2026-03-11 09:02:10","130","125","NORMAL_CLEARING",'
        '"{uuid}","","acc1","PCMA","PCMA"\n'
    )
    path = tmp_path / "Master.csv"
    path.write_bytes(
        row.format(name="Jürgen", uuid="u-1").encode()
        + row.format(name="Müller, Hans", uuid="u-2").encode("latin-1")
        + row.format(name="Müller", uuid="u-3").replace('"125"', '"12x"').encode("latin-1")
    )
    source = SourceConfig(format="freeswitch", time_zone="Europe/Berlin", default_country="DE")
    with open_cdr_file(path) as fh:
        found = [item for _, item in normalised(fh, "s", source)]
    names = [c.extra["caller_id_name"] for c in found if isinstance(c, Call)]
    assert names == ["Jürgen", "Müller, Hans"]
    assert isinstance(found[2], Reject) and found[2].raw.startswith('"Müller",')


def test_cucm_record_of_no_known_type_is_a_reject() -> None:
    """CUCM CDR guide: cdrRecordType is 0 (start record, not used), 1 (a CDR) or 2 (a
    CMR). A record whose first field is none of them (a line cut at its start, two
    records run together) was dropped unaccounted: not read, not rejected. Files
    joined with cat (a header and types line again) are read on."""
    record = (
        '{kind},1,{cid},101,1773219600,"4930123456",0,102,"4989987654",16,1773219605,'
        "1773219730,125\n"
    )
    lines = [
        *CUCM.splitlines(keepends=True),
        record.format(kind=1, cid=7001),
        record.format(kind="", cid=7002),
        record.format(kind="0:05", cid=7003),
        record.format(kind=2, cid=7004),
        *CUCM.splitlines(keepends=True),
        record.format(kind=1, cid=7005),
    ]
    found = [(n, getattr(i, "call_id", getattr(i, "reason", ""))) for n, i in
             normalised(lines, "s", SourceConfig(format="cucm"))]  # fmt: skip
    assert found == [
        (3, "1-7001"),
        (4, "cdrRecordType '' is not 0, 1 or 2 (CDR guide)"),
        (5, "cdrRecordType '0:05' is not 0, 1 or 2 (CDR guide)"),
        (9, "1-7005"),
    ]


def test_cisco_accounting_on_and_off_are_no_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 2866 5.1: a NAS sends Acct-Status-Type Accounting-On when its accounting
    starts (a Cisco gateway reloading) and Accounting-Off when it stops; FreeRADIUS
    writes them into the detail file beside the calls. They carry no session and no
    h323-conf-id, and were rejected ("record without h323-conf-id": exit 1 on every
    file after a reload). They are skipped like Interim-Update; a status that is none of
    these is a reject saying so."""
    stop = "\n".join((
        "Wed Mar 11 09:02:10 2026", "\tAcct-Status-Type = {status}",
        "\tNAS-IP-Address = 192.0.2.10", '\tAcct-Session-Id = "0000001A"',
        '\tCalling-Station-Id = "4930123456"', '\tCalled-Station-Id = "4989987654"',
        '\th323-conf-id = "h323-conf-id=3A7F2C10 11E9A1B2 8000C0A8 0A0A000{n}"',
        '\th323-call-origin = "h323-call-origin=answer"',
        '\th323-setup-time = "h323-setup-time=*09:00:00.000 UTC Wed Mar 11 2026"',
        '\th323-connect-time = "h323-connect-time=*09:00:05.000 UTC Wed Mar 11 2026"',
        '\th323-disconnect-time = "h323-disconnect-time=*09:02:10.000 UTC Wed Mar 11 2026"',
        '\th323-disconnect-cause = "h323-disconnect-cause=10"', "\tAcct-Session-Time = 125",
    )) + "\n\n"  # fmt: skip
    on_off = (
        "Wed Mar 11 08:59:00 2026\n\tAcct-Status-Type = Accounting-{x}\n"
        '\tNAS-IP-Address = 192.0.2.10\n\tAcct-Session-Id = "00000000"\n'
        "\tAcct-Delay-Time = 0\n\n"
    )
    text = (on_off.format(x="On") + stop.format(status="Stop", n=1)
            + stop.format(status="2", n=2) + stop.format(status="Stopp", n=3)
            + on_off.format(x="Off"))  # fmt: skip
    out = _dry_run(tmp_path, _config(tmp_path, "cisco_radius"), text, capsys)
    assert "read 3, stored 2, duplicates 0, rejected 1" in out
    assert ":35: rejected: Acct-Status-Type 'Stopp' is not Start or Stop" in out


def test_acc_row_with_a_damaged_method_is_a_reject() -> None:
    """The acc tables (Kamailio acc, OpenSIPS acc in CDR mode) hold other requests'
    transactions too (MESSAGE, a re-INVITE's ACK...), skipped as no call. A row whose
    method is no SIP method at all (empty, damaged) was skipped the same way,
    unaccounted; it is a reject now."""
    kam = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,dst_user\n",
        "1,MESSAGE,f,t,m1,200,OK,2026-03-11 10:00:00,4930123456,4989987654\n",
        "2,,f,t,c1,200,OK,2026-03-11 10:00:05,4930123456,4989987654\n",
    ]
    found = list(normalised(kam, "s", SourceConfig(format="kamailio_db")))
    assert [(n, getattr(i, "reason", "")) for n, i in found] == [
        (3, "method is not a SIP method: ''")
    ]
    ops = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,setuptime,"
        "created,caller_id,callee_id\n",
        "1,MESSAGE,f,t,m1,200,OK,2026-03-11 10:00:00,0,0,,4930123456,4989987654\n",
        "2,IN VITE,f,t,c1,200,OK,2026-03-11 10:00:05,60,5,,4930123456,4989987654\n",
    ]
    found = list(normalised(ops, "s", SourceConfig(format="opensips_db")))
    assert [(n, getattr(i, "reason", "")) for n, i in found] == [
        (3, "method is not a SIP method: 'IN VITE'")
    ]


HUGE = "18446744073709551616"  # 2**64: a damaged integer field


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        (  # OpenSIPS acc (CDR mode): ms_duration
            SourceConfig(format="opensips_db"),
            [
                "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,ms_duration,"
                "setuptime,created,caller_id,callee_id\n",
                f"1,INVITE,f,t,c1,200,OK,2026-03-11 10:00:05,60,{HUGE},5,,4930123456,4989987654\n",
            ],
        ),
        (  # OpenSIPS: setuptime, created NULL (start = time - setuptime)
            SourceConfig(format="opensips_db"),
            [
                "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,setuptime,"
                "created,caller_id,callee_id\n",
                f"1,INVITE,f,t,c1,200,OK,2026-03-11 10:00:05,60,{HUGE},NULL,"
                "4930123456,4989987654\n",
            ],
        ),
        (  # a cdr_csv template without an answer time: answer = end - billsec
            SourceConfig(
                format="freeswitch",
                fields=(
                    "uuid",
                    "caller_id_number",
                    "destination_number",
                    "start_stamp",
                    "end_stamp",
                    "billsec",
                ),
            ),
            [
                f'"u1","+4930123456","+4989987654","2026-03-11 09:00:00","2026-03-11 09:02:10",'
                f'"{HUGE}"\n'
            ],
        ),
        (  # csv without an answer column
            SourceConfig(
                format="csv",
                header=False,
                mapping={"call_id": 0, "caller": 1, "callee": 2, "end": 3, "billsec": 4},
            ),
            [f"c1,4930123456,4989987654,2026-03-11 09:02:10,{HUGE}\n"],
        ),
        (  # Cisco Stop without h323-connect-time: answered at disconnect - session time
            SourceConfig(format="cisco_radius"),
            [
                "Wed Mar 11 09:02:10 2026\n",
                "\tAcct-Status-Type = Stop\n",
                '\tCalling-Station-Id = "4930123456"\n',
                '\tCalled-Station-Id = "4989987654"\n',
                '\th323-conf-id = "h323-conf-id=3A7F2C10 11E9A1B2 8000C0A8 0A0A0001"\n',
                '\th323-call-origin = "h323-call-origin=answer"\n',
                '\th323-disconnect-time = "h323-disconnect-time=09:02:10.000 UTC Wed Mar 11'
                ' 2026"\n',
                f"\tAcct-Session-Time = {HUGE}\n",
                "\n",
            ],
        ),
    ],
    ids=["opensips-ms_duration", "opensips-setuptime", "freeswitch", "csv", "cisco"],
)
def test_a_damaged_seconds_field_is_a_reject_not_a_crash(
    source: SourceConfig, lines: list[str]
) -> None:
    """A time the parser computes from a damaged seconds field (2**64) raised
    OverflowError out of timedelta: the run crashed, losing the rest of the file (found
    by mutating the fixtures' fields). Each is now that record's reject."""
    ((_, item),) = normalised(lines, "s", source)
    assert isinstance(item, Reject), item


def test_a_time_with_an_offset_at_the_calendar_edge_is_a_reject() -> None:
    """A csv time with a UTC offset (time_format "%Y-%m-%dT%H:%M:%S%z", or ISO 8601 as
    the default format reads it) at year 1 or 9999 (a damaged field) lies outside what
    a datetime holds once in UTC: OverflowError crashed the run. Now the range reject."""
    mapping: dict[str, str | int] = {"call_id": 0, "caller": 1, "callee": 2, "start": 3, "end": 4}
    for time_format, start, end in (
        ("%Y-%m-%dT%H:%M:%S%z", "0001-01-01T00:00:00+01:00", "0001-01-01T00:10:00+01:00"),
        ("%Y-%m-%d %H:%M:%S", "9999-12-31T23:00:00-05:00", "9999-12-31T23:10:00-05:00"),
    ):
        source = SourceConfig(format="csv", header=False, time_format=time_format, mapping=mapping)
        ((_, item),) = normalised([f"c1,4930123456,4989987654,{start},{end}\n"], "s", source)
        assert isinstance(item, Reject) and "out of range (1970-3000)" in item.reason


def test_kamailio_db_time_with_and_without_an_offset_is_no_crash() -> None:
    """An acc table's time column read with a UTC offset on some rows only ("10:00:05+01",
    as psql prints a timestamptz; a damaged row) made the held-back missed call's age
    check subtract a naive from an aware datetime: TypeError, the run crashed."""
    lines = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,dst_user\n",
        "1,INVITE,f1,,m1,486,Busy Here,2026-03-11 10:00:05,4930123456,4989987654\n",
        "2,INVITE,f2,,m2,486,Busy Here,2026-03-11 12:00:05+01,4930123456,4989987654\n",
    ]
    source = SourceConfig(format="kamailio_db", time_zone="Europe/Berlin")
    found = [(n, getattr(i, "call_id", "")) for n, i in normalised(lines, "s", source)]
    assert found == [(2, "m1"), (3, "m2")]


def test_opensips_talk_time_is_ms_duration() -> None:
    """OpenSIPS acc.c (acc_db_cdrs) writes duration = bye.tv_sec - start.tv_sec, a
    difference of whole seconds, and ms_duration = the exact milliseconds (DB schema:
    both "from 200OK INVITE to BYE"). A call answered at 10:00:05.900 and ended at
    10:01:06.300 has duration 61 and ms_duration 60400: it was billed 61 s (two minutes
    on a 60 s increment tariff) though its end was read as time + 60.4 s. The talk
    time is ms_duration when the table has it (60 s); duration without it."""
    lines = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,ms_duration,"
        "setuptime,created,caller_id,callee_id\n",
        "1,INVITE,f1,t1,c1,200,OK,2026-03-11 10:00:05,61,60400,5,2026-03-11 10:00:00,"
        "4930123456,4930111222\n",
    ]
    ((_, call),) = normalised(lines, "s", SourceConfig(format="opensips_db"))
    assert isinstance(call, Call)
    assert (call.duration_s, call.end_ms - call.answer_ms) == (60, 60400)
    plain = [lines[0].replace("ms_duration,", ""), lines[1].replace("60400,", "")]
    ((_, call),) = normalised(plain, "s", SourceConfig(format="opensips_db"))
    assert isinstance(call, Call) and call.duration_s == 61


def test_freeswitch_talk_time_is_billusec_or_billmsec() -> None:
    """switch_channel.c (switch_channel_set_timestamps) sets billsec = hangup second -
    answer second, a difference of whole seconds, and billmsec / billusec the exact
    time; mod_json_cdr and mod_xml_cdr write every channel variable. A call answered
    at 09:00:05.900 and hung up at 09:01:06.300 has billsec 61, billmsec 60400: it was
    billed 61 s (two minutes on a 60 s increment tariff). The talk time is billusec (or
    billmsec) rounded half up when the record has it: 60 s; a cdr_csv template may log
    them too."""
    variables = {
        "uuid": "u-1",
        "caller_id_number": "%2B4930123456",
        "destination_number": "004930111222",
        "start_uepoch": "1773219600000000",
        "answer_uepoch": "1773219605900000",
        "end_uepoch": "1773219666300000",
        "duration": "66",
        "billsec": "61",
        "billmsec": "60400",
        "billusec": "60400000",
        "hangup_cause": "NORMAL_CLEARING",
    }
    as_json = json.dumps({"variables": variables}) + "\n"
    tags = "".join(f"<{k}>{v}</{k}>" for k, v in variables.items())
    as_xml = f"<cdr><variables>{tags}</variables></cdr>\n"
    for fmt, text in (("freeswitch_json", as_json), ("freeswitch_xml", as_xml)):
        source = SourceConfig(format=fmt, default_country="DE")
        ((_, call),) = normalised(text.splitlines(keepends=True), "s", source)
        assert isinstance(call, Call) and call.duration_s == 60, fmt
    fields = ("uuid", "caller_id_number", "destination_number", "start_epoch",
              "answer_epoch", "end_epoch", "billsec", "billmsec")  # fmt: skip
    row = '"u-2","+4930123456","004930111222","1773219600","1773219605","1773219666","61","60400"\n'
    ((_, call),) = normalised([row], "s", SourceConfig(format="freeswitch", fields=fields))
    assert isinstance(call, Call) and call.duration_s == 60


def test_kamailio_dialog_cdrs_logged_to_syslog_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kamailio acc docs: with cdr_enable the dialog CDRs go to syslog too
    (cdr_log_enable, default 1), as acc_cdr.c log_write_cdr writes them: "start_time=
    <epoch.usec>; end_time=<epoch.usec>; duration=<sec.usec>; <cdr_extra>=..." (a
    dedicated file through cdr_facility, or among other log lines). Such a file was
    read as a table without a header: every line rejected. Its times are UTC to the
    microsecond; lines of other messages are skipped."""
    head = "Mar 11 09:01:06 sbc1 /usr/sbin/kamailio[2211]: NOTICE: acc [acc_cdr.c:313]: "
    extra = "src_user=4930123456; dst_user=4930111222"
    text = (
        "Mar 11 09:00:00 sbc1 /usr/sbin/kamailio[2211]: INFO: <core> [main.c:2900]: up\n"
        f"{head}start_time=1773219605.900000; end_time=1773219666.300000; duration=60.400000;"
        f" callid=c1@h; {extra}\n"
        f"{head}start_time=1773219900.100000; end_time=1773219900.100000; duration=0.000000;"
        f" callid=c2@h; {extra}\n"
        f"{head}start_time=17732x; end_time=1773219966.300000; duration=6.0; callid=c3@h;"
        f" {extra}\n"
    )
    out = _dry_run(
        tmp_path, _config(tmp_path, "kamailio_cdrs", 'cdr_start = "confirmed"\n'), text, capsys
    )
    assert "read 3, stored 2, duplicates 0, rejected 1, unanswered 1" in out
    assert ":4: rejected: start_time is not a number of seconds: '17732x'" in out
    source = SourceConfig(format="kamailio_cdrs", cdr_start="confirmed")
    calls = [c for _, c in normalised(text.splitlines(keepends=True), "s", source)]
    first = calls[0]
    assert isinstance(first, Call)
    assert (first.call_id, first.answer_ms, first.end_ms, first.duration_s) == (
        "c1@h",
        1773219605900,
        1773219666300,
        60,
    )


def test_a_number_ending_in_the_end_of_dialling_key_is_read() -> None:
    """CUCM CDR definition ("Partitions and Numbers"): when the dial plan lets callers
    end dialling with #, the # goes into the CDR ("the Called Party Number field may
    contain a value such as 902087569174#"). It rejected the call ("callee ... is not
    a telephone number"); a trailing # is no digit and is dropped."""
    lines = [
        *CUCM.splitlines(keepends=True),
        '1,1,7001,101,1773219600,"4930123456",0,102,"004989987654#",16,1773219605,1773219730,125\n',
    ]
    ((_, call),) = normalised(lines, "s", SourceConfig(format="cucm", default_country="DE"))
    assert isinstance(call, Call) and call.callee == "+4989987654"


def test_opensips_acc_log_in_cdr_mode_is_read_as_acc_syslog() -> None:
    """OpenSIPS acc docs: do_accounting("log", "cdr") logs each call when it ends, in the
    acc syslog layout (acc.c acc_log_cdrs): "ACC: call ended: created=<s>;call_start_time=
    <s>;duration=<s>;ms_duration=<ms>;setuptime=<s>;method=INVITE;...;call_id=...;
    code=200;reason=OK" + extra_fields; a failed call is a "call missed" line with a
    timestamp, as Kamailio writes. The "call ended" lines were rejected ("ACC line
    without timestamp"): no answered call billed. Each is a whole call now (start =
    created, answer = call_start_time, talk = ms_duration)."""
    head = "Mar 11 09:01:06 sbc1 /usr/sbin/opensips[2211]: "
    lines = [
        f"{head}ACC: call ended: created=1773219600;call_start_time=1773219605;duration=61;"
        "ms_duration=60400;setuptime=5;method=INVITE;from_tag=f1;to_tag=t1;call_id=c1@h;"
        "code=200;reason=OK;src_user=4930123456;dst_user=4930111222\n",
        f"{head}ACC: call missed: timestamp=1773219903;created=1773219900;setuptime=3;"
        "method=INVITE;from_tag=f2;to_tag=;call_id=c2@h;code=486;reason=Busy Here;"
        "src_user=4930123456;dst_user=4930111222\n",
    ]
    # A failed branch before the answered one (serial forking): the same call.
    branch = lines[1].replace("c2@h", "c1@h").replace("1773219903", "1773219601")
    found = list(normalised([branch, lines[0]], "s", SourceConfig(format="kamailio")))
    assert [getattr(c, "status", "") for _, c in found] == ["normal"]
    calls = [c for _, c in normalised(lines, "s", SourceConfig(format="kamailio"))]
    assert [
        (c.call_id, c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.cause, c.status)
        for c in calls
        if isinstance(c, Call)
    ] == [
        ("c1@h", 1773219600000, 1773219605000, 1773219665400, 60, 16, "normal"),
        ("c2@h", 1773219903000, 0, 1773219903000, 0, 17, "unanswered"),
    ]
