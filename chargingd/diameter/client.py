"""The client side of Credit-Control, pre-encoded: CER, CCR, DWR, DPR, ASA, RAA.

Used by the Diameter load generator (scripts/loadgen_diameter.py) and by the tests
that play a gateway; the daemon itself never sends these.
"""

from __future__ import annotations

from dataclasses import dataclass

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import (
    APP_CREDIT_CONTROL,
    VENDOR_3GPP,
    A,
    Cmd,
    G,
    RequestType,
    SubscriptionIdType,
)

SERVICE_CONTEXT = "32260@3gpp.org"  # TS 32.299: IMS charging


@dataclass(frozen=True)
class ClientIdentity:
    origin_host: str
    origin_realm: str
    host_ip: str = "127.0.0.1"
    destination_realm: str = "chargingd.local"

    def origin(self) -> bytes:
        return dc.utf8(A.ORIGIN_HOST, self.origin_host) + dc.utf8(A.ORIGIN_REALM, self.origin_realm)


def cer(
    me: ClientIdentity,
    hbh: int,
    e2e: int,
    *,
    vsai_vendor: int | None = None,
    app: int = 4,
    origin_state_id: int = 1,
) -> bytes:
    """A CER naming Credit-Control plainly, or inside Vendor-Specific-Application-Id."""
    if vsai_vendor is None:
        apps = dc.u32(A.AUTH_APPLICATION_ID, app)
    else:
        apps = dc.grouped(
            A.VENDOR_SPECIFIC_APPLICATION_ID,
            dc.u32(A.VENDOR_ID, vsai_vendor),
            dc.u32(A.AUTH_APPLICATION_ID, app),
        )
    body = (
        me.origin()
        + dc.address(A.HOST_IP_ADDRESS, me.host_ip)
        + dc.u32(A.VENDOR_ID, 0)
        + dc.utf8(A.PRODUCT_NAME, "test-client", flags=0)
        + dc.u32(A.ORIGIN_STATE_ID, origin_state_id)
        + apps
    )
    return dc.encode(Cmd.CAPABILITIES_EXCHANGE, dc.FLAG_R, 0, hbh, e2e, body)


def dwr(me: ClientIdentity, hbh: int, e2e: int) -> bytes:
    return dc.encode(Cmd.DEVICE_WATCHDOG, dc.FLAG_R, 0, hbh, e2e, me.origin())


def dpr(me: ClientIdentity, hbh: int, e2e: int) -> bytes:
    body = me.origin() + dc.u32(A.DISCONNECT_CAUSE, 2)
    return dc.encode(Cmd.DISCONNECT_PEER, dc.FLAG_R, 0, hbh, e2e, body)


@dataclass(frozen=True)
class Call:
    """What a CCR says about the call (the subscriber, the called party)."""

    session_id: str
    calling: str = ""  # Subscription-Id END_USER_E164
    called: str = ""  # IMS-Information / Called-Party-Address
    sip_uri: str = ""  # Subscription-Id END_USER_SIP_URI
    user_name: str = ""  # User-Name
    rating_group: int | None = 100  # None: no MSCC (RFC 4006 single service)


def ccr(
    me: ClientIdentity,
    call: Call,
    request_type: int,
    number: int,
    hbh: int,
    e2e: int,
    *,
    used_s: int | None = None,
    requested_s: int | None = None,
    extra: bytes = b"",
    flags: int = dc.FLAG_R | dc.FLAG_P,
) -> bytes:
    """A CCR of one call; units per MSCC when the call has a rating group."""
    parts = [
        dc.utf8(A.SESSION_ID, call.session_id),
        me.origin(),
        dc.utf8(A.DESTINATION_REALM, me.destination_realm),
        dc.u32(A.AUTH_APPLICATION_ID, APP_CREDIT_CONTROL),
        dc.utf8(A.SERVICE_CONTEXT_ID, SERVICE_CONTEXT),
        dc.u32(A.CC_REQUEST_TYPE, request_type),
        dc.u32(A.CC_REQUEST_NUMBER, number),
    ]
    if call.calling:
        parts.append(_subscription(SubscriptionIdType.END_USER_E164, call.calling))
    if call.sip_uri:
        parts.append(_subscription(SubscriptionIdType.END_USER_SIP_URI, call.sip_uri))
    if call.user_name:
        parts.append(dc.utf8(A.USER_NAME, call.user_name))
    if request_type == RequestType.EVENT:
        parts.append(dc.u32(A.REQUESTED_ACTION, 0))
    parts.append(_units(call, used_s, requested_s))
    if call.called:
        parts.append(_service_information(call.called))
    parts.append(extra)
    return dc.encode(Cmd.CREDIT_CONTROL, flags, APP_CREDIT_CONTROL, hbh, e2e, b"".join(parts))


def _subscription(kind: int, data: str) -> bytes:
    return dc.grouped(
        A.SUBSCRIPTION_ID,
        dc.u32(A.SUBSCRIPTION_ID_TYPE, kind),
        dc.utf8(A.SUBSCRIPTION_ID_DATA, data),
    )


def _units(call: Call, used_s: int | None, requested_s: int | None) -> bytes:
    units = []
    if requested_s is not None:
        rsu = dc.u32(A.CC_TIME, requested_s) if requested_s else b""
        units.append(dc.grouped(A.REQUESTED_SERVICE_UNIT, rsu))
    if used_s is not None:
        units.append(dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, used_s)))
    if call.rating_group is None:
        return b"".join(units)
    return dc.grouped(
        A.MULTIPLE_SERVICES_CREDIT_CONTROL, *units, dc.u32(A.RATING_GROUP, call.rating_group)
    )


def _service_information(called: str) -> bytes:
    v = VENDOR_3GPP
    return dc.grouped(
        G.SERVICE_INFORMATION,
        dc.grouped(G.IMS_INFORMATION, dc.utf8(G.CALLED_PARTY_ADDRESS, called, vendor=v), vendor=v),
        vendor=v,
    )


def answer_to(request: dc.Message, me: ClientIdentity, result: int) -> bytes:
    """ASA / RAA for a request of the server (Session-Id echoed)."""
    sid = request.get(A.SESSION_ID)
    body = (
        (dc.avp(A.SESSION_ID, sid.data) if sid is not None else b"")
        + dc.u32(A.RESULT_CODE, result)
        + me.origin()
    )
    return dc.encode(
        request.command,
        request.flags & dc.FLAG_P,
        request.app_id,
        request.hop_by_hop,
        request.end_to_end,
        body,
    )
