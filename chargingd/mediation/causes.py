"""Disconnect causes to ITU-T Q.850 cause values.

SIP final responses map per RFC 3398 §7.2.4.1 (the SIP -> ISUP cause table);
FreeSWITCH hangup cause names are the Q.850 names of switch_types.h
(``SWITCH_CAUSE_NORMAL_CLEARING = 16``); Asterisk dispositions are coarse.
"""

from __future__ import annotations

NORMAL_CLEARING = 16
INTERWORKING = 127

# RFC 3398 §7.2.4.1: "Response received -> Cause value in the REL". 487 and 488 have
# no mapping in the RFC ("--" / "by Warning header"); 127 (interworking) is used.
SIP_TO_Q850: dict[int, int] = {
    400: 41,
    401: 21,
    402: 21,
    403: 21,
    404: 1,
    405: 63,
    406: 79,
    407: 21,
    408: 102,
    410: 22,
    413: 127,
    414: 127,
    415: 79,
    416: 127,
    420: 127,
    421: 127,
    423: 127,
    480: 18,
    481: 41,
    482: 25,
    483: 25,
    484: 28,
    485: 1,
    486: 17,
    487: 127,
    488: 127,
    500: 41,
    501: 79,
    502: 38,
    503: 41,
    504: 102,
    505: 127,
    513: 127,
    600: 17,
    603: 21,
    604: 1,
    606: 127,
}

# FreeSWITCH switch_call_cause_t names with Q.850 values (switch_types.h).
FREESWITCH_CAUSES: dict[str, int] = {
    "UNSPECIFIED": 0,
    "UNALLOCATED_NUMBER": 1,
    "NO_ROUTE_TRANSIT_NET": 2,
    "NO_ROUTE_DESTINATION": 3,
    "CHANNEL_UNACCEPTABLE": 6,
    "CALL_AWARDED_DELIVERED": 7,
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "NUMBER_CHANGED": 22,
    "REDIRECTION_TO_NEW_DESTINATION": 23,
    "EXCHANGE_ROUTING_ERROR": 25,
    "DESTINATION_OUT_OF_ORDER": 27,
    "INVALID_NUMBER_FORMAT": 28,
    "FACILITY_REJECTED": 29,
    "RESPONSE_TO_STATUS_ENQUIRY": 30,
    "NORMAL_UNSPECIFIED": 31,
    "NORMAL_CIRCUIT_CONGESTION": 34,
    "NETWORK_OUT_OF_ORDER": 38,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "SWITCH_CONGESTION": 42,
    "ACCESS_INFO_DISCARDED": 43,
    "REQUESTED_CHAN_UNAVAIL": 44,
    "PRE_EMPTED": 45,
    "FACILITY_NOT_SUBSCRIBED": 50,
    "OUTGOING_CALL_BARRED": 52,
    "INCOMING_CALL_BARRED": 54,
    "BEARERCAPABILITY_NOTAUTH": 57,
    "BEARERCAPABILITY_NOTAVAIL": 58,
    "SERVICE_UNAVAILABLE": 63,
    "BEARERCAPABILITY_NOTIMPL": 65,
    "CHAN_NOT_IMPLEMENTED": 66,
    "FACILITY_NOT_IMPLEMENTED": 69,
    "SERVICE_NOT_IMPLEMENTED": 79,
    "INVALID_CALL_REFERENCE": 81,
    "INCOMPATIBLE_DESTINATION": 88,
    "INVALID_MSG_UNSPECIFIED": 95,
    "MANDATORY_IE_MISSING": 96,
    "MESSAGE_TYPE_NONEXIST": 97,
    "WRONG_MESSAGE": 98,
    "IE_NONEXIST": 99,
    "INVALID_IE_CONTENTS": 100,
    "WRONG_CALL_STATE": 101,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MANDATORY_IE_LENGTH_ERROR": 103,
    "PROTOCOL_ERROR": 111,
    "INTERWORKING": 127,
    # FreeSWITCH-only causes (values >= 487 are not Q.850): the nearest Q.850 meaning.
    "ORIGINATOR_CANCEL": 16,
    "LOSE_RACE": 16,
    "PICKED_OFF": 16,
    "BLIND_TRANSFER": 16,
    "ATTENDED_TRANSFER": 16,
    "MANAGER_REQUEST": 16,
    "ALLOTTED_TIMEOUT": 102,
    "MEDIA_TIMEOUT": 102,
    "PROGRESS_TIMEOUT": 102,
    "USER_NOT_REGISTERED": 20,
    "CRASH": 41,
    "SYSTEM_SHUTDOWN": 41,
    "SUCCESS": 16,
    "BOWOUT": 16,
    "USER_CHALLENGE": 21,
    "INVALID_GATEWAY": 3,
    "GATEWAY_DOWN": 38,
    "INVALID_URL": 28,
    "INVALID_PROFILE": 41,
    "NO_PICKUP": 19,
    "SRTP_READ_ERROR": 41,
    "BUSY_EVERYWHERE": 17,  # SIP 600
    "DECLINE": 21,  # SIP 603
    "DOES_NOT_EXIST_ANYWHERE": 1,  # SIP 604
    "NOT_ACCEPTABLE": 127,  # SIP 606
    "UNWANTED": 21,  # SIP 607
    "NO_IDENTITY": 21,  # SIP 428 and the other STIR/SHAKEN refusals
    "BAD_IDENTITY_INFO": 21,
    "UNSUPPORTED_CERTIFICATE": 21,
    "INVALID_IDENTITY": 21,
    "STALE_DATE": 21,
    "REJECT_ALL": 21,
}

# The numbers switch_types.h gives the FreeSWITCH-only causes above: its docs' "Hangup
# Cause Code Table" lists them in its "Q.850 Code" column (ORIGINATOR_CANCEL 487), so a
# hangup_cause_q850 of one is read as that cause's nearest Q.850 meaning.
_FREESWITCH_NUMBERS: dict[int, str] = {
    142: "SUCCESS",
    487: "ORIGINATOR_CANCEL",
    700: "CRASH",
    701: "SYSTEM_SHUTDOWN",
    702: "LOSE_RACE",
    703: "MANAGER_REQUEST",
    800: "BLIND_TRANSFER",
    801: "ATTENDED_TRANSFER",
    802: "ALLOTTED_TIMEOUT",
    803: "USER_CHALLENGE",
    804: "MEDIA_TIMEOUT",
    805: "PICKED_OFF",
    806: "USER_NOT_REGISTERED",
    807: "PROGRESS_TIMEOUT",
    808: "INVALID_GATEWAY",
    809: "GATEWAY_DOWN",
    810: "INVALID_URL",
    811: "INVALID_PROFILE",
    812: "NO_PICKUP",
    813: "SRTP_READ_ERROR",
    814: "BOWOUT",
    815: "BUSY_EVERYWHERE",
    816: "DECLINE",
    817: "DOES_NOT_EXIST_ANYWHERE",
    818: "NOT_ACCEPTABLE",
    819: "UNWANTED",
    820: "NO_IDENTITY",
    821: "BAD_IDENTITY_INFO",
    822: "UNSUPPORTED_CERTIFICATE",
    823: "INVALID_IDENTITY",
    824: "STALE_DATE",
    825: "REJECT_ALL",
}


def freeswitch_q850(q850: int | None, name: str | None) -> int | None:
    """The Q.850 cause of a FreeSWITCH leg: its hangup_cause_q850 when that is a Q.850
    value (0..127), else its hangup_cause name's (or the number's, for a FreeSWITCH-only
    cause) nearest Q.850 meaning; None when neither says (the SIP code may)."""
    if q850 is not None and 0 <= q850 <= INTERWORKING:
        return q850
    mapped = FREESWITCH_CAUSES.get(name or "")
    if mapped is None and q850 is not None:
        mapped = FREESWITCH_CAUSES.get(_FREESWITCH_NUMBERS.get(q850, ""))
    return mapped


# Asterisk cdr disposition strings (cdr.c ast_cdr_disp2str).
ASTERISK_DISPOSITIONS: dict[str, int] = {
    "ANSWERED": 16,
    "NO ANSWER": 19,
    "BUSY": 17,
    "FAILED": 41,
    "CONGESTION": 34,
}


def sip_to_q850(code: int) -> int:
    """Q.850 cause for a final SIP response (RFC 3398 §7.2.4.1); 2xx is normal clearing."""
    if 200 <= code < 300:
        return NORMAL_CLEARING
    mapped = SIP_TO_Q850.get(code)
    if mapped is not None:
        return mapped
    # Codes the table does not list: the class default (4xx/5xx/6xx -> interworking).
    return INTERWORKING if code >= 300 else 0
