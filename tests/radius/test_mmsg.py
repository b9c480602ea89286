"""recvmmsg/sendmmsg on the RADIUS ports ([radius] batch_syscalls, radius/_mmsg.c):
the same datagrams, sources, kernel stamps and truncation as socket.recvmsg, replies
past a refused one still sent, and per-packet calls when the extension is absent."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chargingd.radius import intake
from chargingd.radius.intake import Counters, IntakeQueue, UdpPort, load_mmsg

MMSG = load_mmsg()
needs_mmsg = pytest.mark.skipif(MMSG is None, reason="radius/_mmsg.c not built (make compiled)")
FAMILIES = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


@pytest.fixture(autouse=True, scope="module")
def _stamping_on() -> Iterator[None]:
    """The kernel stamps arriving packets only while some socket asks for stamps, and
    turns that on a moment after the first one does (a deferred static key): a socket
    kept open here keeps it on, so a test's first datagram is stamped on arrival."""
    keeper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    keeper.setsockopt(socket.SOL_SOCKET, intake._SO_TIMESTAMPNS or 35, 1)
    time.sleep(0.05)
    yield
    keeper.close()


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket]:
    """A stamped non-blocking receiver and a sender, on loopback."""
    rx = socket.socket(family, socket.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, intake._SO_TIMESTAMPNS or 35, 1)
    tx = socket.socket(family, socket.SOCK_DGRAM)
    tx.bind((host, 0))
    return rx, tx


@pytest.fixture(params=FAMILIES, ids=["ipv4", "ipv6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    try:
        rx, tx = _pair(*request.param)
    except OSError as exc:  # no ::1 on this machine
        pytest.skip(f"{request.param[1]}: {exc}")
    yield rx, tx
    rx.close()
    tx.close()


def _wait_readable(sock: socket.socket) -> None:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            sock.recv(1, socket.MSG_PEEK)
            return
        except BlockingIOError:
            time.sleep(0.001)
    raise AssertionError("no datagram")


@needs_mmsg
def test_recv_batch_gives_what_recvmsg_gives(pair: tuple[socket.socket, socket.socket]) -> None:
    """Each datagram peeked with socket.recvmsg, then taken with recv_batch: equal."""
    assert MMSG is not None
    recv_batch = MMSG[0]
    rx, tx = pair
    assert recv_batch(rx.fileno(), 8) == []  # nothing waiting
    payloads = [b"\x01\x07" + bytes(range(40)), b"x" * 5000, b"\x04" * 20]  # 5000: truncated
    for payload in payloads:
        tx.sendto(payload, rx.getsockname())
        _wait_readable(rx)
        data, ancillary, flags, addr = rx.recvmsg(
            intake.MAX_DATAGRAM, intake._CMSG_SPACE, socket.MSG_PEEK
        )
        [(c_data, c_addr, c_stamp, c_truncated)] = recv_batch(rx.fileno(), 8)
        assert (c_data, c_addr, c_truncated) == (data, addr, bool(flags & socket.MSG_TRUNC))
        assert c_addr == tx.getsockname()  # (host, port) / (host, port, flowinfo, scope)
        assert c_stamp == intake._stamp(ancillary)
        assert abs(c_stamp - time.time()) < 5
    for payload in payloads:  # several in one call, in order
        tx.sendto(payload, rx.getsockname())
    _wait_readable(rx)
    time.sleep(0.01)
    batch = recv_batch(rx.fileno(), 64)
    assert [(d[:5000], t) for d, _, _, t in batch] == [
        (p[: intake.MAX_DATAGRAM], len(p) > intake.MAX_DATAGRAM) for p in payloads
    ]
    assert recv_batch(rx.fileno(), 64) == []


@needs_mmsg
def test_send_batch_sends_past_a_refused_reply(pair: tuple[socket.socket, socket.socket]) -> None:
    assert MMSG is not None
    send_batch = MMSG[1]
    rx, tx = pair
    dest = tx.getsockname()
    bad = (dest[0], 0)  # the kernel refuses port 0 (EINVAL) for that message only
    replies: list[tuple[bytes, Any]] = [(b"one", dest), (b"two", bad), (b"three", dest)]
    replies += [(b"four", ("not-an-ip", 1)), (b"five", dest)]
    assert send_batch(rx.fileno(), int(rx.family), replies) == (3, errno.EINVAL)
    tx.settimeout(2)
    assert [tx.recvfrom(100) for _ in range(3)] == [
        (b"one", rx.getsockname()),
        (b"three", rx.getsockname()),
        (b"five", rx.getsockname()),
    ]


async def _port_round(batch: bool, family: int, host: str) -> tuple[Any, ...]:
    """Datagrams through a started UdpPort (one stale, one truncated), replies back
    (one refused, one after close): what was queued, what the sender got, the counters."""
    loop = asyncio.get_running_loop()
    rx, tx = _pair(family, host)
    tx.setblocking(False)
    counters = Counters()
    queue = IntakeQueue(16, loop)
    port = UdpPort(rx, queue, counters, max_wait_s=0.05, loop=loop, batch=batch)
    rx_name = rx.getsockname()
    try:
        tx.sendto(b"stale", rx.getsockname())
        await asyncio.sleep(0.08)  # waits in the socket buffer past max_wait_s: shed
        port.start()
        for payload in (b"a" * 20, b"b" * 5000, b"c" * 30):
            tx.sendto(payload, rx.getsockname())
        while counters.received < 4:
            await asyncio.sleep(0.002)
        items = [item for item in (queue.take() for _ in range(queue.qsize())) if item]
        assert all(0 <= loop.time() - arrived < 0.05 for _, _, arrived in items)
        for data, addr, _ in items:
            port.sendto(data[:1], addr)
            port.sendto(b"refused", (addr[0], 0))
        port.sendto(b"closing", tx.getsockname())
        port.close()  # sends what is queued (batched)
        port.sendto(b"late", tx.getsockname())  # closed: dropped, counted
        await asyncio.sleep(0.02)
        got = []
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(tx.recvfrom(100))
        # the sources as the socket module gives them, both ways
        assert {a for _, a, _ in items} == {tx.getsockname()}
        assert {a for _, a in got} == {rx_name}
        return port.batched, [d for d, _, _ in items], [d for d, _ in got], counters.as_dict()
    finally:
        port.close()
        tx.close()


@pytest.mark.parametrize(("family", "host"), FAMILIES, ids=["ipv4", "ipv6"])
async def test_port_batched_and_per_packet_alike(family: int, host: str) -> None:
    batched, queued, got, counts = await _port_round(False, family, host)
    assert batched is False
    assert (queued, got) == ([b"a" * 20, b"c" * 30], [b"a", b"c", b"closing"])
    expected = {"received": 4, "malformed": 1, "shed_stale": 1, "send_failed": 3}
    assert {k: v for k, v in counts.items() if v} == expected
    if MMSG is None:
        pytest.skip("radius/_mmsg.c not built: per-packet only")
    assert await _port_round(True, family, host) == (True, queued, got, counts)


async def test_without_the_extension_per_packet_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chargingd.radius._mmsg", None)  # import fails
    assert load_mmsg() is None
    batched, queued, got, counts = await _port_round(True, *FAMILIES[0])
    assert batched is False
    assert (queued, got) == ([b"a" * 20, b"c" * 30], [b"a", b"c", b"closing"])
    assert (counts["malformed"], counts["shed_stale"], counts["send_failed"]) == (1, 1, 3)
