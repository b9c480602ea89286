"""RADIUS intake: UDP sockets, the bounded queue with arrival times, duplicate detection.

The transport side of server.py: `datagram_received` only enqueues (with the loop
time it arrived), a full queue drops and counts; RFC 5080 duplicate detection keeps
recent replies. Binding the ports (SO_REUSEPORT, a port held by another program
refused) is in ports.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
import struct
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final

log = logging.getLogger("chargingd.aaa")

# A datagram's source as the socket module gives it: (host, port) for IPv4, (host, port,
# flowinfo, scope_id) for IPv6. Not tuple[str, int]: compiled, that refused the IPv6
# 4-tuple with a TypeError (and rebuilt every IPv4 source tuple it was passed through).
Address = tuple[Any, ...]
Clock = Callable[[], float]


@dataclass
class Counters:
    """What the frontend saw; every dropped packet is counted under one reason."""

    received: int = 0
    dropped_overload: int = 0
    shed_stale: int = 0
    send_failed: int = 0
    unknown_client: int = 0
    malformed: int = 0
    unexpected_code: int = 0
    bad_authenticator: int = 0
    missing_message_authenticator: int = 0
    duplicates: int = 0
    duplicates_in_progress: int = 0
    errors: int = 0
    accepted: int = 0
    rejected: int = 0
    accounted: int = 0
    accounting_ignored: int = 0
    gateway_restarts: int = 0
    status_server: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for monitoring."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


_PENDING: Final = b""  # cache value while the first copy of a request is being worked on
_EXPIRY: Final = struct.Struct("@d")  # the head of a cache value: when it expires (monotonic s)
_EXPIRY_SIZE: Final = 8
_EXPIRY_PACK: Final = _EXPIRY.pack  # bound once: no method look-up by name per call
_EXPIRY_UNPACK_FROM: Final = _EXPIRY.unpack_from


def cache_key(addr: Address, header: bytes) -> bytes:
    """The duplicate cache's key of a request: its source and its header (code,
    Identifier, length, Authenticator: the first 20 bytes)."""
    host: str = addr[0]
    port: int = addr[1]
    return header + port.to_bytes(2, "big") + host.encode()


class DuplicateCache:
    """RFC 5080 §2.2.2: replies by (source, header), kept `ttl_s`, at most `max_entries`.

    Keys and values are bytes (`cache_key`; the expiry packed before the reply): an
    entry is no object the garbage collector tracks. With tuples, every request left
    three tracked objects behind for `ttl_s`; they were most of what made the young
    generation fill, and each young collection stalled every request in flight
    (docs/performance.md, round 6c).
    """

    def __init__(self, ttl_s: float, max_entries: int, monotonic: Clock = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._now = monotonic
        # Ordered by arrival, hence by expiry: the TTL is the same for all.
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> bytes | None:
        """The cached reply, `_PENDING` (b"") while in progress, None when not seen."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if _EXPIRY_UNPACK_FROM(entry)[0] < self._now():
            del self._entries[key]
            return None
        return entry[_EXPIRY_SIZE:]

    def start(self, key: bytes) -> None:
        """Mark a request in progress; evicts expired entries and the oldest past the bound."""
        entries = self._entries
        now = self._now()
        entries[key] = _EXPIRY_PACK(now + self._ttl_s)  # + _PENDING
        while len(entries) > self._max:
            entries.popitem(last=False)
        # Entries are in expiry order (same TTL for all): drop the expired head.
        for _ in range(2):
            first = next(iter(entries))
            if _EXPIRY_UNPACK_FROM(entries[first])[0] >= now:
                break
            del entries[first]

    def finish(self, key: bytes, reply: bytes) -> None:
        """Store the reply; it expires `ttl_s` after the request came in."""
        entry = self._entries.get(key)
        if entry is not None:  # keeps its place in the order
            self._entries[key] = entry[:_EXPIRY_SIZE] + reply

    def forget(self, key: bytes) -> None:
        """Drop an entry: the request failed and a retransmission must be worked again."""
        self._entries.pop(key, None)


Intake = tuple[bytes, Address, float]  # datagram, source, arrival (loop time, s)


class IntakeQueue:
    """The bounded FIFO between a port and its worker tasks: asyncio.Queue's behaviour
    (put_nowait raises asyncio.QueueFull when full, get waits, task_done/join, qsize),
    compiled. asyncio.Queue is interpreted Python: its put_nowait, get and task_done ran
    once per request each (~4 % of an Access-Request's daemon CPU, round 8b). `take`
    returns an item without a coroutine when one is waiting."""

    def __init__(self, maxsize: int, loop: asyncio.AbstractEventLoop) -> None:
        self._maxsize = maxsize  # <= 0: unbounded
        self._loop = loop
        self._items: deque[Intake] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._unfinished = 0
        self._joiners: list[asyncio.Future[None]] = []  # join()s waiting (stop only)

    def qsize(self) -> int:
        return len(self._items)

    def backlog(self) -> int:
        """Items waiting while no worker task waits for one: every worker is busy (or
        woken and about to run: the count is then high by those few)."""
        return 0 if self._getters else len(self._items)

    def put_nowait(self, item: Intake) -> None:
        if 0 < self._maxsize <= len(self._items):
            raise asyncio.QueueFull
        self._items.append(item)
        self._unfinished += 1
        self._wakeup_next()

    def _wakeup_next(self) -> None:
        getters = self._getters
        while getters:
            waiter = getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take(self) -> Intake | None:
        """The oldest item, None when there is none (then await get())."""
        return self._items.popleft() if self._items else None

    async def get(self) -> Intake:
        """The oldest item, waiting for one."""
        while not self._items:
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()  # not done yet when another exception came in
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)
                if self._items and not waiter.cancelled():
                    self._wakeup_next()  # woken with an item, then cancelled: pass it on
                raise
        return self._items.popleft()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._joiners:
            for joiner in self._joiners:
                if not joiner.done():
                    joiner.set_result(None)
            self._joiners.clear()

    async def join(self) -> None:
        """Wait until every item put was taken and marked done."""
        if self._unfinished > 0:
            joiner: asyncio.Future[None] = self._loop.create_future()
            self._joiners.append(joiner)
            await joiner


MAX_DATAGRAM: Final = 4096  # RFC 2865 §3: the largest RADIUS packet
READ_BATCH: Final = 256  # datagrams read per readiness callback (then other tasks run)
# Linux: the kernel stamps each datagram on arrival (SO_TIMESTAMPNS, CLOCK_REALTIME).
_SO_TIMESTAMPNS: Final = getattr(socket, "SO_TIMESTAMPNS", 35) if sys.platform == "linux" else None
_TIMESPEC: Final = struct.Struct("@qq")
_TIMESPEC_UNPACK_FROM: Final = _TIMESPEC.unpack_from
# Plain ints: socket.MSG_TRUNC is an IntFlag, and `flags & socket.MSG_TRUNC` ran enum's
# interpreted Flag.__and__ (and built a MsgFlag) for every datagram (round 9a).
_MSG_TRUNC: Final = int(socket.MSG_TRUNC)
_SOL_SOCKET: Final = int(socket.SOL_SOCKET)
_CMSG_SPACE: Final = socket.CMSG_SPACE(_TIMESPEC.size)


RecvBatch = Callable[[int, int], list[tuple[bytes, Any, float, bool]]]
SendBatch = Callable[[int, int, list[tuple[bytes, Any]]], tuple[int, int]]
RECV_VLEN: Final = 64  # datagrams per recvmmsg (_mmsg.c's MAX_BATCH)


def load_mmsg() -> tuple[RecvBatch, SendBatch] | None:
    """recv_batch and send_batch of the C extension (_mmsg.c: recvmmsg/sendmmsg), None
    when it is not built (no compiler, `make uncompiled`) or this is not Linux."""
    if sys.platform != "linux":
        return None
    try:
        module = importlib.import_module("chargingd.radius._mmsg")
    except ImportError:
        return None
    recv: RecvBatch = module.recv_batch
    send: SendBatch = module.send_batch
    return recv, send


class UdpPort:
    """One RADIUS port: reads datagrams with their kernel arrival time, sheds the stale,
    enqueues the rest (a full queue drops and counts), sends the replies.

    The arrival time is when the kernel received the datagram, not when the loop got
    to it: under a flood, datagrams wait in the socket buffer too (seconds, with a
    4 MB buffer), and a request older than `max_wait_s` there is dropped unread
    (`shed_stale`) instead of being answered after the gateway gave up on it.

    `batch` ([radius] batch_syscalls), when the C extension is built (load_mmsg):
    datagrams are read up to RECV_VLEN per recvmmsg call, and replies are queued and
    sent together by one sendmmsg call per loop iteration (a `call_soon` per burst),
    instead of one recvmsg / sendto system call each. `batched` says which is in use.
    """

    def __init__(
        self,
        sock: socket.socket,
        queue: IntakeQueue,
        counters: Counters,
        *,
        max_wait_s: float,
        loop: asyncio.AbstractEventLoop,
        wall: Clock = time.time,
        batch: bool = False,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._family = int(sock.family)
        self._queue = queue
        self._counters = counters
        self._max_wait_s = max_wait_s
        self._loop = loop
        self._wall = wall
        self._stamped = False
        if _SO_TIMESTAMPNS is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self._stamped = True
        self.closing = False
        mmsg = load_mmsg() if batch else None
        if batch and mmsg is None:
            log.info("[radius] batch_syscalls: radius/_mmsg.c is not built here (or not "
                     "Linux): one recvmsg/sendto per packet")  # fmt: skip
        self.batched = mmsg is not None
        self._recv_batch: RecvBatch | None = mmsg[0] if mmsg is not None else None
        self._send_batch: SendBatch | None = mmsg[1] if mmsg is not None else None
        self._replies: list[tuple[bytes, Any]] = []  # queued for the next flush (batched)

    def start(self) -> None:
        self._loop.add_reader(self._fd, self._readable_batched if self.batched else self._readable)

    def _readable(self) -> None:
        now, wall = self._loop.time(), self._wall()
        for _ in range(READ_BATCH):
            try:
                data, ancillary, flags, addr = self._sock.recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error for an earlier reply
                log.debug("RADIUS socket error: %s", exc)
                continue
            if self.closing:
                continue  # shutting down: the gateway retries on another worker or later
            self._counters.received += 1
            if flags & _MSG_TRUNC:
                self._counters.malformed += 1  # longer than any RADIUS packet
                continue
            arrived = now - max(0.0, wall - _stamp(ancillary)) if self._stamped else now
            if self._max_wait_s and now - arrived > self._max_wait_s:
                self._counters.shed_stale += 1
                continue
            try:
                self._queue.put_nowait((data, addr, arrived))
            except asyncio.QueueFull:
                self._counters.dropped_overload += 1

    def _readable_batched(self) -> None:
        """_readable with recvmmsg: the same counting, shedding and queueing."""
        recv_batch = self._recv_batch
        if recv_batch is None:
            return
        now, wall = self._loop.time(), self._wall()
        counters = self._counters
        max_wait_s = self._max_wait_s
        read = 0
        while read < READ_BATCH:
            try:
                batch = recv_batch(self._fd, RECV_VLEN)
            except OSError as exc:  # e.g. an ICMP error for an earlier reply
                log.debug("RADIUS socket error: %s", exc)
                read += 1
                continue
            read += len(batch)
            for data, addr, stamp, truncated in batch:
                if self.closing:
                    continue  # shutting down: the gateway retries on another worker or later
                counters.received += 1
                if truncated:
                    counters.malformed += 1  # longer than any RADIUS packet
                    continue
                arrived = now - max(0.0, wall - stamp) if self._stamped else now
                if max_wait_s and now - arrived > max_wait_s:
                    counters.shed_stale += 1
                    continue
                try:
                    self._queue.put_nowait((data, addr, arrived))
                except asyncio.QueueFull:
                    counters.dropped_overload += 1
            if len(batch) < RECV_VLEN:
                return  # the socket is drained (an empty batch: nothing was waiting)

    def sendto(self, data: bytes, addr: Address) -> None:
        """Send a reply; a full socket buffer drops it (UDP: the gateway retransmits).
        Batched: queued, and sent with the others of this loop iteration (_flush)."""
        if self.batched:
            replies = self._replies
            replies.append((data, addr))
            if len(replies) == 1:
                self._loop.call_soon(self._flush)
            return
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:
            self._counters.send_failed += 1
            log.debug("RADIUS reply to %s not sent: %s", addr[0], exc)

    def _flush(self) -> None:
        """Send the queued replies with sendmmsg; each one refused is counted (send_failed)."""
        replies = self._replies
        if not replies:
            return
        self._replies = []
        send_batch = self._send_batch
        if send_batch is None or self._sock.fileno() < 0:
            sent, error = 0, 0  # closed: dropped
        else:
            sent, error = send_batch(self._fd, self._family, replies)
        if sent < len(replies):
            self._counters.send_failed += len(replies) - sent
            log.debug(
                "%d of %d RADIUS replies not sent: %s",
                len(replies) - sent,
                len(replies),
                os.strerror(error) if error else "socket closed",
            )

    def close(self) -> None:
        self.closing = True
        self._flush()  # the replies queued in this loop iteration (later ones: dropped)
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._fd)
            self._sock.close()


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The SO_TIMESTAMPNS of a datagram (epoch s), or +inf when the kernel gave none."""
    for level, kind, value in ancillary:
        if level == _SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanos = _TIMESPEC_UNPACK_FROM(value)
            return float(seconds + nanos / 1e9)
    return float("inf")  # max(0, wall - inf): treated as just arrived
