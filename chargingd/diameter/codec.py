"""Diameter wire format (RFC 6733 §3, §4): bytes in, messages out, no I/O.

A sans-IO struct codec, as radius/ has one: decoding splits a message into its
header fields and a flat list of AVPs (code, flags, vendor, payload); Grouped
AVPs are split on demand with the same function. Every length is checked: a
header, an AVP or a padding that does not fit raises ``Malformed`` carrying the
Result-Code to answer with and the Failed-AVP to report (RFC 6733 §7.5).
Encoding builds AVPs from cached header prefixes and ``struct``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

HEADER_LEN = 20
VERSION = 1
# Command flags (RFC 6733 §3): Request, Proxiable, Error, potentially reTransmitted.
FLAG_R = 0x80
FLAG_P = 0x40
FLAG_E = 0x20
FLAG_T = 0x10
FLAGS_RESERVED = 0x0F
# AVP flags (RFC 6733 §4.1): Vendor-specific, Mandatory, (deprecated) Protected.
AVP_V = 0x80
AVP_M = 0x40
AVP_P = 0x20
AVP_RESERVED = 0x1F

# Result-Codes this module raises (RFC 6733 §7.1).
UNSUPPORTED_VERSION = 5011
INVALID_BIT_IN_HEADER = 5013
INVALID_AVP_LENGTH = 5014
INVALID_MESSAGE_LENGTH = 5015
INVALID_AVP_BITS = 3009
INVALID_AVP_VALUE = 5004

_HDR = struct.Struct("!I4sIII")  # version+length, flags+code, app id, hop-by-hop, end-to-end
_AVP = struct.Struct("!II")  # code, flags+length (then the vendor id when V is set)
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


class Malformed(ValueError):
    """Bytes that are not a valid Diameter message or AVP.

    ``result_code`` is what to answer (5014 INVALID_AVP_LENGTH, ...); ``failed_avp``
    the offending AVP as it should appear inside Failed-AVP (RFC 6733 §7.5); b"" when
    the fault is in the header. ``fatal``: the framing is lost (bad message length),
    the connection must be closed.
    """

    def __init__(
        self, message: str, result_code: int, failed_avp: bytes = b"", *, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.failed_avp = failed_avp
        self.fatal = fatal


class Avp:
    """One decoded AVP; ``data`` is its payload without header and padding."""

    __slots__ = ("code", "data", "flags", "vendor")

    def __init__(self, code: int, flags: int, vendor: int, data: bytes) -> None:
        self.code = code
        self.flags = flags
        self.vendor = vendor
        self.data = data

    def __repr__(self) -> str:
        return f"Avp({self.code}, flags={self.flags:#x}, vendor={self.vendor}, {self.data!r})"

    @property
    def mandatory(self) -> bool:
        return bool(self.flags & AVP_M)

    def u32(self) -> int:
        """Unsigned32 / Enumerated payload (RFC 6733 §4.2)."""
        if len(self.data) != 4:
            raise Malformed(
                f"AVP {self.code}: Unsigned32 of {len(self.data)} bytes",
                INVALID_AVP_LENGTH,
                self.raw(),
            )
        value: int = _U32.unpack(self.data)[0]
        return value

    def u64(self) -> int:
        """Unsigned64 payload."""
        if len(self.data) != 8:
            raise Malformed(
                f"AVP {self.code}: Unsigned64 of {len(self.data)} bytes",
                INVALID_AVP_LENGTH,
                self.raw(),
            )
        value: int = _U64.unpack(self.data)[0]
        return value

    def i32(self) -> int:
        """Integer32 payload."""
        if len(self.data) != 4:
            raise Malformed(
                f"AVP {self.code}: Integer32 of {len(self.data)} bytes",
                INVALID_AVP_LENGTH,
                self.raw(),
            )
        value: int = _I32.unpack(self.data)[0]
        return value

    def i64(self) -> int:
        """Integer64 payload."""
        if len(self.data) != 8:
            raise Malformed(
                f"AVP {self.code}: Integer64 of {len(self.data)} bytes",
                INVALID_AVP_LENGTH,
                self.raw(),
            )
        value: int = _I64.unpack(self.data)[0]
        return value

    def text(self) -> str:
        """UTF8String / DiameterIdentity payload; invalid UTF-8 is 5004 INVALID_AVP_VALUE."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"AVP {self.code}: not UTF-8", INVALID_AVP_VALUE, self.raw()) from None

    def group(self) -> list[Avp]:
        """The AVPs inside a Grouped AVP (RFC 6733 §4.4)."""
        try:
            return decode_avps(self.data, 0, len(self.data))
        except Malformed as exc:
            # The Failed-AVP names the outer AVP with the inner fault (RFC 6733 §7.5).
            raise Malformed(str(exc), exc.result_code, self.raw()) from None

    def address(self) -> str:
        """Address payload (RFC 6733 §4.3.1): 2-byte family, then the address."""
        family, rest = self.data[:2], self.data[2:]
        if family == b"\0\x01" and len(rest) == 4:
            return str(ipaddress.IPv4Address(rest))
        if family == b"\0\x02" and len(rest) == 16:
            return str(ipaddress.IPv6Address(rest))
        raise Malformed(f"AVP {self.code}: bad Address", INVALID_AVP_VALUE, self.raw())

    def raw(self) -> bytes:
        """This AVP encoded again (for Failed-AVP)."""
        return avp(self.code, self.data, vendor=self.vendor, flags=self.flags)


@dataclass(slots=True)
class Message:
    """A decoded Diameter message: header fields and its top-level AVPs in order."""

    command: int
    flags: int
    app_id: int
    hop_by_hop: int
    end_to_end: int
    avps: list[Avp] = field(default_factory=list)

    @property
    def is_request(self) -> bool:
        return bool(self.flags & FLAG_R)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_E)

    @property
    def retransmitted(self) -> bool:
        return bool(self.flags & FLAG_T)

    def get(self, code: int, vendor: int = 0) -> Avp | None:
        """The first AVP with this code and vendor, or None."""
        return find(self.avps, code, vendor)

    def all(self, code: int, vendor: int = 0) -> list[Avp]:
        """Every AVP with this code and vendor, in order."""
        return [a for a in self.avps if a.code == code and a.vendor == vendor]


def find(avps: list[Avp], code: int, vendor: int = 0) -> Avp | None:
    """The first AVP of ``avps`` with this code and vendor, or None."""
    for a in avps:
        if a.code == code and a.vendor == vendor:
            return a
    return None


# -- decoding ---------------------------------------------------------------------


def message_length(header: bytes | bytearray) -> int:
    """The Message Length of a header (its first 4+ bytes), checked for framing.

    RFC 6733 §3: version 1; the length counts the header and is a multiple of 4.
    A length that cannot be right loses the framing: ``fatal`` Malformed.
    """
    if len(header) < 4:
        raise Malformed("truncated header", INVALID_MESSAGE_LENGTH, fatal=True)
    word: int = _U32.unpack_from(header)[0]
    if word >> 24 != VERSION:
        raise Malformed(f"version {word >> 24}", UNSUPPORTED_VERSION, fatal=True)
    length = word & 0xFFFFFF
    if length < HEADER_LEN or length & 3:
        raise Malformed(f"message length {length}", INVALID_MESSAGE_LENGTH, fatal=True)
    return length


def decode(data: bytes) -> Message:
    """One whole message (exactly its Message Length bytes)."""
    if len(data) < HEADER_LEN:
        raise Malformed("truncated header", INVALID_MESSAGE_LENGTH, fatal=True)
    length = message_length(data)
    if length != len(data):
        raise Malformed(f"length {length} != {len(data)} bytes", INVALID_MESSAGE_LENGTH, fatal=True)
    _, flags_code, app_id, hbh, e2e = _HDR.unpack_from(data)
    flags = flags_code[0]
    command = int.from_bytes(flags_code[1:4], "big")
    msg = Message(command, flags, app_id, hbh, e2e)
    if flags & FLAGS_RESERVED or (flags & FLAG_E and flags & FLAG_R):
        # RFC 6733 §3: reserved bits are 0; §7.2: E is never set on a request.
        raise Malformed(f"command flags {flags:#x}", INVALID_BIT_IN_HEADER)
    msg.avps = decode_avps(data, HEADER_LEN, length)
    return msg


def decode_avps(data: bytes, start: int, end: int) -> list[Avp]:
    """The AVPs laid out in ``data[start:end]``; each must fit, padding included."""
    out: list[Avp] = []
    unpack = _AVP.unpack_from
    pos = start
    while pos < end:
        if end - pos < 8:
            raise Malformed("truncated AVP header", INVALID_AVP_LENGTH, _stub(data, pos, end))
        code, flags_len = unpack(data, pos)
        flags = flags_len >> 24
        length = flags_len & 0xFFFFFF
        head = 12 if flags & AVP_V else 8
        if length < head or pos + length > end:
            raise Malformed(
                f"AVP {code} of length {length} overruns its container",
                INVALID_AVP_LENGTH,
                _stub(data, pos, end),
            )
        if flags & AVP_RESERVED:
            raise Malformed(
                f"AVP {code} flags {flags:#x}",
                INVALID_AVP_BITS,
                bytes(data[pos : pos + length]) + _PAD[length & 3],
            )
        vendor = _U32.unpack_from(data, pos + 8)[0] if head == 12 else 0
        out.append(Avp(code, flags, vendor, bytes(data[pos + head : pos + length])))
        pos += (length + 3) & ~3
    if pos != end:
        # The last AVP's padding runs past the end (RFC 6733 §4: padding is counted
        # in the message length, not in the AVP length).
        raise Malformed("AVP padding overruns its container", INVALID_AVP_LENGTH)
    return out


def _stub(data: bytes, pos: int, end: int) -> bytes:
    """RFC 6733 §7.5: for an AVP whose length cannot be right, its header (as far as it
    is there) with a zero payload is enough in Failed-AVP."""
    head = bytes(data[pos : min(pos + 8, end)]).ljust(8, b"\0")
    code, flags_len = struct.unpack("!II", head)
    flags = flags_len >> 24 & ~AVP_V
    return avp(code, b"\0\0\0\0", flags=flags)


# -- encoding ---------------------------------------------------------------------

_HEADS: dict[tuple[int, int, int], tuple[bytes, int]] = {}


def _head(code: int, flags: int, vendor: int) -> tuple[bytes, int]:
    key = (code, flags, vendor)
    cached = _HEADS.get(key)
    if cached is None:
        if vendor:
            flags |= AVP_V
            cached = (struct.pack("!IB", code, flags), 12)
        else:
            flags &= ~AVP_V
            cached = (struct.pack("!IB", code, flags), 8)
        if len(_HEADS) < 4096:
            _HEADS[key] = cached
    return cached


def avp(code: int, data: bytes, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """One AVP with its header and padding; the V flag follows ``vendor``."""
    prefix, head = _head(code, flags, vendor)
    length = head + len(data)
    vid = _U32.pack(vendor) if vendor else b""
    return prefix + length.to_bytes(3, "big") + vid + data + _PAD[length & 3]


def u32(code: int, value: int, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """An Unsigned32 / Enumerated AVP."""
    return avp(code, _U32.pack(value), vendor=vendor, flags=flags)


def u64(code: int, value: int, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """An Unsigned64 AVP."""
    return avp(code, _U64.pack(value), vendor=vendor, flags=flags)


def i32(code: int, value: int, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """An Integer32 AVP."""
    return avp(code, _I32.pack(value), vendor=vendor, flags=flags)


def i64(code: int, value: int, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """An Integer64 AVP."""
    return avp(code, _I64.pack(value), vendor=vendor, flags=flags)


def utf8(code: int, value: str, *, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """A UTF8String / DiameterIdentity AVP."""
    return avp(code, value.encode("utf-8"), vendor=vendor, flags=flags)


def grouped(code: int, *children: bytes, vendor: int = 0, flags: int = AVP_M) -> bytes:
    """A Grouped AVP of already encoded AVPs."""
    return avp(code, b"".join(children), vendor=vendor, flags=flags)


def address(code: int, ip: str, *, flags: int = AVP_M) -> bytes:
    """An Address AVP (RFC 6733 §4.3.1) of an IPv4 or IPv6 address."""
    parsed = ipaddress.ip_address(ip)
    family = b"\0\x01" if parsed.version == 4 else b"\0\x02"
    return avp(code, family + parsed.packed, flags=flags)


def encode(
    command: int, flags: int, app_id: int, hop_by_hop: int, end_to_end: int, body: bytes
) -> bytes:
    """A whole message of already encoded AVPs (each padded, so the length is a multiple of 4)."""
    length = HEADER_LEN + len(body)
    return (
        _HDR.pack(
            VERSION << 24 | length,
            bytes((flags,)) + command.to_bytes(3, "big"),
            app_id,
            hop_by_hop,
            end_to_end,
        )
        + body
    )


def encode_message(msg: Message) -> bytes:
    """A decoded message encoded again (tests, relaying)."""
    body = b"".join(avp(a.code, a.data, vendor=a.vendor, flags=a.flags) for a in msg.avps)
    return encode(msg.command, msg.flags, msg.app_id, msg.hop_by_hop, msg.end_to_end, body)


class Framer:
    """Cuts a TCP byte stream into whole messages (RFC 6733 §3: the length frames them).

    ``feed`` returns the complete messages so far; a length that cannot be right
    raises a fatal ``Malformed`` (the stream cannot be resynchronised: close it).
    """

    def __init__(self, max_length: int) -> None:
        self._buf = bytearray()
        self._max = max_length

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; the whole messages now available, oldest first."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 4:
            length = message_length(buf[pos : pos + 4])
            if length > self._max:
                raise Malformed(f"message of {length} bytes", INVALID_MESSAGE_LENGTH, fatal=True)
            if len(buf) - pos < length:
                break
            out.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out
