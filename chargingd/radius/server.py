"""RADIUS frontend: asyncio UDP servers for authentication and accounting.

Translates Access-Request and Accounting-Request packets into ccapi calls on a
CreditControl (sessions/service.py) and its answers back into replies; it holds no
business rules. Intake is bounded: `datagram_received` only enqueues, a fixed
pool of worker tasks drains the queue, a full queue drops and counts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields

from chargingd.core.config import RadiusConfig
from chargingd.radius import codec as rc
from chargingd.radius.clients import ClientTable, RadiusClient
from chargingd.radius.droplog import BAD_AUTHENTICATOR, MISSING_MESSAGE_AUTHENTICATOR, DropLog
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.translate import call_info, charged_leg, gateway_of, usage_report
from chargingd.sessions.ccapi import (
    Authorized,
    CreditControl,
    RefusalCode,
    Refused,
    UsageKind,
    UsageReport,
)

log = logging.getLogger("chargingd.aaa")

Address = tuple[str, int]
Clock = Callable[[], float]

_USAGE_KINDS = {
    rc.STATUS_START: UsageKind.START,
    rc.STATUS_INTERIM: UsageKind.INTERIM,
    rc.STATUS_STOP: UsageKind.STOP,
    rc.STATUS_FAILED: UsageKind.FAILED,
}


@dataclass
class Counters:
    """What the frontend saw; every dropped packet is counted under one reason."""

    received: int = 0
    dropped_overload: int = 0
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


_PENDING = b""  # cache value while the first copy of a request is being worked on


class DuplicateCache:
    """RFC 5080 §2.2.2: replies by (source, header), kept `ttl_s`, at most `max_entries`."""

    def __init__(self, ttl_s: float, max_entries: int, monotonic: Clock = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._now = monotonic
        # Ordered by arrival, hence by expiry: the TTL is the same for all.
        self._entries: OrderedDict[tuple[Address, bytes], tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Address, bytes]) -> bytes | None:
        """The cached reply, `_PENDING` (b"") while in progress, None when not seen."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self._now():
            del self._entries[key]
            return None
        return entry[1]

    def start(self, key: tuple[Address, bytes]) -> None:
        """Mark a request in progress; evicts expired entries and the oldest past the bound."""
        entries = self._entries
        now = self._now()
        entries[key] = (now + self._ttl_s, _PENDING)
        while len(entries) > self._max:
            entries.popitem(last=False)
        # Entries are in expiry order (same TTL for all): drop the expired head.
        for _ in range(2):
            first = next(iter(entries))
            if entries[first][0] >= now:
                break
            del entries[first]

    def finish(self, key: tuple[Address, bytes], reply: bytes) -> None:
        """Store the reply; it expires `ttl_s` after the request came in."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries[key] = (entry[0], reply)  # keeps its place in the order

    def forget(self, key: tuple[Address, bytes]) -> None:
        """Drop an entry: the request failed and a retransmission must be worked again."""
        self._entries.pop(key, None)


class _Intake(asyncio.DatagramProtocol):
    """Only enqueues: a full queue drops the packet and counts it."""

    def __init__(self, queue: asyncio.Queue[tuple[bytes, Address]], counters: Counters) -> None:
        self._queue = queue
        self._counters = counters
        self.closing = False

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.closing:
            return  # shutting down: the gateway retries on another worker or later
        self._counters.received += 1
        try:
            self._queue.put_nowait((data, addr))
        except asyncio.QueueFull:
            self._counters.dropped_overload += 1

    def error_received(self, exc: Exception) -> None:
        log.warning("RADIUS socket error: %s", exc)


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


Handler = Callable[[bytes, Address, asyncio.DatagramTransport], Awaitable[None]]


class RadiusFrontend:
    """Authentication and accounting servers bound to one CreditControl."""

    def __init__(
        self,
        config: RadiusConfig,
        credit: CreditControl,
        *,
        clients: ClientTable | None = None,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.credit = credit
        self.clients = clients if clients is not None else ClientTable.from_config(config)
        self.counters = Counters()
        self.drops = DropLog(monotonic=monotonic)  # per client, and said in the log
        self.cache = DuplicateCache(
            config.duplicate_cache_ttl_s, config.duplicate_cache_size, monotonic
        )
        self._clock = clock
        self._return_codes = {code: config.return_code(code.value) for code in RefusalCode}
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queues: list[asyncio.Queue[tuple[bytes, Address]]] = []
        self._intakes: list[_Intake] = []
        self.auth_port = 0
        self.acct_port = 0
        self._debug = False

    async def start(self) -> None:
        """Bind both ports and start the worker tasks (port 0 picks a free port)."""
        # One log line per request only at debug level (costly at 30k requests/s).
        self._debug = log.isEnabledFor(logging.DEBUG)
        if not self.config.clients:
            log.warning("no [[radius.clients]] configured: every RADIUS packet will be dropped")
        try:
            self.auth_port = await self._serve(self.config.auth_port, self._handle_auth)
            self.acct_port = await self._serve(self.config.acct_port, self._handle_acct)
        except BaseException:
            await self.stop(grace_s=0)  # e.g. the accounting port is taken: release auth
            raise
        log.info("RADIUS auth on %s:%d, accounting on %s:%d", self.config.bind, self.auth_port,
                 self.config.bind, self.acct_port)  # fmt: skip

    async def stop(self, grace_s: float = 2.0) -> None:
        """Take no new packets, let queued requests finish (and be answered) within
        `grace_s`, then close the sockets and cancel the workers."""
        for intake in self._intakes:
            intake.closing = True
        pending = [asyncio.ensure_future(q.join()) for q in self._queues]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for fut in late:
                fut.cancel()
        for transport in self._transports:
            transport.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._transports.clear()
        self._tasks.clear()
        self._queues.clear()
        self._intakes.clear()

    async def _serve(self, port: int, handler: Handler) -> int:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue(self.config.queue_size)
        self._queues.append(queue)
        sock = bind_udp(self.config.bind, port)
        intake = _Intake(queue, self.counters)
        self._intakes.append(intake)
        transport, _ = await loop.create_datagram_endpoint(lambda: intake, sock=sock)
        self._transports.append(transport)
        for _ in range(self.config.worker_tasks):
            self._tasks.append(asyncio.create_task(self._worker(queue, handler, transport)))
        bound: int = sock.getsockname()[1]
        return bound

    async def _worker(
        self,
        queue: asyncio.Queue[tuple[bytes, Address]],
        handler: Handler,
        transport: asyncio.DatagramTransport,
    ) -> None:
        while True:
            data, addr = await queue.get()
            try:
                await handler(data, addr, transport)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The error boundary: one bad request never stops a worker. No packet
                # contents in the log (they may carry passwords).
                self.counters.errors += 1
                log.exception("RADIUS request from %s failed", addr[0])
            finally:
                queue.task_done()

    def _admit(
        self, data: bytes, addr: Address, code: int, transport: asyncio.DatagramTransport
    ) -> tuple[RadiusClient, rc.Packet, tuple[Address, bytes]] | None:
        """Client, packet and cache key of a new request; None when it was dropped
        (unknown client, malformed, wrong code) or answered from the cache."""
        client = self.clients.match(addr[0])
        if client is None:
            self.counters.unknown_client += 1
            return None
        try:
            packet = rc.decode(data)
        except rc.MalformedPacket:
            self.counters.malformed += 1
            return None
        if packet.code != code:
            if packet.code == rc.STATUS_SERVER:
                self._status_server(packet, client, addr, code, transport)
            else:
                self.counters.unexpected_code += 1
            return None
        # RFC 5080 §2.2.2: same source, Identifier and Authenticator = a retransmission.
        key = (addr, packet.raw[:20])
        cached = self.cache.get(key)
        if cached is None:
            return client, packet, key
        if cached:
            self.counters.duplicates += 1
            transport.sendto(cached, addr)
        else:
            self.counters.duplicates_in_progress += 1
        return None

    def _status_server(
        self,
        packet: rc.Packet,
        client: RadiusClient,
        addr: Address,
        port_code: int,
        transport: asyncio.DatagramTransport,
    ) -> None:
        # RFC 5997 §3: a liveness probe; it must carry a Message-Authenticator, is
        # answered with Access-Accept (auth port) or Accounting-Response (acct port)
        # and is never cached.
        if not rc.verify_message_authenticator(packet, client.secret, packet.authenticator):
            self._bad_authenticator(client, addr)
            return
        self.counters.status_server += 1
        code = rc.ACCESS_ACCEPT if port_code == rc.ACCESS_REQUEST else rc.ACCOUNTING_RESPONSE
        reply = rc.encode_reply(code, packet.identifier, packet.authenticator, b"", client.secret)
        transport.sendto(reply, addr)

    # -- Access-Request ----------------------------------------------------------

    async def _handle_auth(
        self, data: bytes, addr: Address, transport: asyncio.DatagramTransport
    ) -> None:
        admitted = self._admit(data, addr, rc.ACCESS_REQUEST, transport)
        if admitted is None:
            return
        client, packet, key = admitted
        if not self._access_authentic(packet, client, addr):
            return
        try:
            call = call_info(packet, client, addr[0])
        except rc.MalformedPacket:
            self.counters.malformed += 1
            return
        self.cache.start(key)
        try:
            decision = await self.credit.authorize(call)
        except asyncio.CancelledError:
            self.cache.forget(key)
            raise
        except Exception:
            # Fail closed, uncached: a retransmission asks again.
            self.cache.forget(key)
            self.counters.errors += 1
            log.exception("authorize failed for client %s", client.name)
            failed = Refused(RefusalCode.SYSTEM_ERROR, "system error")
            transport.sendto(self._auth_reply(packet, client, failed), addr)
            return
        reply = self._auth_reply(packet, client, decision)
        self.cache.finish(key, reply)
        transport.sendto(reply, addr)
        if self._debug:
            log.debug("Access-Request %s from %s: %s", call.session_id, client.name, decision)

    def _access_authentic(self, packet: rc.Packet, client: RadiusClient, addr: Address) -> bool:
        # RFC 3579 §3.2 / BlastRADIUS: required unless the client is exempted.
        if packet.ma_offset < 0:
            if client.require_message_authenticator:
                self.counters.missing_message_authenticator += 1
                self.drops.dropped(client.name, MISSING_MESSAGE_AUTHENTICATOR, addr[0])
                return False
            return True
        if rc.verify_message_authenticator(packet, client.secret, packet.authenticator):
            return True
        self._bad_authenticator(client, addr)
        return False

    def _bad_authenticator(self, client: RadiusClient, addr: Address) -> None:
        self.counters.bad_authenticator += 1
        self.drops.dropped(client.name, BAD_AUTHENTICATOR, addr[0])

    def _auth_reply(
        self, packet: rc.Packet, client: RadiusClient, decision: Authorized | Refused
    ) -> bytes:
        if isinstance(decision, Authorized):
            self.counters.accepted += 1
            attrs = rc.accept_attributes(
                decision.session_timeout_s,
                decision.interim_interval_s or self.config.interim_interval_s,
                client.cisco,
                decision.credit_micros,
                decision.currency,
                billing_model=0 if decision.postpaid else 1,  # Cisco: 0 credit, 1 debit
            )
            code = rc.ACCESS_ACCEPT
        else:
            self.counters.rejected += 1
            return_code = self._return_codes[decision.code] if client.cisco else None
            attrs = rc.reject_attributes(decision.message, return_code)
            code = rc.ACCESS_REJECT
        return rc.encode_reply(
            code, packet.identifier, packet.authenticator, attrs + packet.proxy_state, client.secret
        )

    # -- Accounting-Request --------------------------------------------------------

    async def _handle_acct(
        self, data: bytes, addr: Address, transport: asyncio.DatagramTransport
    ) -> None:
        admitted = self._admit(data, addr, rc.ACCOUNTING_REQUEST, transport)
        if admitted is None:
            return
        client, packet, key = admitted
        # RFC 2866 §3, and RFC 3579 §3.2 for a Message-Authenticator (zero vector).
        if not rc.verify_request_authenticator(packet, client.secret) or (
            packet.ma_offset >= 0
            and not rc.verify_message_authenticator(packet, client.secret, rc.ZERO16)
        ):
            self._bad_authenticator(client, addr)
            return
        try:
            status = packet.integer(rc.ACCT_STATUS_TYPE)
            report = self._usage_report(packet, client, addr[0], status)
        except rc.MalformedPacket:
            self.counters.malformed += 1
            return
        self.cache.start(key)
        try:
            await self._account(packet, client, addr[0], status, report)
        except BaseException:
            # No answer and nothing cached: the gateway retransmits and sessions
            # deduplicates on the session, so retrying is safe.
            self.cache.forget(key)
            raise
        reply = rc.encode_accounting_response(
            packet.identifier, packet.authenticator, client.secret, packet.proxy_state
        )
        self.cache.finish(key, reply)
        transport.sendto(reply, addr)

    def _usage_report(
        self, packet: rc.Packet, client: RadiusClient, source_ip: str, status: int
    ) -> UsageReport | None:
        kind = _USAGE_KINDS.get(status)
        if kind is None or not charged_leg(packet, client):
            return None
        return usage_report(packet, client, source_ip, kind, self._clock())

    async def _account(
        self,
        packet: rc.Packet,
        client: RadiusClient,
        source_ip: str,
        status: int,
        report: UsageReport | None,
    ) -> None:
        if report is not None:
            await self.credit.account(report)
            self.counters.accounted += 1
        elif status in (rc.STATUS_ACCOUNTING_ON, rc.STATUS_ACCOUNTING_OFF):
            # RFC 2866 §5.1: the gateway (re)started; all its sessions are gone.
            await self.credit.gateway_restarted(gateway_of(packet, source_ip), client.name)
            self.counters.gateway_restarts += 1
        else:
            self.counters.accounting_ignored += 1  # acknowledged, nothing to charge


async def start_radius(
    config: RadiusConfig, credit: CreditControl
) -> tuple[RadiusFrontend, DynamicAuthClient]:
    """Start the RADIUS servers and the Disconnect/CoA client (the daemon's call cutter:
    pass it to sessions). Stop with `frontend.stop()` and `cutter.close()`."""
    frontend = RadiusFrontend(config, credit)
    cutter = DynamicAuthClient(
        frontend.clients,
        timeout_s=config.coa_timeout_s,
        retries=config.coa_retries,
        bind=config.bind,  # Disconnect/CoA leave from the address gateways know
    )
    await cutter.start()
    try:
        await frontend.start()
    except BaseException:
        await cutter.close()
        raise
    return frontend, cutter
