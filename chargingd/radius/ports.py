"""RADIUS ports: bound with SO_REUSEPORT (worker processes), refused if another program holds one.

Apart from intake.py, which is compiled with mypyc (setup.py): an exception class
inheriting OSError cannot be compiled, and none of this runs per packet.

Spreading (``spread_by_authenticator``): with N processes in a port's SO_REUSEPORT
group the kernel would pick a socket by a hash of the source address and port, so a
gateway that sends all its RADIUS from one socket lands on one process and the others
idle. A classic BPF program (SO_ATTACH_REUSEPORT_CBPF) picks the socket instead from
the Request Authenticator (its four 32-bit words XORed), modulo N: random per Access-Request
(RFC 2865 §3), an MD5 per Accounting-Request, so requests spread evenly whatever the
source port, while a retransmission (same bytes: same Identifier and Authenticator)
goes where the original went and is answered from that process's duplicate cache.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct

log = logging.getLogger("chargingd.radius")

# linux/socket.h (asm-generic): not in Python's socket module.
SO_ATTACH_REUSEPORT_CBPF = 51
# linux/filter.h, classic BPF opcodes.
_BPF_LD_W_ABS = 0x20  # A = 32-bit word at packet offset k (network order)
_BPF_LD_W_IND = 0x40  # A = 32-bit word at packet offset X + k
_BPF_LD_B_IND = 0x50  # A = byte at packet offset X + k
_BPF_LD_LEN = 0x80  # A = the datagram's length
_BPF_LD_IMM = 0x00  # A = k
_BPF_LD_MEM = 0x60  # A = M[k]
_BPF_LDX_IMM = 0x01  # X = k
_BPF_LDX_MEM = 0x61  # X = M[k]
_BPF_ST = 0x02  # M[k] = A
_BPF_STX = 0x03  # M[k] = X
_BPF_TAX = 0x07  # X = A
_BPF_ALU_ADD_X = 0x0C  # A = A + X
_BPF_ALU_SUB_K = 0x14  # A = A - k
_BPF_ALU_MUL_K = 0x24  # A = A * k (mod 2**32)
_BPF_ALU_RSH_K = 0x74  # A = A >> k
_BPF_ALU_XOR_X = 0xAC  # A = A ^ X
_BPF_ALU_MOD_K = 0x94  # A = A % k
_BPF_JA = 0x05  # jump k forward
_BPF_JEQ_K = 0x15  # A == k ? jt : jf
_BPF_JGT_K = 0x25  # A > k ? jt : jf
_BPF_JGE_K = 0x35  # A >= k ? jt : jf
_BPF_JGT_X = 0x2D  # A > X ? jt : jf
_BPF_RET_A = 0x16  # return A
# What the program sees of a UDP datagram: its payload (the kernel pulls the UDP
# header before running it), so offset 0 is the RADIUS Code, 4..19 the Authenticator.
AUTHENTICATOR_WORD = 4
# [radius] spread: what picks a request's process. "request": the Request
# Authenticator; "user" / "ani": the User-Name / Calling-Station-Id attribute's value
# (one account's or caller's requests stay in one process: its kept fraud values,
# duplicate cache and answers; packets without it fall back to the Authenticator).
SPREAD_ATTRIBUTES = {"request": 0, "user": 1, "ani": 31}
# How far the attribute program looks: the first 16 attributes, the value's first 64
# bytes (16 words) and its last 4 (a longer value: those 68 bytes decide).
_SCAN_ATTRIBUTES = 16
_HASH_WORDS = 16
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
# Scratch memory slots of the attribute program.
_M_HASH, _M_LEN, _M_AT = 0, 1, 2

_refusal_logged = False

# One instruction of the assembler below: (opcode, jt, jf, k), where jt / jf / k of a
# jump may be a label (str), resolved to a forward distance.
_Insn = tuple[int, "int | str", "int | str", "int | str"]


def _assemble(insns: list[_Insn | str]) -> bytes:
    """Labels (str items) resolved to forward offsets; the kernel's checker refuses
    backward jumps and conditional jumps past 255 instructions (asserted here)."""
    at: dict[str, int] = {}
    code: list[_Insn] = []
    for item in insns:
        if isinstance(item, str):
            at[item] = len(code)
        else:
            code.append(item)
    out = []
    for pc, (op, jt, jf, k) in enumerate(code):
        fields = []
        for value, limit in ((jt, 255), (jf, 255), (k, 1 << 32)):
            if isinstance(value, str):
                value = at[value] - pc - 1
                assert 0 <= value < limit, (pc, value)
            fields.append(value)
        out.append(struct.pack("=HBBI", op, *fields))
    return b"".join(out)


def _authenticator_insns(sockets: int) -> list[_Insn | str]:
    return [
        (_BPF_LD_W_ABS, 0, 0, AUTHENTICATOR_WORD),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_W_ABS, 0, 0, AUTHENTICATOR_WORD + 4),
        (_BPF_ALU_XOR_X, 0, 0, 0),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_W_ABS, 0, 0, AUTHENTICATOR_WORD + 8),
        (_BPF_ALU_XOR_X, 0, 0, 0),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_W_ABS, 0, 0, AUTHENTICATOR_WORD + 12),
        (_BPF_ALU_XOR_X, 0, 0, 0),
        (_BPF_ALU_MOD_K, 0, 0, sockets),
        (_BPF_RET_A, 0, 0, 0),
    ]


def _mix_a() -> list[_Insn | str]:
    """M[hash] = (M[hash] ^ A) * FNV prime; X = the attribute's offset again."""
    return [
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_MEM, 0, 0, _M_HASH),
        (_BPF_ALU_XOR_X, 0, 0, 0),
        (_BPF_ALU_MUL_K, 0, 0, _FNV_PRIME),
        (_BPF_ST, 0, 0, _M_HASH),
        (_BPF_LDX_MEM, 0, 0, _M_AT),
    ]


def _attribute_insns(sockets: int, attribute: int) -> list[_Insn | str]:
    """Find `attribute` among the first attributes, hash its value (spread_index)."""
    insns: list[_Insn | str] = [(_BPF_LDX_IMM, 0, 0, 20)]  # X = the first attribute
    for _ in range(_SCAN_ATTRIBUTES):
        insns += [
            (_BPF_LD_LEN, 0, 0, 0),
            (_BPF_ALU_SUB_K, 0, 0, 1),
            (_BPF_JGT_X, 0, "fallback", 0),  # the type and length bytes are there
            (_BPF_LD_B_IND, 0, 0, 0),
            (_BPF_JEQ_K, "found", 0, attribute),
            (_BPF_LD_B_IND, 0, 0, 1),
            (_BPF_JGT_K, 0, "fallback", 1),  # a length < 2 is malformed: stop
            (_BPF_ALU_ADD_X, 0, 0, 0),
            (_BPF_TAX, 0, 0, 0),
        ]
    insns += ["fallback", *_authenticator_insns(sockets), "found"]
    insns += [
        (_BPF_STX, 0, 0, _M_AT),
        (_BPF_LD_B_IND, 0, 0, 1),
        (_BPF_JGT_K, 0, "malformed", 1),
        (_BPF_ALU_SUB_K, 0, 0, 2),
        (_BPF_ST, 0, 0, _M_LEN),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_IMM, 0, 0, _FNV_OFFSET),
        (_BPF_ALU_XOR_X, 0, 0, 0),  # the length first: "ab" and "ab\0\0" differ
        (_BPF_ALU_MUL_K, 0, 0, _FNV_PRIME),
        (_BPF_ST, 0, 0, _M_HASH),
        (_BPF_LDX_MEM, 0, 0, _M_AT),
    ]
    for word in range(_HASH_WORDS):  # whole words from the start
        insns += [
            (_BPF_LD_MEM, 0, 0, _M_LEN),
            (_BPF_JGE_K, 0, "tail", 4 * word + 4),
            (_BPF_LD_W_IND, 0, 0, 2 + 4 * word),
            *_mix_a(),
        ]
    insns += [
        "tail",
        (_BPF_LD_MEM, 0, 0, _M_LEN),
        (_BPF_JGE_K, 0, "short", 4),
        # The last 4 bytes (again, when the words above reached them): offset X + L - 2.
        (_BPF_ALU_ADD_X, 0, 0, 0),
        (_BPF_ALU_SUB_K, 0, 0, 2),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_LD_W_IND, 0, 0, 0),
        *_mix_a(),
        (_BPF_JA, 0, 0, "finish"),
        "short",  # 0..3 bytes, one by one
    ]
    for byte in range(3):
        insns += [
            (_BPF_LD_MEM, 0, 0, _M_LEN),
            (_BPF_JGT_K, 0, "finish", byte),
            (_BPF_LD_B_IND, 0, 0, 2 + byte),
            *_mix_a(),
        ]
    insns += [
        "finish",
        (_BPF_LD_MEM, 0, 0, _M_HASH),
        (_BPF_TAX, 0, 0, 0),
        (_BPF_ALU_RSH_K, 0, 0, 16),
        (_BPF_ALU_XOR_X, 0, 0, 0),
        (_BPF_ALU_MOD_K, 0, 0, sockets),
        (_BPF_RET_A, 0, 0, 0),
        "malformed",  # its length byte < 2 (jumps only go forward: the block again)
        *_authenticator_insns(sockets),
    ]
    return insns


def spread_program(sockets: int, attribute: int = 0) -> bytes:
    """The classic BPF program picking a datagram's socket, mod `sockets`.

    attribute 0: the XOR of the Request Authenticator's four words. All four: a
    gateway whose Authenticators share a word (a counter, a timestamp, a weak
    generator's constant half) still spreads.

    attribute T: a hash of attribute T's value (`spread_index` says which), the
    Authenticator's XOR when T is not among the first 16 attributes.

    A datagram too short for a load ends the program with 0 (the first socket), an
    index past the group's current size (a worker being restarted) makes the kernel
    fall back to its hash: nothing is dropped by the program.
    """
    if attribute:
        return _assemble(_attribute_insns(sockets, attribute))
    return _assemble(_authenticator_insns(sockets))


def spread_index(datagram: bytes, sockets: int, attribute: int = 0) -> int:
    """The socket `spread_program(sockets, attribute)` picks for a well-formed
    datagram: what the kernel runs, said in Python (the tests compare the two)."""
    words = [int.from_bytes(datagram[i : i + 4]) for i in range(4, 20, 4)]
    by_authenticator = (words[0] ^ words[1] ^ words[2] ^ words[3]) % sockets
    if not attribute:
        return by_authenticator
    at = 20
    for _ in range(_SCAN_ATTRIBUTES):
        if len(datagram) < at + 2:
            return by_authenticator
        if datagram[at] == attribute:
            break
        if datagram[at + 1] < 2:
            return by_authenticator
        at += datagram[at + 1]
    else:
        return by_authenticator
    if datagram[at + 1] < 2:
        return by_authenticator
    size = datagram[at + 1] - 2
    value = datagram[at + 2 : at + 2 + size]
    mask = 0xFFFFFFFF

    def mix(h: int, v: int) -> int:
        return ((h ^ v) * _FNV_PRIME) & mask

    h = mix(_FNV_OFFSET, size)
    for word in range(_HASH_WORDS):
        if size < 4 * word + 4:
            break
        h = mix(h, int.from_bytes(value[4 * word : 4 * word + 4]))
    if size >= 4:
        h = mix(h, int.from_bytes(value[size - 4 : size]))
    else:
        for byte in range(size):
            h = mix(h, value[byte])
    return ((h ^ (h >> 16)) & mask) % sockets


def spread_by_authenticator(sock: socket.socket, sockets: int, attribute: int = 0) -> bool:
    """Attach the spreading program to `sock`'s SO_REUSEPORT group of `sockets`
    processes (by Request Authenticator, or by `attribute`'s value); False (said once
    in the log, the kernel's hash kept) when refused."""
    global _refusal_logged
    if sockets < 2:
        return False
    code = spread_program(sockets, attribute)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout.
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        if not _refusal_logged:
            _refusal_logged = True
            log.warning(
                "RADIUS requests not spread by %s over %d processes "
                "(SO_ATTACH_REUSEPORT_CBPF refused: %s): the kernel's hash of the source "
                "address and port decides (one gateway socket = one process)",
                f"attribute {attribute}" if attribute else "Request Authenticator",
                sockets,
                exc.strerror or exc,
            )
        return False
    return True


def bind_udp(
    host: str,
    port: int,
    rcvbuf_bytes: int = 4 << 20,
    *,
    reuse_port: bool = True,
    spread: int = 1,
    spread_attribute: int = 0,
) -> socket.socket:
    """A UDP socket with SO_REUSEPORT (several worker processes share the port);
    `spread` > 1: the group's `spread` processes share it by Request Authenticator
    (spread_by_authenticator), not by source address; `spread_attribute` > 0: by that
    attribute's value."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        sock.bind((host, port))
        sock.setblocking(False)
        if reuse_port:
            spread_by_authenticator(sock, spread, spread_attribute)
    except OSError:
        sock.close()
        raise
    return sock


class PortInUse(OSError):
    """A RADIUS port is held by another program (another chargingd, FreeRADIUS)."""


async def ensure_ports_free(
    host: str, ports: tuple[int, ...], wait_s: float = 3.0, step_s: float = 0.25
) -> None:
    """Refuse to share a RADIUS port with another program: the main process only.

    SO_REUSEPORT lets any process of the same user join the port, and the kernel
    would then split the gateways' packets between two unrelated daemons. A probe
    bound *without* SO_REUSEPORT fails while anyone holds the port; it is retried for
    `wait_s` (workers of a killed main process stop within a second). Port 0 is skipped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    for port in (p for p in ports if p):
        while True:
            try:
                bind_udp(host, port, reuse_port=False).close()
                break
            except OSError as exc:
                if loop.time() >= deadline:
                    raise PortInUse(
                        f"RADIUS port {host}:{port} is already in use by another process "
                        f"(another chargingd or RADIUS server?): {exc.strerror}"
                    ) from None
            await asyncio.sleep(step_s)
