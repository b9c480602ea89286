"""Diameter over asyncio TCP: accepts peers, runs connection.py per peer, answers CCRs.

Each connection is a ``PeerLink``: bytes go through the sans-IO ``Connection``;
application requests run as tasks behind an error boundary (answers may leave out
of order, RFC 6733 §6.2); our own requests (DWR, ASR, RAR, DPR) wait for their
answer by Hop-by-Hop id. An idle peer gets a DWR every ``watchdog_s`` and is
dropped when two go unanswered (RFC 3539 §3.4). Duplicates (same Origin-Host and
End-to-End id, RFC 6733 §6.2) get the cached answer, never a second charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from chargingd.diameter import codec as dc
from chargingd.diameter.connection import Connection, Counters, Outcome, State
from chargingd.diameter.dictionary import DISCONNECT_REBOOTING, A
from chargingd.diameter.messages import Identity
from chargingd.diameter.peers import Peer, PeerTable

log = logging.getLogger("chargingd.diameter")

AppHandler = Callable[[dc.Message, Peer], Awaitable[bytes]]
_PENDING = b""
DPR_GRACE_S = 2.0  # a DPR waits this long for the CCRs in flight on its link


class AnswerCache:
    """Answers by (Origin-Host, End-to-End id, Session-Id), kept ``ttl_s``, at most ``max_entries``.

    While the first copy is worked on, later copies wait on it (``join``) and get
    its answer too, each under its own Hop-by-Hop id, on its own connection.
    """

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int, bytes], tuple[float, bytes]] = OrderedDict()
        self._waiting: dict[tuple[str, int, bytes], list[tuple[PeerLink, int]]] = {}

    def get(self, key: tuple[str, int, bytes]) -> bytes | None:
        """The cached answer, b"" while in progress, None when not seen (or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[key]
            return None
        return entry[1]

    def start(self, key: tuple[str, int, bytes]) -> None:
        entries = self._entries
        entries[key] = (time.monotonic() + self._ttl_s, _PENDING)
        while len(entries) > self._max:
            old, _ = entries.popitem(last=False)
            self._waiting.pop(old, None)

    def join(self, key: tuple[str, int, bytes], link: PeerLink, hop_by_hop: int) -> None:
        """A copy that arrived while the first is in progress: answered with it."""
        self._waiting.setdefault(key, []).append((link, hop_by_hop))

    def finish(self, key: tuple[str, int, bytes], data: bytes) -> list[tuple[PeerLink, int]]:
        """Store the answer; the copies waiting for it."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], data)
        return self._waiting.pop(key, [])

    def forget(self, key: tuple[str, int, bytes]) -> list[tuple[PeerLink, int]]:
        """No answer (cancelled): the waiting copies are dropped with it."""
        self._entries.pop(key, None)
        return self._waiting.pop(key, [])


class PeerLink(asyncio.Protocol):
    """One TCP connection: transport + Connection state + pending requests of ours."""

    def __init__(self, frontend: DiameterServer) -> None:
        self.frontend = frontend
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[dc.Message]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_rx = time.monotonic()
        self._out: list[bytes] = []
        self._watchdog: asyncio.Task[None] | None = None
        # The on_open check of this connection (a restarted peer's old sessions are
        # closed): its requests wait for it, so a new session is never among them.
        self.opening: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass; it has its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        fe = self.frontend
        fe.counters.connections += 1
        self.conn = Connection(
            fe.ident, fe.peers, str(peer[0]), fe.counters, max_length=fe.max_message_bytes
        )
        fe.links.add(self)
        self._watchdog = asyncio.create_task(self._watch(), name="diameter-watchdog")

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        self._last_rx = time.monotonic()
        was_open = conn.state is State.OPEN
        out = conn.receive(data)
        self._act(out)
        if not was_open and conn.state is State.OPEN and conn.peer is not None:
            self.frontend.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.frontend.closed(self)
        self.closed.set()

    # -- acting on an Outcome ------------------------------------------------------
    def _act(self, out: Outcome) -> None:
        transport = self.transport
        if transport is None:
            return
        conn = self.conn
        if out.close and conn is not None and conn.state is State.CLOSING:
            # A DPR: the CCRs still being worked on are answered first, then the DPA,
            # then the close (closing at once lost their CCAs: sessions opened or
            # charged and the client never told).
            for msg in out.requests:
                self._spawn(msg)
            task = asyncio.create_task(self._close_after_answers(out.send))
            self.frontend.in_flight.add(task)
            task.add_done_callback(self.frontend.in_flight.discard)
            return
        for data in out.send:
            transport.write(data)
        for msg in out.requests:
            self._spawn(msg)
        for msg in out.answers:
            fut = self._pending.pop(msg.hop_by_hop, None)
            if fut is None or fut.done():
                self.frontend.counters.stray_answers += 1
            else:
                fut.set_result(msg)
        if out.close:
            transport.close()

    def _spawn(self, msg: dc.Message) -> None:
        conn = self.conn
        assert conn is not None and conn.peer is not None
        # RFC 6733 §6.2: a request seen before (same Origin-Host and End-to-End id) is
        # answered as the first time, whichever connection it came on.
        # The Session-Id too: a client that reuses End-to-End ids after a restart (RFC
        # 6733 §3 says it must not, some do) never gets another session's answer.
        sid = msg.avps[0].data if msg.avps and msg.avps[0].code == A.SESSION_ID else b""
        key = (conn.peer_origin_host.lower(), msg.end_to_end, sid)
        cache = self.frontend.cache
        cached = cache.get(key)
        if cached is not None:
            self.frontend.counters.duplicates += 1
            if cached:
                self.send(_with_hop_by_hop(cached, msg.hop_by_hop))
            else:
                cache.join(key, self, msg.hop_by_hop)  # answered when the first is
            return
        cache.start(key)
        task = asyncio.create_task(self._work(msg, conn.peer, key))
        for tasks in (self._tasks, self.frontend.in_flight):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _work(self, msg: dc.Message, peer: Peer, key: tuple[str, int, bytes]) -> None:
        cache = self.frontend.cache
        try:
            if self.opening is not None and not self.opening.done():
                await asyncio.shield(self.opening)  # a request's cancel leaves it running
            data = await self.frontend.app(msg, peer)
        except asyncio.CancelledError:
            cache.forget(key)
            raise
        except Exception:
            # The error boundary: the app answers its own failures; this is a bug.
            cache.forget(key)
            self.frontend.errors += 1
            log.exception("diameter request from %s failed", peer.name)
            return
        for link, hop_by_hop in cache.finish(key, data):
            link.send(_with_hop_by_hop(data, hop_by_hop))
        self.send(data)

    async def _close_after_answers(self, last: list[bytes]) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=DPR_GRACE_S)
        self._flush()
        transport = self.transport
        if transport is not None and not transport.is_closing():
            for data in last:
                transport.write(data)
            transport.close()

    def send(self, data: bytes) -> None:
        """Queue an answer for the peer; the answers of one loop tick leave in one write
        (one syscall instead of one per answer under load)."""
        self._out.append(data)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    # -- our requests --------------------------------------------------------------
    async def request(self, command: int, app_id: int, body: bytes, timeout_s: float) -> dc.Message:
        """Send a request of ours and wait for its answer (TimeoutError, or
        ConnectionError when the link goes down first)."""
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            raise ConnectionError("link closed")
        hbh, data = conn.make_request(command, app_id, body)
        return await self._exchange(hbh, data, timeout_s)

    async def _exchange(self, hbh: int, data: bytes, timeout_s: float) -> dc.Message:
        assert self.transport is not None
        fut: asyncio.Future[dc.Message] = asyncio.get_running_loop().create_future()
        self._pending[hbh] = fut
        self.transport.write(data)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.CancelledError:
            if self.closed.is_set():
                raise ConnectionError("link closed") from None
            raise
        finally:
            self._pending.pop(hbh, None)

    async def disconnect(self, timeout_s: float) -> None:
        """DPR, wait for the DPA (bounded), close (RFC 6733 §5.4)."""
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        if conn.state is State.OPEN:
            hbh, data = conn.disconnect(DISCONNECT_REBOOTING)
            with contextlib.suppress(TimeoutError, ConnectionError):
                await self._exchange(hbh, data, timeout_s)
        transport.close()

    async def _watch(self) -> None:
        """RFC 3539 §3.4.1: a DWR after ``watchdog_s`` of silence; two missed, close."""
        fe = self.frontend
        missed = 0
        while self.transport is not None and not self.transport.is_closing():
            await asyncio.sleep(fe.watchdog_s / 4)
            conn = self.conn
            if conn is None or conn.state is not State.OPEN:
                if conn is not None and time.monotonic() - self._last_rx > fe.watchdog_s:
                    self.transport.close()  # no CER within Tw: not a Diameter peer
                continue
            if time.monotonic() - self._last_rx < fe.watchdog_s:
                missed = 0
                continue
            hbh, data = conn.watchdog()
            try:
                await self._exchange(hbh, data, fe.watchdog_s)
                missed = 0
            except (TimeoutError, ConnectionError):
                missed += 1
                if missed >= 2:
                    log.warning("diameter peer %s silent: closing", conn.peer_origin_host)
                    self.transport.close()

    async def drain(self, grace_s: float) -> None:
        """Let running requests finish (and be answered) within ``grace_s``."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)


def _with_hop_by_hop(answer: bytes, hop_by_hop: int) -> bytes:
    """A cached answer re-addressed to a retransmission (its own Hop-by-Hop id)."""
    return answer[:12] + hop_by_hop.to_bytes(4, "big") + answer[16:]


class DiameterServer:
    """The TCP listener and its peer links."""

    def __init__(
        self,
        ident: Identity,
        peers: PeerTable,
        app: AppHandler,
        *,
        bind: str,
        port: int,
        watchdog_s: float = 30.0,
        max_message_bytes: int = 65536,
        duplicate_ttl_s: float = 60.0,
        duplicate_entries: int = 100_000,
        reuse_port: bool = False,
    ) -> None:
        self.ident = ident
        self.peers = peers
        self.app = app
        self.bind = bind
        self.port = port
        self.watchdog_s = watchdog_s
        self.max_message_bytes = max_message_bytes
        self.reuse_port = reuse_port
        self.cache = AnswerCache(duplicate_ttl_s, duplicate_entries)
        self.counters = Counters()
        self.errors = 0
        self.links: set[PeerLink] = set()
        self.in_flight: set[asyncio.Task[None]] = set()  # requests being worked on
        # Called with (peer, its Origin-State-Id) when a peer's CER is accepted.
        self.on_open: Callable[[Peer, int], Coroutine[Any, Any, None]] | None = None
        self._by_peer: dict[str, list[PeerLink]] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (port 0 picks a free port, read back in ``self.port``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: PeerLink(self),
            self.bind,
            self.port,
            reuse_port=self.reuse_port or None,
            family=socket.AF_INET6 if ":" in self.bind else socket.AF_INET,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("Diameter on %s:%d as %s", self.bind, self.port, self.ident.origin_host)

    async def stop(self, grace_s: float = 2.0) -> None:
        """Stop listening, answer running requests within ``grace_s``, DPR every peer."""
        if self._server is not None:
            self._server.close()
        links = list(self.links)
        await asyncio.gather(*(link.drain(grace_s) for link in links))
        await asyncio.gather(*(link.disconnect(grace_s) for link in links))
        for link in links:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.closed.wait(), grace_s)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def opened(self, link: PeerLink) -> None:
        conn = link.conn
        assert conn is not None and conn.peer is not None
        self._by_peer.setdefault(conn.peer.name, []).append(link)
        if self.on_open is not None:
            task = asyncio.create_task(self.on_open(conn.peer, conn.peer_origin_state_id))
            link.opening = task
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    def closed(self, link: PeerLink) -> None:
        self.links.discard(link)
        conn = link.conn
        if conn is not None and conn.peer is not None:
            links = self._by_peer.get(conn.peer.name, [])
            if link in links:
                links.remove(link)

    def open_peer_names(self) -> list[str]:
        """The peers with at least one open link to this process."""
        return [name for name in self._by_peer if self.link_of(name) is not None]

    def link_of(self, peer_name: str) -> PeerLink | None:
        """An open link to a peer (the newest), or None."""
        for link in reversed(self._by_peer.get(peer_name, [])):
            if link.conn is not None and link.conn.state is State.OPEN:
                return link
        return None
