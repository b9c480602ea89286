"""RADIUS packet -> ccapi translation: who is calling, which session, what usage.

Pure functions over a decoded codec.Packet (no I/O), used by radius/server.py. They
translate; they decide nothing (DESIGN: frontends translate, sessions decides).
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import socket
from typing import Final

from chargingd.radius import codec as rc
from chargingd.radius.clients import RadiusClient
from chargingd.radius.quality import call_quality, cisco_pairs
from chargingd.sessions.ccapi import CallInfo, UsageKind, UsageReport, account_of_class

_inet_ntoa: Final = socket.inet_ntoa  # (Final: no module attribute look-up per packet)
_DOTTED_MAX: Final = 4096  # NAS addresses whose text is kept (a few gateways in practice)
_dotted: dict[bytes, str] = {}


def _dotted_quad(octets: bytes) -> str:
    """inet_ntoa of 4 octets, kept per value: the gateways are few, and inet_ntoa's
    formatting cost ~2,700 instructions a packet (round 9a)."""
    text = _dotted.get(octets)
    if text is None:
        text = _inet_ntoa(octets)
        if len(_dotted) >= _DOTTED_MAX:
            _dotted.clear()
        _dotted[octets] = text
    return text


def gateway_of(packet: rc.Packet, source_ip: str) -> str:
    """NAS-IP-Address when present and well-formed, else the packet's source address."""
    nas = packet.attrs.get(rc.NAS_IP_ADDRESS)
    if nas is not None and len(nas) == 4:
        return _dotted_quad(nas)
    return source_ip


def caller_ip_of(packet: rc.Packet) -> str:
    """Where the call came from, when the gateway says: Cisco's h323-remote-address (the
    calling side's signalling address), else Framed-IP-Address; "" unknown or not an IP
    address (the fraud rules count calls per caller IP)."""
    remote = packet.cisco_value(rc.H323_REMOTE_ADDRESS).strip()
    if remote:
        try:
            return str(ipaddress.ip_address(remote))
        except ValueError:
            pass
    framed = packet.attrs.get(rc.FRAMED_IP_ADDRESS)
    if framed is not None and len(framed) == 4:
        return _inet_ntoa(framed)
    return ""


def charged_leg(packet: rc.Packet, client: RadiusClient) -> bool:
    """False for a Cisco leg whose accounting the client's `cisco_leg` excludes. GNU
    Gatekeeper's RadAcct writes "h323-call-origin=proxy" on every record: one record
    per call, the gatekeeper's own (radacct.cxx), charged whatever `cisco_leg` says."""
    if not client.cisco or client.cisco_leg == "all":
        return True
    origin = packet.cisco_value(rc.H323_CALL_ORIGIN)
    # Cisco writes "originate", AudioCodes "Originate" (Mediant SIP User's Manual,
    # "RADIUS Accounting" example): the same leg.
    if not origin or origin == client.cisco_leg:
        return True
    origin = origin.lower()
    return origin == client.cisco_leg or origin == "proxy"


def call_info(packet: rc.Packet, client: RadiusClient, source_ip: str) -> CallInfo:
    """The ccapi view of a call: raw numbers and a session id. Cisco's Access-Request
    has no Acct-Session-Id and each leg has its own, so "cisco" clients use the
    h323-conf-id the legs share; others use Acct-Session-Id (else a Cisco-AVPair
    call-id, else h323-conf-id). A packet without either id: its call-id."""
    conf_id = packet.cisco_value(rc.H323_CONF_ID)
    acct_session_id = packet.text(rc.ACCT_SESSION_ID)
    if client.cisco:
        session_id = conf_id or acct_session_id or sip_call_id(packet)
    else:  # Sippy's Access-Request: its Call-ID, its accounting's Acct-Session-Id
        session_id = acct_session_id or sip_call_id(packet) or conf_id
    return CallInfo(
        session_id=session_id,
        user_name=packet.text(rc.USER_NAME),
        calling=packet.text(rc.CALLING_STATION_ID) or _softswitch_number(packet, _SRC_KEYS),
        called=packet.text(rc.CALLED_STATION_ID) or _softswitch_number(packet, _DST_KEYS),
        gateway=gateway_of(packet, source_ip),
        client=client.name,
        default_account=client.default_account,
        conf_id=conf_id,
        lookup=client.lookup,
        # What a Cisco POD handler matches a Disconnect-Request on: its own id.
        nas_session_id=acct_session_id if acct_session_id != session_id else "",
        call_origin=packet.cisco_value(rc.H323_CALL_ORIGIN),
        caller_ip=caller_ip_of(packet),
        account_hint=account_of_class(packet.attrs.get(rc.CLASS, b"")) if client.echo_class else "",
    )


def sip_call_id(packet: rc.Packet) -> str:
    """The SIP Call-ID a Cisco-AVPair "call-id=..." carries ("" none). Sippy B2BUA's
    Access-Request (RadiusAuthorisation.do_auth) has no Acct-Session-Id: User-Name, the
    numbers, call-id, h323-remote-address, h323-session-protocol (and h323-conf-id in
    older versions only); its accounting's Acct-Session-Id is that Call-ID. Read
    only for a packet without Acct-Session-Id (the codec keeps the first Cisco-AVPair
    only: this scans them all)."""
    if rc.CISCO_AVPAIR not in packet.cisco:
        return ""
    return cisco_pairs(packet.raw)[0].get("call-id", "")


def usage_report(
    packet: rc.Packet, client: RadiusClient, source_ip: str, kind: UsageKind, now_s: float
) -> UsageReport:
    """Start/Interim/Stop/Failed as a UsageReport. The event time is Event-Timestamp, the
    time of the event at the NAS (RFC 2869 §5.3), stable across retransmissions;
    without it, the arrival time minus Acct-Delay-Time (RFC 2866 §5.2)."""
    event_ms = event_ms_of(packet, now_s)
    terminate = packet.integer(rc.ACCT_TERMINATE_CAUSE)
    usage_s, reported = _usage(packet)
    if reported and rc.ACCT_SESSION_TIME not in packet.attrs:
        event_ms += _opensips_talk_ms(packet)
    answer_ms = -1
    if rc.FS_CALLSTARTDATE_KEY in packet.attrs:  # (a dict look-up for the others)
        answer_ms = _freeswitch_answer_ms(packet, kind, usage_s, event_ms)
    elif kind is not UsageKind.START and packet.cisco and _h323_timed(packet):
        answer_ms = _h323_answer_ms(packet, kind, usage_s, reported, event_ms)
    return UsageReport(
        call=call_info(packet, client, source_ip),
        kind=kind,
        usage_s=usage_s,
        event_ms=event_ms,
        disconnect_cause=_disconnect_cause(packet),
        terminate_cause=rc.TERMINATE_CAUSES.get(terminate, str(terminate) if terminate else ""),
        usage_reported=reported,
        sip_code=_sip_code(packet),
        # Stops only: the request path of the other packets pays nothing for it.
        quality=call_quality(packet) if kind is UsageKind.STOP else (),
        answer_ms=answer_ms,
        # FreeSWITCH's (mod_radius_cdr): which leg of a bridge this is, and its partner
        direction=packet.text(rc.FS_DIRECTION_KEY),
        other_leg_id=packet.text(rc.FS_OTHER_LEG_ID_KEY),
    )


# How far a Freeswitch-Callanswerdate may be from what the packet's own times imply
# before it is not believed (sessions/store.py's USAGE_SLACK_S: clock skew, delays).
_FS_DATE_SLACK_MS: Final = 300_000


def _freeswitch_answer_ms(packet: rc.Packet, kind: UsageKind, usage_s: int, event_ms: int) -> int:
    """The answer time of a FreeSWITCH mod_radius_cdr packet (it carries
    Freeswitch-Callstartdate, the channel's creation time, on every Start and Stop):
    UsageReport.answer_ms. Its Start goes at routing, before any answer: without
    Freeswitch-Callanswerdate it is a call still ringing (0; sessions takes it as the
    answer all the same, money-safe: docs/credit-control.md). The Stop always says the
    answer: its date, else its event time minus Acct-Session-Time, 0 never answered.
    A date that does not parse or is further than _FS_DATE_SLACK_MS from what the
    packet's times imply is not believed (a Start: -1, as any other gateway's)."""
    raw = packet.attrs.get(rc.FS_CALLANSWERDATE_KEY)
    if kind is UsageKind.START:
        if not raw:
            return 0
        answer_ms = freeswitch_date_ms(raw)  # (a Start may come long after the answer:
        return answer_ms if 0 < answer_ms <= event_ms + _FS_DATE_SLACK_MS else -1  # a transfer)
    implied_ms = event_ms - usage_s * 1000 if usage_s else 0
    answer_ms = freeswitch_date_ms(raw) if raw else 0
    if answer_ms <= 0 or answer_ms > event_ms + _FS_DATE_SLACK_MS:
        return implied_ms
    if answer_ms < event_ms - usage_s * 1000 - _FS_DATE_SLACK_MS:
        return implied_ms
    return answer_ms


def _h323_timed(packet: rc.Packet) -> bool:
    """A record of the Cisco VSA dialect that times its call legs (h323-setup-time or
    h323-connect-time): Cisco IOS voice gateways, GNU Gatekeeper's RadAcct (with
    AppendCiscoAttributes, its default), AudioCodes. Their Start goes at the leg's
    setup, before any answer (docs/radius.md "Start at setup")."""
    cisco = packet.cisco
    return rc.H323_SETUP_TIME in cisco or rc.H323_CONNECT_TIME in cisco


# How far an h323-connect-time's time of day may be from its packet's event time for
# the packet to be the one sent at the connect (clock skew, a whole-second
# Event-Timestamp, the way over the network).
_H323_CONNECT_SLACK_MS: Final = 2_000
_QUARTER_HOUR_MS: Final = 900_000  # every time zone's offset is a multiple of it
_DAY_MS: Final = 86_400_000
_H323_CLOCK: Final = re.compile(r"[*.]?(\d{1,2}):(\d\d):(\d\d)(?:\.(\d{1,3}))?\s")


def _h323_answer_ms(
    packet: rc.Packet, kind: UsageKind, usage_s: int, reported: bool, event_ms: int
) -> int:
    """The answer an Interim-Update or Stop of the h323 dialect says (-1: none).

    Stop: its event time minus Acct-Session-Time, the talk (0: never answered): the
    CDR's answer time and the rating's, where the record's answer is the Start at
    setup. Interim-Update: the EARLIEST the call can have been answered, so that a
    deadline counted from it cuts early by at most a second, never late (the
    gateway's times are whole seconds: Event-Timestamp, Acct-Session-Time):
    - Acct-Session-Time > 0 (Cisco's periodic Interim, GNU Gatekeeper's update: both
      sent for connected calls only): event - usage - 1 s;
    - no talk yet, but h323-connect-time whose time of day is the packet's own event
      time (Cisco's "RADIUS Interim Update at Call Connect", `aaa accounting update
      newinfo`: sent when the leg connects): the earlier of the event - 1 s and that
      connect time. Its zone is not read: the time of day is compared modulo a
      quarter of an hour (every zone's offset is a multiple of it). A connect time
      repeated later (a gateway that reports no talk while it talks) is not the
      answer, nor is a gateway clock more than 2 s off: no move, the Start stays the
      answer (money first)."""
    if kind is UsageKind.STOP:
        if not reported:
            return -1  # the record's (Kamailio-style: the usage comes from timestamps)
        return event_ms - usage_s * 1000 if usage_s else 0
    if kind is not UsageKind.INTERIM:
        return -1
    if usage_s > 0:
        return event_ms - usage_s * 1000 - 1000
    connect = packet.cisco_value(rc.H323_CONNECT_TIME)
    match = _H323_CLOCK.match(connect) if connect else None
    if match is None:
        return -1
    hours, minutes, seconds, millis = match.groups()
    connect_ms = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000
    connect_ms += int((millis or "0").ljust(3, "0"))
    ahead_ms = (event_ms % _DAY_MS - connect_ms) % _QUARTER_HOUR_MS
    if ahead_ms > _QUARTER_HOUR_MS // 2:
        ahead_ms -= _QUARTER_HOUR_MS  # the connect time is past the event (clock skew)
    if abs(ahead_ms) > _H323_CONNECT_SLACK_MS:
        return -1
    return min(event_ms - 1000, event_ms - ahead_ms)


# mod_radius_cdr writes its dates with "%04u-%02u-%02uT%02u:%02u:%02u.%06u%+03d%02d" from
# the local time and tm_gmtoff / 3600, tm_gmtoff % 3600: the zone's hours, then its
# remainder in SECONDS (cut to 2 digits by its 32-octet buffer), so only a whole-hour
# zone reads right ("+0100", "-0500"); "+0518" is India's +05:30. A zone written as
# minutes (00, 30, 45) is taken; any other is not believed (0).
_FS_DATE: Final = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{6})([+-])(\d\d)(00|30|45)\x00*"
)


def freeswitch_date_ms(raw: bytes) -> int:
    """A mod_radius_cdr date (Freeswitch-Callstartdate, -Callanswerdate) as epoch ms; 0
    when it is not one (or its zone cannot be read: see _FS_DATE)."""
    m = _FS_DATE.fullmatch(raw)
    if m is None:
        return 0
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return 0
    offset_s = int(m.group(9)) * 3600 + int(m.group(10)) * 60
    if m.group(8) == b"-":
        offset_s = -offset_s
    local_s = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return (local_s - offset_s) * 1000 + int(m.group(7)) // 1000


_SRC_KEYS: Final = (rc.FS_SRC_KEY, rc.AST_SRC_KEY)
_DST_KEYS: Final = (rc.FS_DST_KEY, rc.AST_DST_KEY)


def _softswitch_number(packet: rc.Packet, keys: tuple[int, ...]) -> str:
    """A number from FreeSWITCH's or Asterisk's own VSA (Freeswitch-Src/-Dst,
    Asterisk-Src/-Dst), for their packets without Calling/Called-Station-Id."""
    for key in keys:
        text = packet.text(key)
        if text:
            return text
    return ""


def _usage(packet: rc.Packet) -> tuple[int, bool]:
    """(usage_s, reported): Acct-Session-Time, else Asterisk-Bill-Sec (cdr_radius sends
    the talk time there only), else OpenSIPS's Sip-Call-MSDuration / Sip-Call-Duration
    (its acc module's CDR mode); (0, False) when none says."""
    if rc.ACCT_SESSION_TIME in packet.attrs:
        return packet.integer(rc.ACCT_SESSION_TIME), True
    bill_sec = packet.attrs.get(rc.AST_BILL_SEC_KEY)
    if bill_sec is not None and len(bill_sec) == 4:
        return int.from_bytes(bill_sec, "big"), True
    duration = packet.attrs.get(rc.SIP_CALL_DURATION)
    if duration is not None and len(duration) == 4:
        # Sip-Call-Duration is a difference of whole seconds (05.900 to 66.300 is 61):
        # Sip-Call-MSDuration rounded half up when sent, as mediation reads the same
        # call from OpenSIPS's acc table (docs/mediation.md, opensips_db)
        ms = packet.attrs.get(rc.SIP_CALL_MS_DURATION)
        if ms is not None and len(ms) == 4:
            return (int.from_bytes(ms, "big") + 500) // 1000, True
        return int.from_bytes(duration, "big"), True
    return 0, False


def _opensips_talk_ms(packet: rc.Packet) -> int:
    """How far an OpenSIPS CDR's end is past its Event-Timestamp, which acc_aaa_cdrs
    sets to the call's start: Sip-Call-MSDuration, else Sip-Call-Duration seconds; 0
    for any other packet (or one without Event-Timestamp: its time is its arrival)."""
    duration = packet.attrs.get(rc.SIP_CALL_DURATION)
    if duration is None or len(duration) != 4 or rc.EVENT_TIMESTAMP not in packet.attrs:
        return 0
    ms = packet.attrs.get(rc.SIP_CALL_MS_DURATION)
    if ms is not None and len(ms) == 4:
        return int.from_bytes(ms, "big")
    return int.from_bytes(duration, "big") * 1000


# The longest Acct-Delay-Time believed (RFC 2866 §5.2: how long the client has been
# trying to send the record). Sippy B2BUA writes the Unix time of the call's first
# provisional response there (RadiusAccounting.asend: "Acct-Delay-Time =
# round(p1xx_ts)", no Event-Timestamp): read as a delay it put the event in 1970.
# A week is far longer than any gateway keeps retrying a record, and far shorter
# than any epoch time.
MAX_ACCT_DELAY_S: Final = 7 * 86_400


def event_ms_of(packet: rc.Packet, now_s: float) -> int:
    """When an accounting event happened at the NAS: Event-Timestamp (RFC 2869 §5.3),
    else the arrival time minus Acct-Delay-Time (RFC 2866 §5.2); a delay over
    MAX_ACCT_DELAY_S is not one (Sippy's timestamp): the arrival time then."""
    event_s = packet.integer(rc.EVENT_TIMESTAMP)
    if event_s:
        return event_s * 1000
    delay_s = packet.integer(rc.ACCT_DELAY_TIME)
    if delay_s > MAX_ACCT_DELAY_S:
        delay_s = 0
    return int(now_s * 1000) - delay_s * 1000


def _sip_code(packet: rc.Packet) -> int:
    value = packet.attrs.get(rc.SIP_RESPONSE_CODE)
    if value is None or len(value) != 4:
        return 0  # absent, or something else than Kamailio's Sip-Response-Code
    code = int.from_bytes(value, "big")
    return code if 100 <= code <= 699 else 0


def _disconnect_cause(packet: rc.Packet) -> int:
    """The Q.850 cause: Cisco's h323-disconnect-cause (hex text), else FreeSWITCH's
    Freeswitch-Hangupcause (mod_radius_cdr: an integer); 0 unknown."""
    cause = _q850(packet.cisco_value(rc.H323_DISCONNECT_CAUSE))
    if cause:
        return cause
    value = packet.attrs.get(rc.FS_HANGUPCAUSE_KEY)
    if value is None or len(value) != 4:
        return 0
    code = int.from_bytes(value, "big")
    return code if code <= 127 else 0  # Q.850 causes are 7 bits


def _q850(text: str) -> int:
    # Cisco's h323-disconnect-cause is the Q.850 cause in hex ("10" = 16, normal clearing).
    try:
        return int(text, 16) if text else 0
    except ValueError:
        return 0
