"""Ports the tests give to servers they start (daemons, Kamailio, Redis nodes, peers).

A port asked of the kernel with ``bind(0)`` and released again comes from the ephemeral
range (32768-60999 on Linux), where every outgoing socket of the machine also takes
its port: between the release and the daemon's (or the test gateway's) bind, any
connecting client can take it, and the test fails with EADDRINUSE. So the tests hand
out ports *below* the ephemeral range, which the kernel never assigns by itself, from
a block of their own per pytest-xdist worker (two workers never hand out the same
port) starting at a place that depends on the process (two test runs side by side
rarely meet), checking each with a bind before handing it out.

Cluster nodes need a pair: ``p`` and its bus port ``p + 10000`` (Redis before 7).
"""

from __future__ import annotations

import os
import re
import socket
import threading

BUS_OFFSET = 10000
_GENERAL = (25000, 32700)  # ports handed out one by one
_PAIRS = (10000, 15000)  # cluster nodes: their bus ports land in 20000-25000
_WORKERS = 8  # blocks per range (pytest -n up to 8 gets disjoint blocks)

_lock = threading.Lock()
_next: dict[tuple[int, int], int] = {}


def _worker() -> int:
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) % _WORKERS if match else 0


def _block(span: tuple[int, int]) -> tuple[int, int]:
    size = (span[1] - span[0]) // _WORKERS
    start = span[0] + _worker() * size
    return start, start + size


def _free(port: int, kind: socket.SocketKind) -> bool:
    """``port`` can be bound on 127.0.0.1 for ``kind`` (and for UDP when TCP is asked:
    a server may listen on both)."""
    kinds = (kind, socket.SOCK_DGRAM) if kind == socket.SOCK_STREAM else (kind,)
    for k in kinds:
        with socket.socket(socket.AF_INET, k) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _candidates(span: tuple[int, int]) -> list[int]:
    low, high = _block(span)
    with _lock:
        at = _next.get(span, low + os.getpid() % (high - low))
        order = [low + (at - low + i) % (high - low) for i in range(high - low)]
        return order


def _advance(span: tuple[int, int], port: int) -> None:
    low, high = _block(span)
    with _lock:
        _next[span] = low + (port + 1 - low) % (high - low)


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_DGRAM) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, outside the ephemeral range."""
    out: list[int] = []
    for port in _candidates(_GENERAL):
        if _free(port, kind):
            out.append(port)
            _advance(_GENERAL, port)
            if len(out) == count:
                return out
    raise RuntimeError(f"no {count} free ports in this worker's block {_block(_GENERAL)}")


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """One port free on 127.0.0.1 now, outside the ephemeral range."""
    return free_ports(1, kind)[0]


def free_pair() -> int:
    """A TCP port ``p`` with ``p`` and ``p + 10000`` free (a cluster node and its bus)."""
    for port in _candidates(_PAIRS):
        if _free(port, socket.SOCK_STREAM) and _free(port + BUS_OFFSET, socket.SOCK_STREAM):
            _advance(_PAIRS, port)
            return port
    raise RuntimeError(f"no free port pair for a cluster node in {_block(_PAIRS)}")
