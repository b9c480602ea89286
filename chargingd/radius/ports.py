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
_BPF_TAX = 0x07  # X = A
_BPF_ALU_XOR_X = 0xAC  # A = A ^ X
_BPF_ALU_MOD_K = 0x94  # A = A % k
_BPF_RET_A = 0x16  # return A
# What the program sees of a UDP datagram: its payload (the kernel pulls the UDP
# header before running it), so offset 0 is the RADIUS Code, 4..19 the Authenticator.
AUTHENTICATOR_WORD = 4

_refusal_logged = False


def spread_program(sockets: int) -> bytes:
    """The classic BPF program: socket index = the XOR of the Authenticator's four
    words, mod `sockets`. All four: a gateway whose Authenticators share a word (a
    counter, a timestamp, a weak generator's constant half) still spreads.

    A datagram too short for the load ends the program with 0 (the first socket),
    an index past the group's current size (a worker being restarted) makes the
    kernel fall back to its hash: nothing is dropped by the program.
    """
    insns = (
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
    )
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def spread_by_authenticator(sock: socket.socket, sockets: int) -> bool:
    """Attach the spreading program to `sock`'s SO_REUSEPORT group of `sockets`
    processes; False (said once in the log, the kernel's hash kept) when refused."""
    global _refusal_logged
    if sockets < 2:
        return False
    code = spread_program(sockets)
    buf = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}, native layout.
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as exc:
        if not _refusal_logged:
            _refusal_logged = True
            log.warning(
                "RADIUS requests not spread by Request Authenticator over %d processes "
                "(SO_ATTACH_REUSEPORT_CBPF refused: %s): the kernel's hash of the source "
                "address and port decides (one gateway socket = one process)",
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
) -> socket.socket:
    """A UDP socket with SO_REUSEPORT (several worker processes share the port);
    `spread` > 1: the group's `spread` processes share it by Request Authenticator
    (spread_by_authenticator), not by source address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        sock.bind((host, port))
        sock.setblocking(False)
        if reuse_port:
            spread_by_authenticator(sock, spread)
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
