"""Building Diameter answers and requests, and the checks every request passes.

Answers copy the request's command, Application-Id, Hop-by-Hop and End-to-End
ids and its P bit (RFC 6733 §6.2); protocol errors (3xxx) carry the E bit and
the answer-message grammar (§7.2); every error names its AVP in Failed-AVP (§7.5).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import (
    GROUPED,
    KNOWN,
    VENDOR_3GPP,
    A,
    G,
    is_protocol_error,
    key,
)


@dataclass(frozen=True)
class Identity:
    """Who this node is on the wire (RFC 6733 §5.3.1)."""

    origin_host: str
    origin_realm: str
    host_ip_addresses: tuple[str, ...]
    product_name: str = "chargingd"
    vendor_id: int = 0
    firmware_revision: int = 1
    # RFC 6733 §8.16: stable for the life of the process, new after a restart.
    origin_state_id: int = 0

    def origin(self) -> bytes:
        """Origin-Host + Origin-Realm, pre-encoded."""
        return dc.utf8(A.ORIGIN_HOST, self.origin_host) + dc.utf8(A.ORIGIN_REALM, self.origin_realm)


def new_origin_state_id() -> int:
    """A value that changes at every start of the process (seconds since the epoch)."""
    return int(time.time()) & 0xFFFFFFFF


class IdAllocator:
    """Hop-by-Hop ids (per connection, any start) and End-to-End ids (RFC 6733 §3:
    high 12 bits from the clock at start, low 20 random, then incremented)."""

    def __init__(self) -> None:
        rng = random.Random(os.urandom(8))
        self._hbh = rng.getrandbits(32)
        self._e2e = ((int(time.time()) & 0xFFF) << 20) | rng.getrandbits(20)

    def next_hop_by_hop(self) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        return self._hbh

    def next_end_to_end(self) -> int:
        self._e2e = (self._e2e + 1) & 0xFFFFFFFF
        return self._e2e


def answer(req: dc.Message, body: bytes, *, error: bool = False) -> bytes:
    """An answer to ``req`` (same command, application, ids; P bit kept)."""
    flags = (req.flags & dc.FLAG_P) | (dc.FLAG_E if error else 0)
    return dc.encode(req.command, flags, req.app_id, req.hop_by_hop, req.end_to_end, body)


def error_answer(
    req: dc.Message,
    ident: Identity,
    result_code: int,
    *,
    failed_avp: bytes = b"",
    message: str = "",
    extra: bytes = b"",
) -> bytes:
    """An error answer: Session-Id first when the request had one (RFC 6733 §7.2),
    Result-Code, Origin-Host/Realm, Error-Message, Failed-AVP; E bit for 3xxx."""
    sid = req.get(A.SESSION_ID)
    parts = [
        dc.avp(A.SESSION_ID, sid.data) if sid is not None else b"",
        dc.u32(A.RESULT_CODE, result_code),
        ident.origin(),
        extra,
        dc.utf8(A.ERROR_MESSAGE, message, flags=0) if message else b"",
        dc.grouped(A.FAILED_AVP, failed_avp) if failed_avp else b"",
    ]
    return answer(req, b"".join(parts), error=is_protocol_error(result_code))


# RFC 4006 §3.2: AVPs a CCA must carry beyond the base ones.
_CCA_IDS = (A.AUTH_APPLICATION_ID, A.CC_REQUEST_TYPE, A.CC_REQUEST_NUMBER)


def command_ids(req: dc.Message) -> bytes:
    """Auth-Application-Id, CC-Request-Type and CC-Request-Number of a CCR, copied for
    its error answer. A 5xxx answer keeps the CCA grammar (only 3xxx protocol errors
    take the answer-message grammar, RFC 6733 §7.2); clients that check it (OTP
    diameter, freeDiameter) discard a CCA without them and time out instead of
    reading the error. Ids the request lacks, or has with a bad length, are left out."""
    out = []
    for code in _CCA_IDS:
        a = req.get(code)
        if a is not None and len(a.data) == 4:
            out.append(a.raw())
    return b"".join(out)


def unsupported_mandatory(
    avps: list[dc.Avp], *, charging_info: bool = False, also: frozenset[int] = frozenset()
) -> dc.Avp | None:
    """The first AVP with the M bit that chargingd does not know (RFC 6733 §4.1:
    answered 5001 AVP_UNSUPPORTED with it in Failed-AVP), looking into the known
    Grouped AVPs too. Malformed propagates (a Grouped AVP that does not parse).

    Inside Service-Information and Multiple-Services-Credit-Control (``charging_info``)
    a 3GPP AVP is never refused: TS 32.299 defines the first as the charging
    information of the service (IMS, PS, SMS, ...), scores of AVPs with the M bit
    that a Ro client fills as it sees fit (Kamailio's ims_charging: SIP-Method in
    Event-Type, User-Session-Id, the IOIs, the timestamp fractions, Trunk-Group-Id,
    ...), and extends the second and its units with its own (Event-Charging-TimeStamp
    in Used-Service-Unit, Trigger, Envelope-Reporting, Time-Quota-Mechanism,
    QoS-Information, ...); chargingd reads the called party and the reporting reason
    from them and rates nothing else. A 5001 there refused every call of such a
    client. Other vendors' AVPs with the M bit are still refused.

    ``also``: AVPs accepted (and ignored) in ``avps`` itself, not inside its Grouped
    AVPs: the 3GPP charging AVPs a Ro/Gy client puts at a CCR's top level
    (dictionary.CCR_TOP_CHARGING); any other 3GPP AVP with the M bit there is
    refused."""
    for a in avps:
        k = key(a.code, a.vendor)
        if k not in KNOWN:
            if k in also:
                continue
            if a.flags & dc.AVP_M and not (charging_info and a.vendor == VENDOR_3GPP):
                return a
            continue
        if k in GROUPED:
            inner = unsupported_mandatory(
                a.group(), charging_info=charging_info or k in _CHARGING_TREES
            )
            if inner is not None:
                return inner
    return None


# The Grouped AVPs whose 3GPP members are charging information (unsupported_mandatory)
_CHARGING_TREES = frozenset(
    (key(G.SERVICE_INFORMATION, VENDOR_3GPP), key(A.MULTIPLE_SERVICES_CREDIT_CONTROL))
)


def request(
    command: int, app_id: int, hop_by_hop: int, end_to_end: int, body: bytes, *, proxiable: bool
) -> bytes:
    """A request message (R bit, P bit when the command is proxiable)."""
    flags = dc.FLAG_R | (dc.FLAG_P if proxiable else 0)
    return dc.encode(command, flags, app_id, hop_by_hop, end_to_end, body)


def result_code(msg: dc.Message) -> int:
    """Result-Code, else Experimental-Result-Code, else 0 (no result given)."""
    rc = msg.get(A.RESULT_CODE)
    if rc is not None:
        return rc.u32()
    exp = msg.get(A.EXPERIMENTAL_RESULT)
    if exp is not None:
        inner = dc.find(exp.group(), A.EXPERIMENTAL_RESULT_CODE)
        if inner is not None:
            return inner.u32()
    return 0


def text_of(msg: dc.Message, code: int, vendor: int = 0) -> str:
    """A UTF8String AVP's value, or "" when absent."""
    a = msg.get(code, vendor)
    return a.text() if a is not None else ""
