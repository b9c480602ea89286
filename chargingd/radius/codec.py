"""RADIUS wire format: bytes in, bytes out, no I/O (the hot path of radius/server.py).

Decodes only the attributes a charging decision needs, verifies authenticators
with `hmac.compare_digest`, and builds replies from pre-encoded pieces. pyrad is
used for dictionaries and by the tests as an independent encoder, never here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from chargingd.core.currencies import minor_unit

# Packet codes: RFC 2865 §3, RFC 2866 §4, RFC 5176 §2.3.
ACCESS_REQUEST: Final = 1
ACCESS_ACCEPT: Final = 2
ACCESS_REJECT: Final = 3
ACCOUNTING_REQUEST: Final = 4
ACCOUNTING_RESPONSE: Final = 5
STATUS_SERVER: Final = 12  # RFC 5997
DISCONNECT_REQUEST: Final = 40
DISCONNECT_ACK: Final = 41
DISCONNECT_NAK: Final = 42
COA_REQUEST: Final = 43
COA_ACK: Final = 44
COA_NAK: Final = 45

# Attribute types: RFC 2865 §5, RFC 2866 §5, RFC 2869 §5, RFC 5176 §3.
USER_NAME: Final = 1
USER_PASSWORD: Final = 2
NAS_IP_ADDRESS: Final = 4
REPLY_MESSAGE: Final = 18
CLASS: Final = 25  # RFC 2865 §5.25: sent in Access-Accept, echoed by the client in accounting
FRAMED_IP_ADDRESS: Final = 8
VENDOR_SPECIFIC: Final = 26
SESSION_TIMEOUT: Final = 27
CALLED_STATION_ID: Final = 30
PROXY_STATE: Final = 33
CALLING_STATION_ID: Final = 31
ACCT_STATUS_TYPE: Final = 40
ACCT_DELAY_TIME: Final = 41
ACCT_SESSION_ID: Final = 44
ACCT_SESSION_TIME: Final = 46
ACCT_TERMINATE_CAUSE: Final = 49
EVENT_TIMESTAMP: Final = 55
MESSAGE_AUTHENTICATOR: Final = 80
ACCT_INTERIM_INTERVAL: Final = 85
ERROR_CAUSE: Final = 101
# Kamailio's acc_radius (draft-sterman-aaa-sip) puts the final SIP response code of the
# accounted transaction here, a 4-octet integer. RFC 7268 gave 102 to EAP-Key-Name, which
# no call accounting carries; it is read only from Accounting-Requests, only as 4 octets.
SIP_RESPONSE_CODE: Final = 102
# OpenSIPS's acc module in CDR mode (acc_aaa_cdrs: one Stop per call, no Start, no
# Acct-Session-Time; etc/dictionary.opensips): Sip-Call-Duration (the talk time in
# seconds) and Sip-Call-MSDuration (in ms), 4-octet integers in the implementation-
# specific range (RFC 2865 §5.26 / IANA 224-240); its Event-Timestamp is the call's
# start (the answer), not its end.
SIP_CALL_DURATION: Final = 227
SIP_CALL_MS_DURATION: Final = 230

# Acct-Status-Type values (RFC 2866 §5.1).
STATUS_START: Final = 1
STATUS_STOP: Final = 2
STATUS_INTERIM: Final = 3
STATUS_ACCOUNTING_ON: Final = 7
STATUS_ACCOUNTING_OFF: Final = 8
STATUS_FAILED: Final = 15  # RFC 2866 §5.1 (IANA): the session failed, e.g. a SIP INVITE >= 300

# Error-Cause (RFC 5176 §3.5): the gateway has no such session, i.e. it already ended.
ERROR_SESSION_CONTEXT_NOT_FOUND: Final = 503

# Cisco, vendor 9: the h323-* VSAs carry "name=value" strings.
CISCO_VENDOR: Final = 9
CISCO_AVPAIR: Final = 1  # "name=value", repeated: the codec keeps the first
H323_REMOTE_ADDRESS: Final = 23
H323_CONF_ID: Final = 24
H323_SETUP_TIME: Final = 25  # "hh:mm:ss.mmm ZONE Day Mon dd yyyy" (Cisco's NTP format)
H323_CALL_ORIGIN: Final = 26
H323_CONNECT_TIME: Final = 28  # the leg's answer, same format: Interim-Update and Stop
H323_DISCONNECT_CAUSE: Final = 30
H323_CREDIT_AMOUNT: Final = 101
H323_CREDIT_TIME: Final = 102
H323_RETURN_CODE: Final = 103
H323_BILLING_MODEL: Final = 109
H323_CURRENCY: Final = 110

# Softswitches' own VSAs that carry what their accounting has no standard attribute
# for, kept in Packet.attrs under vendor << 8 | sub-type (above the one-octet attribute
# types, so they collide with none). FreeSWITCH, vendor 27880 (mod_radius_cdr.h):
# Freeswitch-Src / -Dst (the numbers; its packets have no Calling/Called-Station-Id) and
# Freeswitch-Hangupcause (the Q.850 cause, a 4-octet integer), Freeswitch-Callstartdate
# and -Callanswerdate (text, "2026-12-07T10:00:08.250000+0100": the channel's created
# and answered times, each sent only when set; its Start goes at routing, before any
# answer: radius/translate.py), Freeswitch-Direction ("inbound", "outbound": an
# outbound leg is one FreeSWITCH originated, a bridge's B-leg, whose Stop chargingd
# never adopts) and Freeswitch-Other-Leg-Id (the bridged partner's uuid).
FREESWITCH_VENDOR: Final = 27880
FS_SRC_KEY: Final = FREESWITCH_VENDOR << 8 | 4
FS_DST_KEY: Final = FREESWITCH_VENDOR << 8 | 5
FS_HANGUPCAUSE_KEY: Final = FREESWITCH_VENDOR << 8 | 13
FS_CALLSTARTDATE_KEY: Final = FREESWITCH_VENDOR << 8 | 20
FS_CALLANSWERDATE_KEY: Final = FREESWITCH_VENDOR << 8 | 21
FS_DIRECTION_KEY: Final = FREESWITCH_VENDOR << 8 | 24
FS_OTHER_LEG_ID_KEY: Final = FREESWITCH_VENDOR << 8 | 25
# Asterisk, vendor 22736 (cdr_radius.c): one Stop per call with Asterisk-Src / -Dst
# and Asterisk-Bill-Sec (the talk time, a 4-octet integer) and no Calling/Called-
# Station-Id nor Acct-Session-Time.
ASTERISK_VENDOR: Final = 22736
AST_SRC_KEY: Final = ASTERISK_VENDOR << 8 | 102
AST_DST_KEY: Final = ASTERISK_VENDOR << 8 | 103
AST_BILL_SEC_KEY: Final = ASTERISK_VENDOR << 8 | 114
_KEPT_VSAS: Final = {
    FREESWITCH_VENDOR: frozenset((4, 5, 13, 20, 21, 24, 25)),
    ASTERISK_VENDOR: frozenset((102, 103, 114)),
}

# Acct-Terminate-Cause names (RFC 2866 §5.10).
TERMINATE_CAUSES: Final = {
    1: "User-Request",
    2: "Lost-Carrier",
    3: "Lost-Service",
    4: "Idle-Timeout",
    5: "Session-Timeout",
    6: "Admin-Reset",
    7: "Admin-Reboot",
    8: "Port-Error",
    9: "NAS-Error",
    10: "NAS-Request",
    11: "NAS-Reboot",
    12: "Port-Unneeded",
    13: "Port-Preempted",
    14: "Port-Suspended",
    15: "Service-Unavailable",
    16: "Callback",
    17: "User-Error",
    18: "Host-Request",
}

HEADER_LEN: Final = 20
MAX_PACKET_LEN: Final = 4096  # RFC 2865 §3
ZERO16: Final = bytes(16)
_HDR: Final = struct.Struct("!BBH")
_U32: Final = struct.Struct("!I")
_ATTR_U32: Final = struct.Struct("!BBI")
_VSA_HDR: Final = struct.Struct("!BBIBB")
_MA_ZERO_ATTR: Final = bytes((MESSAGE_AUTHENTICATOR, 18)) + ZERO16
_MA_HDR: Final = bytes((MESSAGE_AUTHENTICATOR, 18))
# The struct methods bound once: compiled code calls a bound method directly, while
# `_HDR.pack(...)` looks the method up by name on every call (round 9a).
_HDR_PACK: Final = _HDR.pack
_U32_UNPACK: Final = _U32.unpack
_VSA_HDR_PACK: Final = _VSA_HDR.pack


_MD5_BLOCK: Final = 64
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_PADS_MAX = 1024  # secrets whose HMAC pads are kept (one per RADIUS client in practice)
_pads: dict[bytes, tuple[Any, Any]] = {}


def _md5_constructor() -> Callable[[bytes], Any]:
    """CPython's own MD5 (the ``_md5`` module) when built in, else hashlib's (OpenSSL).
    The same digests; for RADIUS's short messages the built-in one costs ~40 % fewer
    instructions: OpenSSL 3 allocates, copies and frees an EVP context for every
    digest(), which is most of the work at 100-200 octets (docs/performance.md, round 8b)."""
    try:
        md5: Callable[[bytes], Any] = importlib.import_module("_md5").md5
    except ImportError:  # a CPython built without its own hashes
        return hashlib.md5
    return md5


_MD5: Final = _md5_constructor()
# The MD5 object's methods, taken from its type once: called with the object, they
# skip the look-up by name that `state.copy()` makes on every call (round 9a).
_MD5_TYPE: Final[Any] = type(_MD5(b""))
_MD5_COPY: Final = _MD5_TYPE.copy
_MD5_UPDATE: Final = _MD5_TYPE.update
_MD5_DIGEST: Final = _MD5_TYPE.digest
_compare_digest: Final = hmac.compare_digest


def md5(data: bytes) -> bytes:
    """MD5 digest of `data` (the RADIUS authenticators; not for security elsewhere)."""
    digest: bytes = _MD5_DIGEST(_MD5(data))
    return digest


def hmac_md5(secret: bytes, message: bytes) -> bytes:
    """HMAC-MD5 (RFC 2104) from MD5 states of the padded secret, computed once per
    secret: half the cost of hmac.digest, which derives them for every packet."""
    pads = _pads.get(secret)
    if pads is None:
        key = md5(secret) if len(secret) > _MD5_BLOCK else secret
        key = key.ljust(_MD5_BLOCK, b"\0")
        pads = (_MD5(key.translate(_IPAD)), _MD5(key.translate(_OPAD)))
        if len(_pads) >= _PADS_MAX:
            del _pads[next(iter(_pads))]
        _pads[secret] = pads
    inner = _MD5_COPY(pads[0])
    _MD5_UPDATE(inner, message)
    outer = _MD5_COPY(pads[1])
    _MD5_UPDATE(outer, _MD5_DIGEST(inner))
    digest: bytes = _MD5_DIGEST(outer)
    return digest


class MalformedPacket(ValueError):
    """The datagram is not a well-formed RADIUS packet (RFC 2865 §3: silently discarded)."""


class Packet:
    """A decoded packet: header, first value of each attribute, Cisco VSAs by sub-type.
    A plain class with its own __init__ (compiled, a native class; a dataclass's
    __init__ is interpreted even compiled), built per request."""

    __slots__ = (
        "attrs",
        "authenticator",
        "cisco",
        "code",
        "identifier",
        "ma_offset",
        "proxy_state",
        "raw",
    )

    def __init__(
        self,
        code: int,
        identifier: int,
        authenticator: bytes,
        raw: bytes,  # the packet up to its Length field; trailing padding dropped
        attrs: dict[int, bytes] | None = None,
        cisco: dict[int, bytes] | None = None,
        ma_offset: int = -1,  # offset of the Message-Authenticator value, -1 if absent
        proxy_state: bytes = b"",  # RFC 2865 §5.33: every Proxy-State, encoded, in order
    ) -> None:
        self.code = code
        self.identifier = identifier
        self.authenticator = authenticator
        self.raw = raw
        self.attrs: dict[int, bytes] = {} if attrs is None else attrs
        self.cisco: dict[int, bytes] = {} if cisco is None else cisco
        self.ma_offset = ma_offset
        self.proxy_state = proxy_state

    def _values(self) -> tuple[object, ...]:
        return (self.code, self.identifier, self.authenticator, self.raw, self.attrs,
                self.cisco, self.ma_offset, self.proxy_state)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Packet)
        return self._values() == other._values()

    def __repr__(self) -> str:
        return (
            f"Packet(code={self.code!r}, identifier={self.identifier!r}, "
            f"authenticator={self.authenticator!r}, raw={self.raw!r}, attrs={self.attrs!r}, "
            f"cisco={self.cisco!r}, ma_offset={self.ma_offset!r}, "
            f"proxy_state={self.proxy_state!r})"
        )

    def text(self, attr_type: int) -> str:
        """An attribute as text ("" when absent); invalid UTF-8 is replaced, never fatal."""
        value = self.attrs.get(attr_type)
        if not value:
            return ""
        try:  # strict UTF-8 first: mypyc's own decoder, not the codec registry's
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("utf-8", "replace")

    def integer(self, attr_type: int, default: int = 0) -> int:
        """A 4-octet integer attribute; MalformedPacket when it is not 4 octets."""
        value = self.attrs.get(attr_type)
        if value is None:
            return default
        if len(value) != 4:
            raise MalformedPacket(f"attribute {attr_type} must be 4 octets")
        result: int = _U32_UNPACK(value)[0]
        return result

    def cisco_value(self, sub_type: int) -> str:
        """A Cisco h323-* VSA value without its "name=" prefix ("" when absent)."""
        value = self.cisco.get(sub_type)
        if not value:
            return ""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("utf-8", "replace")
        equals = text.find("=")
        return text[equals + 1 :] if equals >= 0 else text


def decode(data: bytes) -> Packet:
    """Decode a datagram; MalformedPacket for a bad header or attribute length."""
    size = len(data)
    if size < HEADER_LEN:
        raise MalformedPacket("shorter than a RADIUS header")
    code, identifier, length = data[0], data[1], data[2] << 8 | data[3]
    if length < HEADER_LEN or length > MAX_PACKET_LEN:
        raise MalformedPacket(f"bad Length {length}")
    if length > size:
        raise MalformedPacket(f"truncated: Length {length}, {size} octets received")
    # RFC 2865 §3: octets beyond Length are padding and ignored.
    raw = data if length == size else data[:length]
    packet = Packet(code, identifier, raw[4:20], raw)
    _decode_attributes(raw, length, packet)
    return packet


def _decode_attributes(raw: bytes, length: int, packet: Packet) -> None:
    attrs = packet.attrs
    pos = HEADER_LEN
    while pos < length:
        if pos + 2 > length:
            raise MalformedPacket("attribute header past the end")
        attr_type = raw[pos]
        attr_len = raw[pos + 1]
        end = pos + attr_len
        if attr_len < 2 or end > length:
            raise MalformedPacket(f"attribute {attr_type} has a bad length {attr_len}")
        if attr_type == VENDOR_SPECIFIC:
            _decode_vsa(raw, pos, end, packet)
        elif attr_type == MESSAGE_AUTHENTICATOR:
            # RFC 3579 §3.2: exactly 16 octets, at most one.
            if attr_len != 18 or packet.ma_offset >= 0:
                raise MalformedPacket("bad or repeated Message-Authenticator")
            packet.ma_offset = pos + 2
            attrs[attr_type] = raw[pos + 2 : end]
        elif attr_type == PROXY_STATE:
            packet.proxy_state += raw[pos:end]
        elif attr_type not in attrs:
            attrs[attr_type] = raw[pos + 2 : end]
        pos = end


def _decode_vsa(raw: bytes, pos: int, end: int, packet: Packet) -> None:
    # RFC 2865 §5.26: Vendor-Id then (for Cisco) type/length/value sub-attributes.
    if end - pos < 6:
        raise MalformedPacket("Vendor-Specific shorter than its Vendor-Id")
    # Vendor-Id 9 (Cisco) by its octets: 0, 0, 0, 9 (no struct call per VSA)
    if raw[pos + 5] != CISCO_VENDOR or raw[pos + 4] or raw[pos + 3] or raw[pos + 2]:
        vendor = raw[pos + 2] << 24 | raw[pos + 3] << 16 | raw[pos + 4] << 8 | raw[pos + 5]
        kept = _KEPT_VSAS.get(vendor)
        if kept is not None:
            _softswitch_vsa(raw, pos + 6, end, vendor << 8, kept, packet.attrs)
        return  # other vendors: not needed
    cisco = packet.cisco
    sub = pos + 6
    while sub < end:
        if sub + 2 > end:
            raise MalformedPacket("Cisco VSA header past the end")
        sub_type = raw[sub]
        sub_end = sub + raw[sub + 1]
        if sub_end - sub < 2 or sub_end > end:
            raise MalformedPacket(f"Cisco VSA {sub_type} has a bad length")
        if sub_type not in cisco:
            cisco[sub_type] = raw[sub + 2 : sub_end]
        sub = sub_end


def _softswitch_vsa(
    raw: bytes, sub: int, end: int, base: int, kept: frozenset[int], attrs: dict[int, bytes]
) -> None:
    """The ``kept`` sub-attributes of a FreeSWITCH or Asterisk VSA, first of each. A
    damaged sub-attribute ends the look, never the packet (they fill in numbers, usage
    and a cause that the standard attributes did not give)."""
    while sub + 2 <= end:
        sub_end = sub + raw[sub + 1]
        if sub_end - sub < 2 or sub_end > end:
            return
        if raw[sub] in kept and base | raw[sub] not in attrs:
            attrs[base | raw[sub]] = raw[sub + 2 : sub_end]
        sub = sub_end


def verify_message_authenticator(packet: Packet, secret: bytes, vector: bytes) -> bool:
    """Check Message-Authenticator (RFC 2869 §5.14, RFC 3579 §3.2) with `vector` as
    the authenticator field: the packet's own for Access-Request, 16 zeros for
    Accounting/Disconnect/CoA requests (RFC 5176 §3.3), the request's for replies."""
    off = packet.ma_offset
    if off < 0:
        return False
    raw = packet.raw
    if vector is packet.authenticator:  # an Access-Request's own: the packet as it is
        msg = b"".join((raw[:off], ZERO16, raw[off + 16 :]))
    else:
        msg = b"".join((raw[:4], vector, raw[20:off], ZERO16, raw[off + 16 :]))
    return _compare_digest(hmac_md5(secret, msg), raw[off : off + 16])


def verify_request_authenticator(packet: Packet, secret: bytes) -> bool:
    """RFC 2866 §3 (and RFC 5176 §3.3): MD5(Code+Id+Length+16 zeros+Attributes+secret)."""
    raw = packet.raw
    expected = md5(raw[:4] + ZERO16 + raw[20:] + secret)
    return _compare_digest(expected, raw[4:20])


def verify_response_authenticator(packet: Packet, secret: bytes, request_auth: bytes) -> bool:
    """RFC 2865 §3: MD5(Code+Id+Length+Request Authenticator+Attributes+secret)."""
    raw = packet.raw
    expected = md5(raw[:4] + request_auth + raw[20:] + secret)
    return _compare_digest(expected, raw[4:20])


def decrypt_password(value: bytes, secret: bytes, request_auth: bytes) -> bytes:
    """User-Password (RFC 2865 §5.2): XOR with chained MD5(secret + previous block)."""
    if not value or len(value) % 16 or len(value) > 128:
        raise MalformedPacket("User-Password must be 16 to 128 octets, a multiple of 16")
    out = []
    previous = request_auth
    for start in range(0, len(value), 16):
        block = value[start : start + 16]
        pad = md5(secret + previous)
        plain = int.from_bytes(block, "big") ^ int.from_bytes(pad, "big")
        out.append(plain.to_bytes(16, "big"))
        previous = block
    return b"".join(out).rstrip(b"\x00")


# -- encoding ---------------------------------------------------------------------


def attr_u32(attr_type: int, value: int) -> bytes:
    """A 4-octet integer attribute (values outside 0..2**32-1 are clamped)."""
    return _ATTR_U32.pack(attr_type, 6, min(max(value, 0), 0xFFFFFFFF))


def attr_bytes(attr_type: int, value: bytes) -> bytes:
    """A string/octets attribute, cut to the 253 octets an attribute can carry."""
    value = value[:253]
    return bytes((attr_type, len(value) + 2)) + value


def attr_ipv4(attr_type: int, address: str) -> bytes:
    """An ipaddr attribute; ValueError when `address` is not IPv4."""
    return bytes((attr_type, 6)) + ipaddress.IPv4Address(address).packed


def cisco_vsa(sub_type: int, value: bytes) -> bytes:
    """A Cisco (vendor 9) VSA; `value` is the full "h323-name=value" string."""
    value = value[:247]
    return _VSA_HDR_PACK(
        VENDOR_SPECIFIC, len(value) + 8, CISCO_VENDOR, sub_type, len(value) + 2
    ) + (value)


def encode_reply(
    code: int, identifier: int, request_auth: bytes, attrs: bytes, secret: bytes
) -> bytes:
    """A reply with Message-Authenticator first (BlastRADIUS, CVE-2024-3596), then the
    Response Authenticator (RFC 2865 §3) computed over the signed packet."""
    length = HEADER_LEN + 18 + len(attrs)
    if length > MAX_PACKET_LEN:
        raise ValueError("reply longer than 4096 octets")
    header = _HDR_PACK(code, identifier, length)
    mac = hmac_md5(secret, b"".join((header, request_auth, _MA_ZERO_ATTR, attrs)))
    response_auth = md5(b"".join((header, request_auth, _MA_HDR, mac, attrs, secret)))
    return b"".join((header, response_auth, _MA_HDR, mac, attrs))


def encode_accounting_response(
    identifier: int, request_auth: bytes, secret: bytes, attrs: bytes = b""
) -> bytes:
    """An Accounting-Response (RFC 2866 §4.2), normally without attributes (only the
    echoed Proxy-State), with its Response Authenticator."""
    header = _HDR_PACK(ACCOUNTING_RESPONSE, identifier, HEADER_LEN + len(attrs))
    return b"".join((header, md5(header + request_auth + attrs + secret), attrs))


def encode_request(code: int, identifier: int, attrs: bytes, secret: bytes) -> bytes:
    """An Accounting/Disconnect/CoA request: Message-Authenticator first, computed with a
    zero authenticator, then the Request Authenticator over it (RFC 5176 §3.3)."""
    length = HEADER_LEN + 18 + len(attrs)
    if length > MAX_PACKET_LEN:
        raise ValueError("request longer than 4096 octets")
    header = _HDR_PACK(code, identifier, length)
    mac = hmac_md5(secret, b"".join((header, ZERO16, _MA_ZERO_ATTR, attrs)))
    body = b"".join((_MA_HDR, mac, attrs))
    request_auth = md5(b"".join((header, ZERO16, body, secret)))
    return b"".join((header, request_auth, body))


def encode_access_request(
    identifier: int, authenticator: bytes, attrs: bytes, secret: bytes
) -> bytes:
    """An Access-Request with a random `authenticator` (RFC 2865 §3) and the
    Message-Authenticator first, computed over it (RFC 3579 §3.2)."""
    length = HEADER_LEN + 18 + len(attrs)
    if length > MAX_PACKET_LEN or len(authenticator) != 16:
        raise ValueError("request longer than 4096 octets or authenticator not 16 octets")
    header = _HDR_PACK(ACCESS_REQUEST, identifier, length)
    mac = hmac_md5(secret, b"".join((header, authenticator, _MA_ZERO_ATTR, attrs)))
    return b"".join((header, authenticator, _MA_HDR, mac, attrs))


# Pre-encoded "name=" prefixes of the Cisco reply VSAs.
_CREDIT_AMOUNT: Final = b"h323-credit-amount="
_CREDIT_TIME: Final = b"h323-credit-time="
_RETURN_CODE: Final = b"h323-return-code="
_BILLING_MODEL: Final = b"h323-billing-model="
_CURRENCY: Final = b"h323-currency="


def _fractions(decimals: int) -> tuple[bytes, ...]:
    """The ".xx" of every count of minor units below one unit: b".00" .. b".99" for 2
    decimals, (b"",) for none (JPY)."""
    if decimals <= 0:
        return (b"",)
    return tuple(b".%0*d" % (decimals, n) for n in range(10**decimals))


_FORMS: dict[int, tuple[int, tuple[bytes, ...]]] = {}


def _amount_form(decimals: int) -> tuple[int, tuple[bytes, ...]]:
    """How a currency of `decimals` writes an amount: micro-units per minor unit, and
    the ".xx" text of each count of them below one unit (decimals within 0..6); made
    once per number of decimals (4 decimals: 10,000 texts, and only if asked)."""
    decimals = min(max(decimals, 0), 6)
    form = _FORMS.get(decimals)
    if form is None:
        form = _FORMS[decimals] = (10 ** (6 - decimals), _fractions(decimals))
    return form


def format_credit_amount(credit_micros: int, decimals: int = 2) -> bytes:
    """Micro-units as a decimal with `decimals` places (the currency's minor unit: 2 for
    EUR, 0 for JPY, 3 for KWD), rounded down (never shows more than there is)."""
    step, fractions = _amount_form(decimals)
    return _credit_text(credit_micros, step, fractions)


def _credit_text(credit_micros: int, step: int, fractions: tuple[bytes, ...]) -> bytes:
    whole = credit_micros // 1_000_000
    if whole < 0:
        return b"0" + fractions[0]
    # (str, encode and a tuple index: mypyc's own operations; b"%d" % ... is generic)
    return str(whole).encode("ascii") + fractions[credit_micros % 1_000_000 // step]


# Constant reply pieces, encoded once (the reply templates of the hot path).
_RETURN_CODE_OK: Final = cisco_vsa(H323_RETURN_CODE, _RETURN_CODE + b"0")
_BILLING_MODELS: dict[int, bytes] = {}


def _billing_model_vsa(billing_model: int) -> bytes:
    vsa = _BILLING_MODELS.get(billing_model)
    if vsa is None:
        vsa = cisco_vsa(H323_BILLING_MODEL, _BILLING_MODEL + b"%d" % billing_model)
        _BILLING_MODELS[billing_model] = vsa
    return vsa


class _Currency:
    """A currency's reply pieces, made once per currency (not per request): its
    h323-currency VSA (b"" for no currency) and how h323-credit-amount is written in
    it (micro-units per minor unit, the ".xx" texts of its minor-unit decimals)."""

    __slots__ = ("fractions", "step", "vsa")

    def __init__(self, vsa: bytes, step: int, fractions: tuple[bytes, ...]) -> None:
        self.vsa: Final = vsa
        self.step: Final = step
        self.fractions: Final = fractions


_CURRENCIES: dict[str, _Currency] = {}


def _currency(currency: str) -> _Currency:
    cur = _CURRENCIES.get(currency)
    if cur is None:
        # ISO 4217's minor unit (2 for a code without one, and for no currency)
        step, fractions = _amount_form(minor_unit(currency))
        vsa = b""
        if currency:
            vsa = cisco_vsa(H323_CURRENCY, _CURRENCY + currency.encode("ascii", "replace"))
        cur = _Currency(vsa, step, fractions)
        if len(_CURRENCIES) < 1000:  # ISO 4217 codes: a handful in practice
            _CURRENCIES[currency] = cur
    return cur


def _vsa_heads(sub_type: int) -> tuple[bytes, ...]:
    """The 8 octets before a Cisco VSA's value, by the value's length (0..247)."""
    return tuple(
        _VSA_HDR_PACK(VENDOR_SPECIFIC, n + 8, CISCO_VENDOR, sub_type, n + 2) for n in range(248)
    )


# Access-Accept pieces, encoded once: the attribute headers of the timers and the
# Cisco VSA headers by value length (struct's pack is a generic call per attribute).
_TIMEOUT_HDR: Final = bytes((SESSION_TIMEOUT, 6))
_INTERIM_HDR: Final = bytes((ACCT_INTERIM_INTERVAL, 6))
_AMOUNT_HEADS: Final = _vsa_heads(H323_CREDIT_AMOUNT)
_TIME_HEADS: Final = _vsa_heads(H323_CREDIT_TIME)


def _cisco_head(heads: tuple[bytes, ...], sub_type: int, size: int) -> bytes:
    if size < len(heads):
        return heads[size]
    # longer than a VSA can carry: struct.error, as cisco_vsa's pack raises
    return _VSA_HDR_PACK(VENDOR_SPECIFIC, size + 8, CISCO_VENDOR, sub_type, size + 2)


def accept_attributes(
    session_timeout_s: int,
    interim_interval_s: int,
    cisco: bool,
    credit_micros: int = 0,
    currency: str = "",
    billing_model: int = 1,
) -> bytes:
    """Access-Accept attributes: Session-Timeout, Acct-Interim-Interval and, for Cisco
    gateways, h323-credit-amount/-time, h323-return-code=0, -billing-model, -currency."""
    timeout = min(max(session_timeout_s, 0), 0xFFFFFFFF)
    interim = min(max(interim_interval_s, 0), 0xFFFFFFFF)
    if not cisco:
        return b"".join(
            (_TIMEOUT_HDR, timeout.to_bytes(4, "big"), _INTERIM_HDR, interim.to_bytes(4, "big"))
        )
    cur = _currency(currency)
    amount = _credit_text(credit_micros, cur.step, cur.fractions)
    seconds = str(max(session_timeout_s, 0)).encode("ascii")
    return b"".join(
        (
            _TIMEOUT_HDR,
            timeout.to_bytes(4, "big"),
            _INTERIM_HDR,
            interim.to_bytes(4, "big"),
            _cisco_head(_AMOUNT_HEADS, H323_CREDIT_AMOUNT, len(_CREDIT_AMOUNT) + len(amount)),
            _CREDIT_AMOUNT,
            amount,
            _cisco_head(_TIME_HEADS, H323_CREDIT_TIME, len(_CREDIT_TIME) + len(seconds)),
            _CREDIT_TIME,
            seconds,
            _RETURN_CODE_OK,
            _billing_model_vsa(billing_model),
            cur.vsa,
        )
    )  # fmt: skip


def authentication_attributes(credit_micros: int, currency: str, billing_model: int) -> bytes:
    """The Access-Accept of a debit-card authentication (Cisco "Debit Card Application":
    h323-credit-amount for the IVR to announce, h323-return-code=0, -billing-model,
    -currency); no Session-Timeout or h323-credit-time: no call is authorized yet."""
    cur = _currency(currency)
    amount = _CREDIT_AMOUNT + _credit_text(credit_micros, cur.step, cur.fractions)
    return b"".join(
        (
            cisco_vsa(H323_CREDIT_AMOUNT, amount),
            _RETURN_CODE_OK,
            _billing_model_vsa(billing_model),
            cur.vsa,
        )
    )


def class_attribute(value: bytes) -> bytes:
    """A Class attribute (RFC 2865 §5.25); b"" when the value does not fit (253)."""
    if not value or len(value) > 253:
        return b""
    return bytes((CLASS, len(value) + 2)) + value


def reject_attributes(message: str, return_code: int | None) -> bytes:
    """Access-Reject attributes: Reply-Message and, for Cisco, h323-return-code."""
    parts = []
    if message:
        parts.append(attr_bytes(REPLY_MESSAGE, message.encode("utf-8")))
    if return_code is not None:
        parts.append(cisco_vsa(H323_RETURN_CODE, _RETURN_CODE + b"%d" % return_code))
    return b"".join(parts)


def dm_attributes(
    session_id: str,
    user_name: str,
    nas_ip: str,
    event_timestamp: int,
    session_timeout_s: int = -1,
    *,
    conf_id: str = "",
    call_origin: str = "",
) -> bytes:
    """Disconnect/CoA identification attributes (RFC 5176 §3): Acct-Session-Id (the
    gateway's own), User-Name, NAS-IP-Address (when IPv4), Event-Timestamp, optional
    Session-Timeout; for a Cisco gateway also the h323-conf-id and h323-call-origin VSAs
    its POD handler matches on ("RADIUS Packet of Disconnect", Cisco IOS 12.2(11)T+)."""
    parts = [attr_bytes(ACCT_SESSION_ID, session_id.encode("utf-8"))]
    if user_name:
        parts.append(attr_bytes(USER_NAME, user_name.encode("utf-8")))
    # A NAS address that is not IPv4 is left out: session id and user identify the call.
    with contextlib.suppress(ValueError):
        parts.append(attr_ipv4(NAS_IP_ADDRESS, nas_ip))
    if conf_id:  # the same content the gateway sent for this call
        parts.append(cisco_vsa(H323_CONF_ID, b"h323-conf-id=" + conf_id.encode("utf-8")))
    if call_origin:  # the leg of interest
        origin = b"h323-call-origin=" + call_origin.encode("utf-8")
        parts.append(cisco_vsa(H323_CALL_ORIGIN, origin))
    parts.append(attr_u32(EVENT_TIMESTAMP, event_timestamp))
    if session_timeout_s >= 0:
        parts.append(attr_u32(SESSION_TIMEOUT, session_timeout_s))
    return b"".join(parts)


@dataclass(frozen=True)
class DmAnswer:
    """A verified Disconnect/CoA ACK or NAK (RFC 5176 §2.3)."""

    code: int
    identifier: int
    error_cause: int  # 0 when absent


def decode_dm_answer(data: bytes, secret: bytes, request_auth: bytes) -> DmAnswer:
    """Decode and verify an ACK/NAK against its request; MalformedPacket when it is
    malformed, not an answer, or its authenticators do not match."""
    packet = decode(data)
    if packet.code not in (DISCONNECT_ACK, DISCONNECT_NAK, COA_ACK, COA_NAK):
        raise MalformedPacket(f"code {packet.code} is not a Disconnect/CoA answer")
    if not verify_response_authenticator(packet, secret, request_auth):
        raise MalformedPacket("bad Response Authenticator")
    if packet.ma_offset >= 0 and not verify_message_authenticator(packet, secret, request_auth):
        raise MalformedPacket("bad Message-Authenticator")
    return DmAnswer(packet.code, packet.identifier, packet.integer(ERROR_CAUSE))
