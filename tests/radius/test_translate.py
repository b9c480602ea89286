"""radius_translate on decoded packets: no sockets, bytes built by pyrad."""

from __future__ import annotations

import ipaddress

from pyrad.packet import AcctPacket
from radius_peer import DICT

from chargingd.radius import codec as rc
from chargingd.radius.clients import RadiusClient
from chargingd.radius.translate import call_info, charged_leg, gateway_of, usage_report
from chargingd.sessions.ccapi import UsageKind

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
