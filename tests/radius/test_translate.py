"""radius_translate on decoded packets: no sockets, bytes built by pyrad."""

from __future__ import annotations

import ipaddress
import struct

from pyrad.packet import AcctPacket
from radius_peer import DICT

from chargingd.radius import codec as rc
from chargingd.radius.clients import RadiusClient
from chargingd.radius.translate import (
    call_info,
    charged_leg,
    freeswitch_date_ms,
    gateway_of,
    usage_report,
)
from chargingd.sessions.ccapi import UsageKind
from chargingd.sessions.spool import entry_to_report, report_to_entry

CISCO = RadiusClient("gw", ipaddress.ip_network("10.0.0.1"), b"s", default_account="d")
GENERIC = RadiusClient("sbc", ipaddress.ip_network("10.0.0.2"), b"s", cisco=False)


def packet(**attrs: object) -> rc.Packet:
    req = AcctPacket(id=1, secret=b"s", dict=DICT)
    for key, value in attrs.items():
        req[key.replace("_", "-")] = value
    return rc.decode(req.RequestPacket())


def test_gateway_is_nas_ip_else_source() -> None:
    assert gateway_of(packet(NAS_IP_Address="192.0.2.7"), "10.0.0.1") == "192.0.2.7"
    assert gateway_of(packet(User_Name="x"), "10.0.0.1") == "10.0.0.1"


def test_session_id_by_flavour() -> None:
    p = packet(Acct_Session_Id="leg", h323_conf_id="h323-conf-id=C1")
    assert call_info(p, CISCO, "10.0.0.1").session_id == "C1"
    assert call_info(p, GENERIC, "10.0.0.2").session_id == "leg"
    only_conf = packet(h323_conf_id="h323-conf-id=C2")
    assert call_info(only_conf, GENERIC, "10.0.0.2").session_id == "C2"


def test_usage_report_fields_and_odd_values() -> None:
    p = packet(
        Acct_Session_Id="s",
        Acct_Session_Time=30,
        Acct_Terminate_Cause=99,
        h323_disconnect_cause="h323-disconnect-cause=zz",
    )
    report = usage_report(p, GENERIC, "10.0.0.2", UsageKind.STOP, 1000.5)
    assert (report.usage_s, report.event_ms) == (30, 1_000_500)
    assert report.terminate_cause == "99"  # not in RFC 2866 §5.10: the number as text
    assert report.disconnect_cause == 0  # not hex: unknown, never a crash
    assert report.call.lookup == ("user", "ani", "default")


def test_charged_leg() -> None:
    answer = packet(h323_call_origin="h323-call-origin=answer")
    originate = packet(h323_call_origin="h323-call-origin=originate")
    assert not charged_leg(answer, CISCO)
    assert charged_leg(originate, CISCO)
    assert charged_leg(packet(User_Name="no origin"), CISCO)
    assert charged_leg(answer, GENERIC)
    all_legs = RadiusClient("gw", ipaddress.ip_network("10.0.0.1"), b"s", cisco_leg="all")
    assert charged_leg(answer, all_legs)


def kamailio_acct(*attrs: bytes) -> rc.Packet:
    """An Accounting-Request as Kamailio's acc_radius builds it (codec bytes)."""
    base = rc.attr_bytes(rc.ACCT_SESSION_ID, b"call-id@10.0.0.2") + rc.attr_u32(
        rc.EVENT_TIMESTAMP, 1_800_000_000
    )
    return rc.decode(rc.encode_request(rc.ACCOUNTING_REQUEST, 1, base + b"".join(attrs), b"s"))


def test_usage_reported_only_when_the_gateway_says_how_long() -> None:
    events_only = usage_report(kamailio_acct(), GENERIC, "10.0.0.2", UsageKind.STOP, 0.0)
    assert (events_only.usage_s, events_only.usage_reported) == (0, False)
    zero = kamailio_acct(rc.attr_u32(rc.ACCT_SESSION_TIME, 0))
    assert usage_report(zero, GENERIC, "10.0.0.2", UsageKind.STOP, 0.0).usage_reported


def test_sip_response_code_of_kamailio() -> None:
    failed = kamailio_acct(rc.attr_u32(rc.ACCT_STATUS_TYPE, rc.STATUS_FAILED))
    assert usage_report(failed, GENERIC, "10.0.0.2", UsageKind.FAILED, 0.0).sip_code == 0
    busy = kamailio_acct(rc.attr_u32(rc.SIP_RESPONSE_CODE, 486))
    assert usage_report(busy, GENERIC, "10.0.0.2", UsageKind.FAILED, 0.0).sip_code == 486
    # RFC 7268's EAP-Key-Name on the same number, or nonsense: not a SIP code.
    key_name = kamailio_acct(rc.attr_bytes(rc.SIP_RESPONSE_CODE, b"0123456789"))
    assert usage_report(key_name, GENERIC, "10.0.0.2", UsageKind.STOP, 0.0).sip_code == 0
    nonsense = kamailio_acct(rc.attr_u32(rc.SIP_RESPONSE_CODE, 70000))
    assert usage_report(nonsense, GENERIC, "10.0.0.2", UsageKind.STOP, 0.0).sip_code == 0


def test_caller_ip_from_h323_remote_address_else_framed_ip() -> None:
    cisco = packet(h323_remote_address="h323-remote-address=198.51.100.9",
                   Framed_IP_Address="203.0.113.1")  # fmt: skip
    assert call_info(cisco, CISCO, "10.0.0.1").caller_ip == "198.51.100.9"
    framed = packet(Framed_IP_Address="203.0.113.1")
    assert call_info(framed, GENERIC, "10.0.0.2").caller_ip == "203.0.113.1"
    garbage = packet(h323_remote_address="h323-remote-address=not an address")
    assert call_info(garbage, CISCO, "10.0.0.1").caller_ip == ""
    assert call_info(packet(User_Name="x"), CISCO, "10.0.0.1").caller_ip == ""


def test_freeswitch_dates_as_mod_radius_cdr_writes_them() -> None:
    # "%04u-%02u-%02uT%02u:%02u:%02u.%06u%+03d%02d" of the local time, tm_gmtoff / 3600
    # and tm_gmtoff % 3600 (seconds, cut by its 32-octet buffer): only whole-hour zones
    # (and zones written as minutes) are read; anything else is 0, never a guess.
    utc_ms = 1_796_551_208_250  # 2026-12-06T10:00:08.250 UTC
    assert freeswitch_date_ms(b"2026-12-06T10:00:08.250000+0000") == utc_ms
    assert freeswitch_date_ms(b"2026-12-06T11:00:08.250000+0100") == utc_ms
    assert freeswitch_date_ms(b"2026-12-06T05:00:08.250999-0500") == utc_ms
    assert freeswitch_date_ms(b"2026-12-06T15:30:08.250000+0530") == utc_ms
    assert freeswitch_date_ms(b"2026-12-06T15:30:08.250000+0518") == 0  # India, as FS cuts it
    assert freeswitch_date_ms(b"2026-12-06T06:30:08.250000-03-1") == 0  # Newfoundland
    for bad in (b"", b"0", b"2026-13-06T10:00:08.250000+0000", b"2026-12-06 10:00:08 +0000"):
        assert freeswitch_date_ms(bad) == 0


def _fs_packet(*subs: tuple[int, bytes], session_time: int | None = None) -> rc.Packet:
    attrs = b"".join(
        struct.pack("!BBIBB", 26, len(v) + 8, 27880, t, len(v) + 2) + v for t, v in subs
    )
    if session_time is not None:
        attrs += struct.pack("!BBI", rc.ACCT_SESSION_TIME, 6, session_time)
    return rc.decode(
        struct.pack("!BBH", rc.ACCOUNTING_REQUEST, 1, 20 + len(attrs)) + bytes(16) + attrs
    )


def test_freeswitch_start_at_routing_is_not_the_answer() -> None:
    # mod_radius_cdr's Start carries Freeswitch-Callstartdate (20) and, only once the
    # channel was answered, Freeswitch-Callanswerdate (21); its Stop always says the
    # answer (the date, else its time minus Acct-Session-Time, 0 never answered);
    # other packets say nothing of the answer (-1: the kind and usage imply it).
    created = (20, b"2026-12-06T10:00:00.000000+0000")
    answered = (21, b"2026-12-06T10:00:08.250000+0000")
    now_s = 1_796_551_238.0  # 10:00:38 UTC

    def answer(kind: UsageKind, p: rc.Packet) -> int:
        return usage_report(p, GENERIC, "10.0.0.2", kind, now_s).answer_ms

    assert answer(UsageKind.START, _fs_packet(created)) == 0  # ringing
    assert answer(UsageKind.START, _fs_packet(created, answered)) == 1_796_551_208_250
    assert answer(UsageKind.START, _fs_packet((4, b"1000"), (5, b"030123456"))) == -1
    assert answer(UsageKind.START, packet(Acct_Session_Id="s")) == -1
    stop = _fs_packet(created, answered, session_time=30)
    assert answer(UsageKind.STOP, stop) == 1_796_551_208_250
    assert answer(UsageKind.STOP, _fs_packet(created, session_time=0)) == 0  # unanswered
    a_day_off = (21, b"2026-12-05T10:00:08.250000+0000")  # a box whose zone lies
    implied = 1_796_551_208_000  # the Stop's arrival minus Acct-Session-Time
    assert answer(UsageKind.STOP, _fs_packet(created, a_day_off, session_time=30)) == implied
    assert answer(UsageKind.STOP, _fs_packet(created, session_time=30)) == implied


def test_freeswitch_direction_and_other_leg_id() -> None:
    # Freeswitch-Direction (24) and Freeswitch-Other-Leg-Id (25): which leg of a bridge
    # a packet is (an originated B-leg is "outbound"), and its partner's uuid; ""
    # when the packet does not say (any other gateway's).
    b_leg = _fs_packet((24, b"outbound"), (25, b"3f8a1c2e-a-leg"), session_time=30)
    report = usage_report(b_leg, GENERIC, "10.0.0.2", UsageKind.STOP, 1_796_551_238.0)
    assert (report.direction, report.other_leg_id) == ("outbound", "3f8a1c2e-a-leg")
    plain = usage_report(packet(Acct_Session_Id="s"), CISCO, "10.0.0.1", UsageKind.STOP, 0.0)
    assert (plain.direction, plain.other_leg_id) == ("", "")
    # kept through the spool (a B-leg replayed after an outage is still not adopted);
    # other lines are written as before
    assert entry_to_report(report_to_entry(report)) == report
    assert "direction" not in report_to_entry(plain)
    assert entry_to_report(report_to_entry(plain)) == plain


def test_h323_dialect_says_the_answer_in_its_interim_and_stop() -> None:
    # Cisco IOS, GNU Gatekeeper and AudioCodes send their Start at the leg's setup
    # (h323-setup-time, no h323-connect-time): it says nothing of the answer. An
    # Interim says the EARLIEST the call can have been answered (whole-second
    # times): Acct-Session-Time > 0, event - talk - 1 s; no talk yet, an
    # h323-connect-time whose time of day is the packet's own (Cisco's Interim at
    # call connect), the earlier of event - 1 s and that time, whatever the zone
    # label (compared modulo a quarter of an hour). The Stop: event - talk, 0 never
    # answered.
    now_s = 1_796_551_238.0  # 10:00:38 UTC (Acct-Delay-Time 0: the event time)
    setup = "h323-setup-time=*10:00:30.120 UTC Sun Dec 6 2026"

    def answer(kind: UsageKind, **attrs: object) -> int:
        p = packet(h323_setup_time=setup, Acct_Session_Id="s", **attrs)
        return usage_report(p, CISCO, "10.0.0.1", kind, now_s).answer_ms

    event_ms = int(now_s * 1000)
    assert answer(UsageKind.START) == -1
    assert answer(UsageKind.INTERIM, Acct_Session_Time=5) == event_ms - 6_000
    assert answer(UsageKind.INTERIM, Acct_Session_Time=0) == -1  # still ringing
    connect = "h323-connect-time=10:00:37.600 UTC Sun Dec 6 2026"
    assert answer(UsageKind.INTERIM, h323_connect_time=connect) == event_ms - 1_000
    connect = "h323-connect-time=.11:00:37.100 CET Sun Dec 6 2026"  # a zone, not read
    assert answer(UsageKind.INTERIM, h323_connect_time=connect) == event_ms - 1_000
    connect = "h323-connect-time=10:00:36.500 UTC Sun Dec 6 2026"
    assert answer(UsageKind.INTERIM, Acct_Session_Time=0, h323_connect_time=connect) == (
        event_ms - 1_500
    )
    stale = "h323-connect-time=09:59:58.000 UTC Sun Dec 6 2026"  # 40 s ago: no news
    assert answer(UsageKind.INTERIM, h323_connect_time=stale) == -1
    assert answer(UsageKind.INTERIM, h323_connect_time="h323-connect-time=garbage") == -1
    assert answer(UsageKind.STOP, Acct_Session_Time=30) == event_ms - 30_000
    assert answer(UsageKind.STOP, Acct_Session_Time=0) == 0  # never answered
    assert answer(UsageKind.STOP) == -1  # no usage said: the record's answer
    # other dialects' Interims say nothing (the kind and usage imply it)
    plain = packet(Acct_Session_Id="s", Acct_Session_Time=5)
    assert usage_report(plain, CISCO, "10.0.0.1", UsageKind.INTERIM, now_s).answer_ms == -1
