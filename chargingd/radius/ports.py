"""RADIUS ports: bound with SO_REUSEPORT (worker processes), refused if another program holds one.

Apart from intake.py, which is compiled with mypyc (setup.py): an exception class
inheriting OSError cannot be compiled, and none of this runs per packet.
"""

from __future__ import annotations

import asyncio
import socket


def bind_udp(
    host: str, port: int, rcvbuf_bytes: int = 4 << 20, *, reuse_port: bool = True
) -> socket.socket:
    """A UDP socket with SO_REUSEPORT (several worker processes share the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        sock.bind((host, port))
        sock.setblocking(False)
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
