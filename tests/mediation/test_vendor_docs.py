"""Vendor files written the way each vendor documents them (each failed before its fix)."""

from __future__ import annotations

import json

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


# CUCM CDR Administration Guide, "CDR field descriptions": the flat file's header line
# names the destination leg "destLegIdentifier" (origLegCallIdentifier for the origin).
CUCM_HEADER = (
    '"cdrRecordType","globalCallID_callManagerId","globalCallID_callId",'
    '"origLegCallIdentifier","dateTimeOrigination","origIpAddr","callingPartyNumber",'
    '"origCause_value","destLegIdentifier","destIpAddr","finalCalledPartyNumber",'
    '"destCause_value","dateTimeConnect","dateTimeDisconnect","duration","joinOnBehalfOf"\r\n'
    "INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),INTEGER,INTEGER,INTEGER,"
    "VARCHAR(50),INTEGER,INTEGER,INTEGER,INTEGER,INTEGER\r\n"
)


def test_cucm_joined_records_in_separate_files_keep_their_destination_legs() -> None:
    """CUCM guide, transfer: A stays on a call its peer transfers twice (A -> B, then to
    C, then to D); each join writes a CDR with A's origLegCallIdentifier, its own
    destLegIdentifier and joinOnBehalfOf 10, often in different per-minute files. Both
    are calls of their own (was: the destination leg was read only as
    "destLegCallIdentifier", both became 1-5001#101- and the second a duplicate)."""
    a = '1,1,5001,101,1773219600,0,"\\+4930111111",0,'
    to_c = a + '104,0,"4989111111",16,1773219730,1773219790,60,10\r\n'
    to_d = a + '106,0,"4989222222",16,1773219800,1773219900,100,10'  # no final newline
    first = calls_of([*CUCM_HEADER.splitlines(keepends=True), to_c], SourceConfig(format="cucm"))
    second = calls_of([*CUCM_HEADER.splitlines(keepends=True), to_d], SourceConfig(format="cucm"))
    assert [(c.call_id, c.callee, c.duration_s) for c in first + second] == [
        ("1-5001#101-104", "+4989111111", 60),
        ("1-5001#101-106", "+4989222222", 100),
    ]


def test_table_exports_read_sql_null_as_empty() -> None:
    """`mysql -B` (the tab-separated export docs/mediation.md names) prints SQL NULL as
    the word NULL, psql COPY and SELECT ... INTO OUTFILE as \\N. OpenSIPS's acc table
    (OpenSIPS db schema) has `created DATETIME DEFAULT NULL`, and an extra column the
    script left unset is NULL: the call is read with them empty (start = time -
    setuptime, as when created is empty), not rejected ("created is not a time:
    'NULL'", "sip_code is not an integer: 'NULL'")."""
    opensips = [
        "id\tmethod\tfrom_tag\tto_tag\tcallid\tsip_code\tsip_reason\ttime\tduration\t"
        "ms_duration\tsetuptime\tcreated\tcaller_id\tcallee_id\n",
        "1\tINVITE\tft1\ttt1\tc1@h\t200\tOK\t2026-03-11 09:00:05\t120\t120250\t5\tNULL\t"
        "4930111111\t004989987654\n",
    ]
    source = SourceConfig(format="opensips_db", delimiter="\t", default_country="DE")
    (call,) = calls_of(opensips, source)
    assert (call.start_ms, call.answer_ms, call.end_ms, call.duration_s) == (
        1773219600000,
        1773219605000,
        1773219725250,
        120,
    )
    kamailio = [
        "id\tstart_time\tend_time\tduration\tcallid\tsrc_user\tdst_user\tsip_code\n",
        "1\t2026-03-11 09:00:05\t2026-03-11 09:02:05\t120.000\tc1@h\t4930111111\t"
        "004989987654\t\\N\n",
    ]
    source = SourceConfig(format="kamailio_cdrs", cdr_start="confirmed", delimiter="\t")
    (call,) = calls_of(kamailio, source)
    assert (call.caller, call.duration_s, call.cause, call.status) == (
        "+4930111111",
        120,
        16,
        "normal",
    )
    acc = [
        "id\tmethod\tfrom_tag\tto_tag\tcallid\tsip_code\tsip_reason\ttime\tsrc_user\tdst_user\n",
        "1\tINVITE\tft1\ttt1\tc1@h\t200\tOK\t2026-03-11 09:00:05\tNULL\t004989987654\n",
        "2\tBYE\ttt1\tft1\tc1@h\t200\tOK\t2026-03-11 09:02:05\t004989987654\tNULL\n",
    ]
    source = SourceConfig(format="kamailio_db", delimiter="\t", account_rule="fixed", account="a")
    (call,) = calls_of(acc, source)
    assert (call.caller, call.duration_s, "caller_raw" in call.extra) == ("", 120, False)


def test_freeswitch_builtin_default_template_is_read() -> None:
    """mod_cdr_csv.c: without a default-template in cdr_csv.conf (or without the file)
    FreeSWITCH writes its built-in "default" template, the sql template's 13 values:
    "${caller_id_name}",...,"${uuid}","${bleg_uuid}", "${accountcode}". Read like the
    example template's first 13 columns (was: every line rejected, "13 columns; the
    template has 15")."""
    lines = [
        '"Alice","+4930111111","004989987654","default","2026-03-11 09:00:00",'
        '"2026-03-11 09:00:05","2026-03-11 09:02:05","125","120","NORMAL_CLEARING",'
        '"a1b2c3d4-0001","b1", "acct1"\n',
        '"","+4930111111","004989987654","default","2026-03-11 09:10:00","",'
        '"2026-03-11 09:10:20","20","0","NO_ANSWER","a1b2c3d4-0002","", ""',
    ]
    source = SourceConfig(format="freeswitch", default_country="DE", time_zone="Europe/Berlin")
    calls = calls_of(lines, source)
    assert [(c.call_id, c.duration_s, c.status, c.cause, c.account) for c in calls] == [
        ("a1b2c3d4-0001", 120, "normal", 16, "acct1"),
        ("a1b2c3d4-0002", 0, "unanswered", 19, ""),
    ]
    assert calls[0].start_ms == 1773216000000  # 09:00:00 CET


def test_freeswitch_latin1_display_name_keeps_the_call() -> None:
    """mod_json_cdr / mod_xml_cdr URL-encode each variable's bytes (switch_url_encode,
    encode-values by default). A caller name from a UA or an ISDN display IE in
    Latin-1 is written "M%FCller": the call is billed and the name read as Latin-1
    (was: the whole call rejected, "a value is not URL-encoded UTF-8")."""
    variables = {
        "uuid": "a-1",
        "caller_id_name": "M%FCller",
        "caller_id_number": "%2B4930111111",
        "destination_number": "004989987654",
        "start_epoch": "1773216000",
        "answer_epoch": "1773216005",
        "end_epoch": "1773216125",
        "billsec": "120",
        "hangup_cause": "NORMAL_CLEARING",
    }
    as_json = json.dumps({"variables": variables}) + "\n"
    tags = "".join(f"<{k}>{v}</{k}>" for k, v in variables.items())
    as_xml = f'<?xml version="1.0"?>\n<cdr><variables>{tags}</variables></cdr>\n'
    for fmt, text in (("freeswitch_json", as_json), ("freeswitch_xml", as_xml)):
        source = SourceConfig(format=fmt, default_country="DE")
        (call,) = calls_of(text.splitlines(keepends=True), source)
        assert (call.caller, call.duration_s, call.extra["caller_id_name"]) == (
            "+4930111111",
            120,
            "Müller",
        )


def _radius(status: str, nas: str, origin: str, called: str, setup: str, stop: str = "") -> str:
    """One FreeRADIUS detail record of a Cisco IOS gateway leg (VSAs as Cisco writes
    them: the value repeats the attribute's name)."""
    lines = [
        "Wed Mar 11 09:00:05 2026",
        f"\tAcct-Status-Type = {status}",
        f"\tNAS-IP-Address = {nas}",
        f'\tAcct-Session-Id = "{nas}-{origin}"',
        '\tCalling-Station-Id = "4930111111"',
        f'\tCalled-Station-Id = "{called}"',
        '\th323-conf-id = "h323-conf-id=3A7F2C10 11E9A1B2 8000C0A8 0A0A0001"',
        f'\th323-call-origin = "h323-call-origin={origin}"',
        f'\th323-setup-time = "h323-setup-time=*{setup} UTC Wed Mar 11 2026"',
    ]
    if stop:
        lines += [
            '\th323-connect-time = "h323-connect-time=*09:00:05.000 UTC Wed Mar 11 2026"',
            '\th323-disconnect-time = "h323-disconnect-time=*09:02:05.000 UTC Wed Mar 11 2026"',
            '\th323-disconnect-cause = "h323-disconnect-cause=10"',
            "\tAcct-Session-Time = 120",
        ]
    return "\n".join(lines) + "\n\n"


def test_cisco_call_through_two_gateways_is_one_call_from_the_originating_gateway() -> None:
    """Cisco CDR Accounting guide, "Voice Call Legs": a call through an originating and
    a terminating gateway has four legs sharing one h323-conf-id (answer telephony and
    originate VoIP on the first, answer VoIP and originate telephony on the second).
    With both gateways accounting to one detail file, the call is one record, from the
    originating gateway's answer leg, whatever order the Stops come in (was: the first
    gateway to stop both its legs made the call, the second gateway's legs a second
    record; its telephony leg, with the number as its dial-peer rewrote it, rejected)."""
    legs = {
        1: ("192.0.2.10", "answer", "004989987654", "09:00:00.000"),
        2: ("192.0.2.10", "originate", "004989987654", "09:00:00.050"),
        3: ("192.0.2.20", "answer", "004989987654", "09:00:00.100"),
        4: ("192.0.2.20", "originate", "9987654", "09:00:00.150"),
    }
    starts = "".join(_radius("Start", *legs[n]) for n in (1, 2, 3, 4))
    source = SourceConfig(format="cisco_radius", default_country="DE")
    for order in ((1, 2, 3, 4), (4, 3, 2, 1)):
        stops = "".join(_radius("Stop", *legs[n], stop="yes") for n in order)
        calls = calls_of((starts + stops).splitlines(keepends=True), source)
        assert [(c.gateway, c.callee, c.start_ms, c.duration_s) for c in calls] == [
            ("192.0.2.10", "+4989987654", 1773219600000, 120)
        ], order


def test_cisco_stop_only_leg_stopping_after_the_answer_leg_is_no_second_record() -> None:
    """Cisco CDR guide: `aaa accounting connection h323 stop-only` sends only Stops.
    When the answer leg stops first, the call is made from it; the originate leg's
    Stop that follows (Called-Station-Id as its dial-peer rewrote it) is part of that
    call, not a record of its own (was: read alone at the end of the file, a reject
    "callee '9987654' is not a possible E.164 number", exit 1)."""
    answer = _radius("Stop", "192.0.2.10", "answer", "004989987654", "09:00:00.000", "yes")
    originate = _radius("Stop", "192.0.2.10", "originate", "9987654", "09:00:00.050", "yes")
    source = SourceConfig(format="cisco_radius", default_country="DE")
    calls = calls_of((answer + originate).splitlines(keepends=True), source)
    assert [(c.callee, c.duration_s, c.extra["Acct-Session-Id"]) for c in calls] == [
        ("+4989987654", 120, "192.0.2.10-answer")
    ]
