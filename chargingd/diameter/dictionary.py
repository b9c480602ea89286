"""The Diameter names chargingd knows: commands, AVPs, result codes, enumerations.

RFC 6733 (base), RFC 4006 / RFC 8506 (Credit-Control, application 4) and the 3GPP
TS 32.299 AVPs a Ro client sends (vendor 10415). ``KNOWN`` is what an AVP with
the M bit may be without a 5001 AVP_UNSUPPORTED answer (RFC 6733 §4.1), and
``GROUPED`` which of them are looked into for that check.
"""

from __future__ import annotations

from enum import IntEnum

VENDOR_3GPP = 10415

# Application ids (RFC 6733 §2.4, RFC 4006 §1.3).
APP_COMMON = 0
APP_CREDIT_CONTROL = 4
APP_RELAY = 0xFFFFFFFF


class Cmd(IntEnum):
    """Command codes (RFC 6733 §3.1, RFC 4006 §3)."""

    CAPABILITIES_EXCHANGE = 257
    RE_AUTH = 258
    ABORT_SESSION = 274
    DISCONNECT_PEER = 282
    DEVICE_WATCHDOG = 280
    CREDIT_CONTROL = 272
    SESSION_TERMINATION = 275


class A(IntEnum):
    """AVP codes of vendor 0 (IETF)."""

    USER_NAME = 1
    CLASS = 25
    SESSION_TIMEOUT = 27
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    PROXY_STATE = 33
    ACCT_SESSION_ID = 44
    ACCT_MULTI_SESSION_ID = 50
    EVENT_TIMESTAMP = 55
    ACCT_INTERIM_INTERVAL = 85
    HOST_IP_ADDRESS = 257
    AUTH_APPLICATION_ID = 258
    ACCT_APPLICATION_ID = 259
    VENDOR_SPECIFIC_APPLICATION_ID = 260
    REDIRECT_HOST_USAGE = 261
    REDIRECT_MAX_CACHE_TIME = 262
    SESSION_ID = 263
    ORIGIN_HOST = 264
    SUPPORTED_VENDOR_ID = 265
    VENDOR_ID = 266
    FIRMWARE_REVISION = 267
    RESULT_CODE = 268
    PRODUCT_NAME = 269
    SESSION_BINDING = 270
    SESSION_SERVER_FAILOVER = 271
    MULTI_ROUND_TIME_OUT = 272
    DISCONNECT_CAUSE = 273
    AUTH_REQUEST_TYPE = 274
    AUTH_GRACE_PERIOD = 276
    AUTH_SESSION_STATE = 277
    ORIGIN_STATE_ID = 278
    FAILED_AVP = 279
    PROXY_HOST = 280
    ERROR_MESSAGE = 281
    ROUTE_RECORD = 282
    DESTINATION_REALM = 283
    PROXY_INFO = 284
    RE_AUTH_REQUEST_TYPE = 285
    ACCOUNTING_SUB_SESSION_ID = 287
    AUTHORIZATION_LIFETIME = 291
    REDIRECT_HOST = 292
    DESTINATION_HOST = 293
    ERROR_REPORTING_HOST = 294
    TERMINATION_CAUSE = 295
    ORIGIN_REALM = 296
    EXPERIMENTAL_RESULT = 297
    EXPERIMENTAL_RESULT_CODE = 298
    INBAND_SECURITY_ID = 299
    # RFC 4006 / RFC 8506 §8
    CC_CORRELATION_ID = 411
    CC_INPUT_OCTETS = 412
    CC_MONEY = 413
    CC_OUTPUT_OCTETS = 414
    CC_REQUEST_NUMBER = 415
    CC_REQUEST_TYPE = 416
    CC_SERVICE_SPECIFIC_UNITS = 417
    CC_SESSION_FAILOVER = 418
    CC_SUB_SESSION_ID = 419
    CC_TIME = 420
    CC_TOTAL_OCTETS = 421
    CHECK_BALANCE_RESULT = 422
    COST_INFORMATION = 423
    COST_UNIT = 424
    CURRENCY_CODE = 425
    CREDIT_CONTROL = 426
    CREDIT_CONTROL_FAILURE_HANDLING = 427
    DIRECT_DEBITING_FAILURE_HANDLING = 428
    EXPONENT = 429
    FINAL_UNIT_INDICATION = 430
    GRANTED_SERVICE_UNIT = 431
    RATING_GROUP = 432
    REDIRECT_ADDRESS_TYPE = 433
    REDIRECT_SERVER = 434
    REDIRECT_SERVER_ADDRESS = 435
    REQUESTED_ACTION = 436
    REQUESTED_SERVICE_UNIT = 437
    RESTRICTION_FILTER_RULE = 438
    SERVICE_IDENTIFIER = 439
    SERVICE_PARAMETER_INFO = 440
    SERVICE_PARAMETER_TYPE = 441
    SERVICE_PARAMETER_VALUE = 442
    SUBSCRIPTION_ID = 443
    SUBSCRIPTION_ID_DATA = 444
    UNIT_VALUE = 445
    USED_SERVICE_UNIT = 446
    VALUE_DIGITS = 447
    VALIDITY_TIME = 448
    FINAL_UNIT_ACTION = 449
    SUBSCRIPTION_ID_TYPE = 450
    TARIFF_TIME_CHANGE = 451
    TARIFF_CHANGE_USAGE = 452
    G_S_U_POOL_IDENTIFIER = 453
    CC_UNIT_TYPE = 454
    MULTIPLE_SERVICES_INDICATOR = 455
    MULTIPLE_SERVICES_CREDIT_CONTROL = 456
    G_S_U_POOL_REFERENCE = 457
    USER_EQUIPMENT_INFO = 458
    USER_EQUIPMENT_INFO_TYPE = 459
    USER_EQUIPMENT_INFO_VALUE = 460
    SERVICE_CONTEXT_ID = 461
    ACCOUNTING_RECORD_TYPE = 480
    ACCOUNTING_REALTIME_REQUIRED = 483
    ACCOUNTING_RECORD_NUMBER = 485
    USER_EQUIPMENT_INFO_EXTENSION = 653
    SUBSCRIPTION_ID_EXTENSION = 659  # RFC 8506 §8.58
    SUBSCRIPTION_ID_E164 = 660
    SUBSCRIPTION_ID_IMSI = 661
    SUBSCRIPTION_ID_SIP_URI = 662
    SUBSCRIPTION_ID_NAI = 663
    SUBSCRIPTION_ID_PRIVATE = 664
    REDIRECT_SERVER_EXTENSION = 665
    QOS_FINAL_UNIT_INDICATION = 669


class G(IntEnum):
    """3GPP AVP codes (vendor 10415, TS 32.299 §7.2); all carry V and M."""

    CHARGING_ID_3GPP = 2
    EVENT_TYPE = 823
    EVENT = 825
    ROLE_OF_NODE = 829
    CALLING_PARTY_ADDRESS = 831
    CALLED_PARTY_ADDRESS = 832
    TIME_STAMPS = 833
    SIP_REQUEST_TIMESTAMP = 834
    INTER_OPERATOR_IDENTIFIER = 838
    IMS_CHARGING_IDENTIFIER = 841
    APPLICATION_SERVER_INFORMATION = 850
    CAUSE_CODE = 861
    NODE_FUNCTIONALITY = 862
    TIME_QUOTA_THRESHOLD = 868
    TRIGGER_TYPE = 870
    REPORTING_REASON = 872
    SERVICE_INFORMATION = 873
    IMS_INFORMATION = 876
    CALLED_ASSERTED_IDENTITY = 1250
    REQUESTED_PARTY_ADDRESS = 1251


class Result(IntEnum):
    """Result-Code values (RFC 6733 §7.1, RFC 4006 §9)."""

    SUCCESS = 2001
    LIMITED_SUCCESS = 2002
    COMMAND_UNSUPPORTED = 3001
    UNABLE_TO_DELIVER = 3002
    REALM_NOT_SERVED = 3003
    TOO_BUSY = 3004
    APPLICATION_UNSUPPORTED = 3007
    INVALID_HDR_BITS = 3008
    INVALID_AVP_BITS = 3009
    UNKNOWN_PEER = 3010
    END_USER_SERVICE_DENIED = 4010
    CREDIT_CONTROL_NOT_APPLICABLE = 4011
    CREDIT_LIMIT_REACHED = 4012
    AVP_UNSUPPORTED = 5001
    UNKNOWN_SESSION_ID = 5002
    AUTHORIZATION_REJECTED = 5003
    INVALID_AVP_VALUE = 5004
    MISSING_AVP = 5005
    RESOURCES_EXCEEDED = 5006
    CONTRADICTING_AVPS = 5007
    AVP_NOT_ALLOWED = 5008
    AVP_OCCURS_TOO_MANY_TIMES = 5009
    NO_COMMON_APPLICATION = 5010
    UNSUPPORTED_VERSION = 5011
    UNABLE_TO_COMPLY = 5012
    INVALID_BIT_IN_HEADER = 5013
    INVALID_AVP_LENGTH = 5014
    INVALID_MESSAGE_LENGTH = 5015
    USER_UNKNOWN = 5030
    RATING_FAILED = 5031


def is_protocol_error(code: int) -> bool:
    """3xxx: answered with the E bit, in the answer-message grammar (RFC 6733 §7.1.3)."""
    return 3000 <= code < 4000


class RequestType(IntEnum):
    """CC-Request-Type (RFC 4006 §8.3)."""

    INITIAL = 1
    UPDATE = 2
    TERMINATION = 3
    EVENT = 4


class ReportingReason(IntEnum):
    """Reporting-Reason (TS 32.299 §7.2.175; 3GPP AVP 872, vendor 10415): why a
    Used-Service-Unit is sent, in its Multiple-Services-Credit-Control (for all its
    units) or in the Used-Service-Unit (for one quota type). It is 3GPP's, not RFC
    4006's: RFC 4006 has no such AVP."""

    THRESHOLD = 0
    QHT = 1  # Quota-Holding-Time expired: the service is idle, its quota given back
    FINAL = 2  # the service ended (the user stopped using it): no more quota for it
    QUOTA_EXHAUSTED = 3
    VALIDITY_TIME = 4
    OTHER_QUOTA_TYPE = 5
    RATING_CONDITION_CHANGE = 6
    FORCED_REAUTHORISATION = 7
    POOL_EXHAUSTED = 8
    UNUSED_QUOTA_TIMER = 9


class SubscriptionIdType(IntEnum):
    """Subscription-Id-Type (RFC 4006 §8.47)."""

    END_USER_E164 = 0
    END_USER_IMSI = 1
    END_USER_SIP_URI = 2
    END_USER_NAI = 3
    END_USER_PRIVATE = 4


# Final-Unit-Action (RFC 4006 §8.35), Requested-Action (§8.41),
# Credit-Control-Failure-Handling (§8.14), Disconnect-Cause (RFC 6733 §5.4.3),
# Re-Auth-Request-Type (RFC 6733 §8.12), Auth-Session-State (§8.11).
FUA_TERMINATE = 0
ACTION_DIRECT_DEBITING = 0
ACTION_REFUND_ACCOUNT = 1
ACTION_CHECK_BALANCE = 2
ACTION_PRICE_ENQUIRY = 3
FAILURE_HANDLING = {"terminate": 0, "continue": 1, "retry_and_terminate": 2}
FAILOVER_SUPPORTED = 1  # CC-Session-Failover (RFC 4006 §8.4)
DISCONNECT_REBOOTING = 0
DISCONNECT_BUSY = 1
DISCONNECT_DO_NOT_WANT_TO_TALK = 2
AUTHORIZE_ONLY = 0
NO_STATE_MAINTAINED = 1
# Termination-Cause (RFC 6733 §8.15) values, for the CDR's terminate_cause. 11-28 are
# RFC 7155's (NASREQ; IANA's registry of AVP 295): RADIUS Acct-Terminate-Cause + 10,
# sent by NASREQ-derived clients and RADIUS-Diameter gateways. They are named as a
# RADIUS gateway's CDR names the same cause (radius/codec.py TERMINATE_CAUSES), so
# one cause reads the same whichever protocol reported it (before: "11", "15").
TERMINATION_CAUSES = {
    1: "Logout",
    2: "Service-Not-Provided",
    3: "Bad-Answer",
    4: "Administrative",
    5: "Link-Broken",
    6: "Auth-Expired",
    7: "User-Moved",
    8: "Session-Timeout",
    11: "User-Request",
    12: "Lost-Carrier",
    13: "Lost-Service",
    14: "Idle-Timeout",
    15: "Session-Timeout",
    16: "Admin-Reset",
    17: "Admin-Reboot",
    18: "Port-Error",
    19: "NAS-Error",
    20: "NAS-Request",
    21: "NAS-Reboot",
    22: "Port-Unneeded",
    23: "Port-Preempted",
    24: "Port-Suspended",
    25: "Service-Unavailable",
    26: "Callback",
    27: "User-Error",
    28: "Host-Request",
}


def key(code: int, vendor: int = 0) -> int:
    """One integer naming an AVP: vendor in the high bits."""
    return vendor << 32 | code


KNOWN: frozenset[int] = frozenset(
    [key(int(code)) for code in A] + [key(int(code), VENDOR_3GPP) for code in G]
)

# 3GPP AVPs (vendor 10415) with the M bit that a Ro/Gy client puts at the CCR's top
# level and that are charging information, accepted there and ignored
# (messages.unsupported_mandatory). TS 32.299 §6.4.2's CCR names one 3GPP AVP at the
# top level besides Service-Information: AoC-Request-Type (§7.2.15a; V and M), which
# asks for Advice of Charge; an OCS that gives none answers without AoC-Information
# (open5gs's SMF sends AoC_FULL in every Gy CCR). Gy clients also put TS 29.061
# §16.4.7's 3GPP-* AVPs there (the ones TS 32.299 carries in PS-Information:
# location, RAT, charging id, node addresses; freeDiameter's dict_dcca_3gpp and the
# clients built on it set M on all of them): descriptions of the bearer, nothing
# chargingd rates. Not the 3GPP-* of TS 29.061 that instruct the GGSN on Gi
# (3GPP-IPv6-DNS-Servers 17, 3GPP-Teardown-Indicator 19, 3GPP-Packet-Filter 25,
# 3GPP-Negotiated-DSCP 26, 3GPP-Allocate-IP-Type 27), nor any other 3GPP AVP: an
# M-bit AVP chargingd cannot tell is charging information is still 5001 (RFC 6733
# §4.1, §7.1.5), as is every unknown vendor's.
AOC_REQUEST_TYPE = 2055
TS29061_CHARGING = (
    1,  # 3GPP-IMSI
    2,  # 3GPP-Charging-Id
    3,  # 3GPP-PDP-Type
    4,  # 3GPP-CG-Address
    5,  # 3GPP-GPRS-Negotiated-QoS-Profile
    6,  # 3GPP-SGSN-Address
    7,  # 3GPP-GGSN-Address
    8,  # 3GPP-IMSI-MCC-MNC
    9,  # 3GPP-GGSN-MCC-MNC
    10,  # 3GPP-NSAPI
    11,  # 3GPP-Session-Stop-Indicator
    12,  # 3GPP-Selection-Mode
    13,  # 3GPP-Charging-Characteristics
    14,  # 3GPP-CG-IPv6-Address
    15,  # 3GPP-SGSN-IPv6-Address
    16,  # 3GPP-GGSN-IPv6-Address
    18,  # 3GPP-SGSN-MCC-MNC
    20,  # 3GPP-IMEISV
    21,  # 3GPP-RAT-Type
    22,  # 3GPP-User-Location-Info
    23,  # 3GPP-MS-TimeZone
    24,  # 3GPP-CAMEL-Charging-Info
)
CCR_TOP_CHARGING: frozenset[int] = frozenset(
    key(code, VENDOR_3GPP) for code in (AOC_REQUEST_TYPE, *TS29061_CHARGING)
)

# Grouped AVPs whose members are checked for unsupported M-bit AVPs too.
GROUPED: frozenset[int] = frozenset(
    [
        key(A.VENDOR_SPECIFIC_APPLICATION_ID),
        key(A.FAILED_AVP),
        key(A.PROXY_INFO),
        key(A.EXPERIMENTAL_RESULT),
        key(A.CC_MONEY),
        key(A.COST_INFORMATION),
        key(A.FINAL_UNIT_INDICATION),
        key(A.GRANTED_SERVICE_UNIT),
        key(A.MULTIPLE_SERVICES_CREDIT_CONTROL),
        key(A.REDIRECT_SERVER),
        key(A.REQUESTED_SERVICE_UNIT),
        key(A.SERVICE_PARAMETER_INFO),
        key(A.SUBSCRIPTION_ID),
        key(A.UNIT_VALUE),
        key(A.USED_SERVICE_UNIT),
        key(A.G_S_U_POOL_REFERENCE),
        key(A.USER_EQUIPMENT_INFO),
        key(A.SUBSCRIPTION_ID_EXTENSION),
        key(G.SERVICE_INFORMATION, VENDOR_3GPP),
        key(G.IMS_INFORMATION, VENDOR_3GPP),
        key(G.EVENT_TYPE, VENDOR_3GPP),
        key(G.TIME_STAMPS, VENDOR_3GPP),
        key(G.INTER_OPERATOR_IDENTIFIER, VENDOR_3GPP),
        key(G.APPLICATION_SERVER_INFORMATION, VENDOR_3GPP),
    ]
)
