"""Vendor-documented cases a review found mis-mediated (each failed before its fix)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import FIXTURES

from chargingd.app.cli import main
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats import kamailio
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised

KAM = "Mar 11 09:00:05 sbc1 kamailio[2211]: NOTICE: acc [acc.c:284]: ACC: "
USERS = "src_user=4930123456;dst_user=4989987654"


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


def test_kamailio_failed_branch_before_the_answer_is_the_same_call() -> None:
    """acc docs (log_missed_flag): set again in failure_route, every failed branch of
    serial forking is logged as "call missed". The answered branch that follows has
    the same Call-ID: it is the call, not a duplicate of an unanswered one."""
    lines = [
        f"{KAM}call missed: timestamp=1552294801;method=INVITE;from_tag=f;to_tag=g1;"
        f"call_id=s1;code=503;reason=Service Unavailable;{USERS}\n",
        f"{KAM}transaction answered: timestamp=1552294805;method=INVITE;from_tag=f;"
        f"to_tag=g2;call_id=s1;code=200;reason=OK;{USERS}\n",
        f"{KAM}transaction answered: timestamp=1552294930;method=BYE;from_tag=g2;"
        f"to_tag=f;call_id=s1;code=200;reason=OK;{USERS}\n",
        f"{KAM}call missed: timestamp=1552294901;method=INVITE;from_tag=h;to_tag=g1;"
        f"call_id=s2;code=503;reason=Service Unavailable;{USERS}\n",
        f"{KAM}call missed: timestamp=1552294903;method=INVITE;from_tag=h;to_tag=g2;"
        f"call_id=s2;code=486;reason=Busy Here;{USERS}\n",
    ]
    calls = calls_of(lines, SourceConfig(format="kamailio"))
    assert [(c.call_id, c.status, c.duration_s, c.cause) for c in calls] == [
        ("s1", "normal", 125, 16),
        ("s2", "unanswered", 0, 17),  # one call: its last branch's failure (486) ends it
    ]
    # Held back only until the file is an hour past it (memory bounded on long logs).
    read: list[str] = []
    later = lines[1].replace("1552294805", "1552305805").replace("s1", "s3")  # +3 h

    def feed() -> Iterator[str]:
        for line in [*lines, later, later.replace("s3", "s4")]:
            read.append(line)
            yield line

    found = (item for _, item in kamailio.parse_syslog(feed()))
    assert [next(found).call_id for _ in range(2)] == ["s1", "s2"]  # type: ignore[union-attr]
    assert len(read) == 6  # s2 came out at the line 3 h later, not at the end


def test_asterisk_dial_attempts_of_one_channel_are_separate_records() -> None:
    """Asterisk 12+ CDR specification: a CDR per dial attempt, all with Party A's
    uniqueid; a failover's CONGESTION and then its ANSWERED trunk share it. The same
    line written twice stays one record (a duplicate)."""
    head = '"","4930123456","4989987654","out","","PJSIP/1001-00000001",'
    lines = [
        f'{head}"PJSIP/gw1-00000002","Dial","PJSIP/gw1","2026-03-11 09:00:00",,'
        '"2026-03-11 09:00:01",1,0,"CONGESTION","DOCUMENTATION","1773216000.1"\n',
        f'{head}"PJSIP/gw2-00000003","Dial","PJSIP/gw2","2026-03-11 09:00:01",'
        '"2026-03-11 09:00:05","2026-03-11 09:02:10",129,125,"ANSWERED","DOCUMENTATION",'
        '"1773216000.1"\n',
    ]
    calls = calls_of([*lines, lines[1]], SourceConfig(format="asterisk", loguniqueid=True))
    assert [(c.call_id, c.status, c.duration_s) for c in calls] == [
        ("1773216000.1", "unanswered", 0),
        ("1773216000.1#PJSIP/gw2-00000003", "normal", 125),
        ("1773216000.1#PJSIP/gw2-00000003", "normal", 125),  # the repeated line
    ]


def test_cucm_records_sharing_a_global_call_id_are_separate_records() -> None:
    """CUCM CDR guide: a transferred or conferenced call writes several CDRs with the
    same globalCallID_callId (one per leg pair); each is billed, also when CUCM's
    per-minute files put them in different files (joinOnBehalfOf 10: a transfer)."""
    header = (
        "cdrRecordType,globalCallID_callManagerId,globalCallID_callId,origLegCallIdentifier,"
        "dateTimeOrigination,callingPartyNumber,origCause_value,destLegCallIdentifier,"
        "finalCalledPartyNumber,destCause_value,dateTimeConnect,dateTimeDisconnect,duration,"
        "joinOnBehalfOf,destIpAddr\n"
    )
    lines = [
        header,
        "1,1,7001,101,1773216000,4930123456,0,102,4989987654,393216,1773216005,1773216065,60,0,0\n",
        "1,1,7001,101,1773216065,4930123456,16,104,4940123456,0,1773216065,1773216185,120,10,-1139627840\n",
    ]
    calls = calls_of(lines, SourceConfig(format="cucm"))
    assert [(c.call_id, c.callee, c.duration_s, c.cause) for c in calls] == [
        ("1-7001", "+4989987654", 60, 16),  # 393216: Cisco's "call split", no Q.850 value
        ("1-7001#101-104", "+4940123456", 120, 16),
    ]
    assert calls[0].extra["cucm_cause"] == "393216"
    assert [c.gateway for c in calls] == ["", "192.168.18.188"]  # 0: no device, not 0.0.0.0
    assert calls_of([header, lines[2]], SourceConfig(format="cucm"))[0].call_id == "1-7001#101-104"


def test_logrotate_gzipped_file_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """logrotate compresses rotated Master.csv files (Master.csv.1.gz): read as text,
    not as 6 rejected rows of binary noise."""
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[mediation.sources.pbx]\nformat = "asterisk"\n'
        'time_zone = "Europe/Berlin"\ndefault_country = "DE"\n'
        'account_rule = "fixed"\naccount = "c1"\n'
        f'plan = "{FIXTURES / "cdr" / "tariff_tp"}"\ntenant = "chargingd.test"\n'
        'charge = "record_only"\nloguniqueid = true\nloguserfield = true\n'
    )
    text = (FIXTURES / "cdr" / "asterisk_Master.csv").read_bytes()
    (tmp_path / "Master.csv.1.gz").write_bytes(gzip.compress(text))
    argv = ["mediate", str(tmp_path / "Master.csv.1.gz"), "--source", "pbx", "--quiet"]
    assert main([*argv, "--config", str(config), "--dry-run"]) == 1  # its 4 bad rows
    assert "dry run: read 9, stored 5, duplicates 0, rejected 4" in capsys.readouterr().out


def test_gzipped_file_cut_short_is_read_up_to_the_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .gz still being written by logrotate (or a copy cut short) ends before gzip's
    end-of-stream marker: the run crashed (EOFError) and lost the batch it had not
    stored. Its lines are read up to the damage, which is one reject with its reason."""
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[mediation.sources.pbx]\nformat = "asterisk"\n'
        'time_zone = "Europe/Berlin"\ndefault_country = "DE"\n'
        'account_rule = "fixed"\naccount = "c1"\n'
        f'plan = "{FIXTURES / "cdr" / "tariff_tp"}"\ntenant = "chargingd.test"\n'
        'charge = "record_only"\nloguniqueid = true\nloguserfield = true\n'
    )
    text = (FIXTURES / "cdr" / "asterisk_Master.csv").read_bytes()
    (tmp_path / "Master.csv.1.gz").write_bytes(gzip.compress(text)[:-8])  # no trailer
    argv = ["mediate", str(tmp_path / "Master.csv.1.gz"), "--source", "pbx", "--quiet"]
    assert main([*argv, "--config", str(config), "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "dry run: read 10, stored 5, duplicates 0, rejected 5" in out
    assert "damaged compressed file, the rest unreadable" in out


def test_opensips_forwarded_leg_is_billed_to_its_own_caller() -> None:
    """OpenSIPS acc docs (multi call-legs): A calls B, B forwards to C: a row per leg,
    and "user B must pay for the call" to C. Legs whose mapped caller/callee differ
    are separate records; legs that differ only elsewhere stay one call."""
    head = "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,setuptime,"
    row = "INVITE,f1,t1,L1@x,200,OK,2026-07-01 10:00:07,60,7,2026-07-01 10:00:00"
    lines = [
        f"{head}created,leg_src,leg_dst\n",
        f"1,{row},4930123456,4989987654\n",
        f"2,{row},4989987654,4940123456\n",
    ]
    mapping: dict[str, str | int] = {"caller": "leg_src", "callee": "leg_dst"}
    calls = calls_of(lines, SourceConfig(format="opensips_db", mapping=mapping))
    assert [(c.call_id, c.caller, c.callee) for c in calls] == [
        ("L1@x", "+4930123456", "+4989987654"),
        ("L1@x#4989987654>4940123456", "+4989987654", "+4940123456"),
    ]


def test_export_without_header_loses_no_line() -> None:
    """A table exported without its header line (mysql -N, psql without HEADER): the
    first call was taken for the header and vanished (neither stored nor rejected);
    CUCM and csv stopped reading at a bad header. Every line is now rejected, saying why."""
    rows = {
        "kamailio_db": "1,INVITE,f,t,c1@x,200,OK,2026-07-01 10:00:00,4930123456,4989987654\n",
        "kamailio_cdrs": "1,2026-07-01 10:00:00,2026-07-01 10:01:00,60.000,c1@x,4930,4989\n",
        "opensips_db": "1,INVITE,f,t,c1@x,200,OK,2026-07-01 10:00:07,60,7,2026-07-01 10:00:00\n",
        "cucm": "1,1,7001,101,1773216000,4930123456,0,102,4989987654,16,1773216005\n",
        "csv": "c1,4930123456,4989987654,2026-07-01 10:00:00\n",
    }
    for fmt, row in rows.items():
        source = SourceConfig(format=fmt, cdr_start="confirmed", mapping={"callee": "to"})
        if fmt == "cucm":
            source = SourceConfig(format=fmt)
        items = list(normalised([row, row.replace("c1", "c2").replace(",7001,", ",7002,")],
                                "s", source))  # fmt: skip
        assert [n for n, _ in items] == [1, 2], (fmt, items)


def test_cisco_stop_only_accounting_bills_the_answer_leg() -> None:
    """'aaa accounting connection h323 stop-only': no Start records. The originate
    leg's Stop (its own setup time, the number as the dial-peer rewrote it) often
    comes first; the call is the answer leg's, as with start-stop accounting."""

    def stop(origin: str, session: str, called: str, setup: str, talk: int) -> list[str]:
        return [
            "Mon Dec  7 09:02:10 2026\n",
            f'\tAcct-Session-Id = "{session}"\n',
            '\tCalling-Station-Id = "4930123456"\n',
            f'\tCalled-Station-Id = "{called}"\n',
            f'\th323-setup-time = "h323-setup-time=*{setup} UTC Mon Dec 7 2026"\n',
            '\th323-connect-time = "h323-connect-time=*09:00:05.000 UTC Mon Dec 7 2026"\n',
            '\th323-disconnect-time = "h323-disconnect-time=*09:02:10.000 UTC Mon Dec 7 2026"\n',
            '\th323-disconnect-cause = "h323-disconnect-cause=10"\n',
            '\th323-conf-id = "h323-conf-id=3D6A4C2B 1A2B11E0 8001D0C7 89A1B2C3"\n',
            f'\th323-call-origin = "h323-call-origin={origin}"\n',
            f"\tAcct-Session-Time = {talk}\n",
            "\tAcct-Status-Type = Stop\n",
            "\tNAS-IP-Address = 192.0.2.1\n",
            "\n",
        ]

    lines = stop("Originate", "2B", "#99#4989987654", "09:00:01.500", 124)
    lines += stop("Answer", "2A", "4989987654", "09:00:00.000", 125)  # some write capitals
    (call,) = calls_of(lines, SourceConfig(format="cisco_radius"))
    assert (call.callee, call.start_ms % 60_000, call.duration_s) == ("+4989987654", 0, 125)
    # A gateway leaving h323-connect-time out: Acct-Session-Time (RFC 2866: time
    # connected) says it was answered; it was stored unanswered, 125 s never billed.
    packed = [line.replace("\th323-disconnect-cause =", "\tCisco-AVPair =") for line in lines]
    assert calls_of(packed, SourceConfig(format="cisco_radius"))[0].cause == 16  # hex 10
    bare = [line for line in lines if "h323-connect-time" not in line]
    (call,) = calls_of(bare, SourceConfig(format="cisco_radius"))
    assert (call.status, call.duration_s, call.answer_ms % 60_000) == ("normal", 125, 5000)


def test_tab_separated_table_export() -> None:
    """`mysql -B -e 'SELECT * FROM acc_cdrs'` writes tabs: the source's delimiter."""
    users = "4930123456,4989987654"
    tables = {
        "kamailio_cdrs": ("id,start_time,end_time,duration,callid",
                          "1,2026-07-01 10:00:00,2026-07-01 10:01:00,60.000,c1@x"),
        "opensips_db": ("id,method,callid,sip_code,time,duration,setuptime,created",
                        "1,INVITE,c1@x,200,2026-07-01 10:00:07,60,7,2026-07-01 10:00:00"),
        "kamailio_db": ("id,method,callid,sip_code,time", "1,INVITE,c1@x,486,2026-07-01 10:00:07"),
    }  # fmt: skip
    for fmt, (head, row) in tables.items():
        lines = [f"{head},src_user,dst_user\n".replace(",", "\t"),
                 f"{row},{users}\n".replace(",", "\t")]  # fmt: skip
        source = SourceConfig(format=fmt, cdr_start="confirmed", delimiter="\t")
        (call,) = calls_of(lines, source)
        assert (call.call_id, call.callee) == ("c1@x", "+4989987654"), fmt


def test_freeswitch_template_without_answer_time_bills_billsec() -> None:
    """A cdr_csv template need not log an answer time (the config asks only uuid,
    destination_number and an end): its billsec says the call was answered (was
    stored unanswered, 125 s never billed)."""
    fields = ("uuid", "caller_id_number", "destination_number", "start_stamp", "end_stamp",
              "duration", "billsec", "hangup_cause")  # fmt: skip
    lines = ['"u1","+4930123456","+4989987654","2026-03-11 09:00:00","2026-03-11 09:02:10",'
             '"130","125","NORMAL_CLEARING"\n',
             '"u2","+4930123456","+4989987654","2026-03-11 09:10:00","2026-03-11 09:10:20",'
             '"20","0","USER_BUSY"\n']  # fmt: skip
    ani = tuple("ani" if f == "caller_id_number" else f for f in fields)  # opencdrrate's
    calls = calls_of(lines, SourceConfig(format="freeswitch", fields=ani))
    assert [c.caller for c in calls] == ["+4930123456"] * 2  # was stored empty
    assert [(c.status, c.duration_s, c.answer_ms % 60_000) for c in calls] == [
        ("normal", 125, 5000),
        ("unanswered", 0, 0),
    ]
