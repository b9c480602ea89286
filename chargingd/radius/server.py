"""RADIUS frontend: asyncio UDP servers for authentication and accounting.

Translates Access-Request and Accounting-Request packets into ccapi calls on a
CreditControl (sessions/service.py) and its answers back into replies; it holds no
business rules. Intake is bounded: `datagram_received` only enqueues, a fixed
pool of worker tasks drains the queue, a full queue drops and counts, and a request
that waited in the queue longer than ``max_wait_ms`` is dropped unanswered and
counted (``shed_stale``): under overload the answers that go out stay fresh, and
the gateway, which retransmits after 1-3 s, is not answered for a request it gave up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chargingd.core.config import RadiusConfig
from chargingd.radius import codec as rc
from chargingd.radius.accesslog import AccessLog
from chargingd.radius.clients import ClientTable, RadiusClient
from chargingd.radius.droplog import BAD_AUTHENTICATOR, MISSING_MESSAGE_AUTHENTICATOR, DropLog
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.intake import (
    Address,
    Clock,
    Counters,
    DuplicateCache,
    IntakeQueue,
    UdpPort,
    cache_key,
)
from chargingd.radius.ports import SPREAD_ATTRIBUTES, bind_udp
from chargingd.radius.translate import (
    call_info,
    charged_leg,
    event_ms_of,
    gateway_of,
    usage_report,
)
from chargingd.sessions.ccapi import (
    Authorized,
    CreditControl,
    RefusalCode,
    Refused,
    UsageKind,
    UsageReport,
    account_class,
)

log = logging.getLogger("chargingd.aaa")


_USAGE_KINDS = {
    rc.STATUS_START: UsageKind.START,
    rc.STATUS_INTERIM: UsageKind.INTERIM,
    rc.STATUS_STOP: UsageKind.STOP,
    rc.STATUS_FAILED: UsageKind.FAILED,
}


# datagram, source, the socket to answer on, arrival (loop time)
Handler = Callable[[bytes, Address, UdpPort, float], Awaitable[None]]
_ACCT_OUTCOMES = {
    rc.STATUS_START: "start",
    rc.STATUS_STOP: "stop",
    rc.STATUS_INTERIM: "interim",
    rc.STATUS_ACCOUNTING_ON: "accounting-on",
    rc.STATUS_ACCOUNTING_OFF: "accounting-off",
}


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
        access_log: AccessLog | None = None,
        spread: int = 1,
    ) -> None:
        self.config = config
        self.spread = spread  # processes sharing the ports (ports.spread_by_authenticator)
        self.access_log = access_log  # started and closed with the frontend
        self.credit = credit
        self.clients = clients if clients is not None else ClientTable.from_config(config)
        self.counters = Counters()
        self.drops = DropLog(monotonic=monotonic)  # per client, and said in the log
        self.cache = DuplicateCache(
            config.duplicate_cache_ttl_s, config.duplicate_cache_size, monotonic
        )
        self._clock = clock
        self._return_codes = {code: config.return_code(code.value) for code in RefusalCode}
        self._ports: list[UdpPort] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._queues: list[IntakeQueue] = []
        self.auth_port = 0
        self.acct_port = 0
        self._debug = False
        self._now: Clock = time.monotonic  # the loop's clock once started

    async def start(self) -> None:
        """Bind both ports and start the worker tasks (port 0 picks a free port)."""
        # One log line per request only at debug level (costly at 30k requests/s);
        # the access log, when configured, writes them in batches.
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._now = asyncio.get_running_loop().time
        if self.access_log is not None:
            self.access_log.start()
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
        for udp in self._ports:
            udp.closing = True
        pending = [asyncio.ensure_future(q.join()) for q in self._queues]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for fut in late:
                fut.cancel()
        for udp in self._ports:
            udp.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._ports.clear()
        self._tasks.clear()
        self._queues.clear()
        if self.access_log is not None:
            await self.access_log.close()

    def waiting(self) -> int:
        """Requests read that no worker task is free to take, every port together (a
        backlog: the Redis batcher sends no early pipeline then, ledger/batch.py)."""
        return sum([q.backlog() for q in self._queues])

    def queue_depths(self) -> dict[str, int]:
        """Requests waiting for a worker task, per port (for monitoring)."""
        return dict(zip(("auth", "acct"), (q.qsize() for q in self._queues), strict=False))

    async def _serve(self, port: int, handler: Handler) -> int:
        loop = asyncio.get_running_loop()
        queue = IntakeQueue(self.config.queue_size, loop)
        self._queues.append(queue)
        # [radius] spread: by Request Authenticator, or "user"/"ani": by that attribute.
        attribute = SPREAD_ATTRIBUTES.get(self.config.spread, 0)
        sock = bind_udp(self.config.bind, port, spread=self.spread, spread_attribute=attribute)
        max_wait_s = self.config.max_wait_ms / 1000
        batch = self.config.batch_syscalls  # recvmmsg/sendmmsg (intake.py)
        udp = UdpPort(sock, queue, self.counters, max_wait_s=max_wait_s, loop=loop, batch=batch)
        self._ports.append(udp)
        udp.start()
        for _ in range(self.config.worker_tasks):
            self._tasks.append(asyncio.create_task(self._worker(queue, handler, udp)))
        bound: int = sock.getsockname()[1]
        return bound

    async def _worker(
        self,
        queue: IntakeQueue,
        handler: Handler,
        transport: UdpPort,
    ) -> None:
        now = asyncio.get_running_loop().time
        max_wait_s = self.config.max_wait_ms / 1000
        while True:
            item = queue.take()
            if item is None:
                item = await queue.get()
            data, addr, arrived = item
            try:
                if max_wait_s and now() - arrived > max_wait_s:
                    self.counters.shed_stale += 1  # the gateway has given up or soon will
                else:  # (not `continue`: mypyc compiles no `continue` in try/finally)
                    await handler(data, addr, transport, arrived)
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
        self, data: bytes, addr: Address, code: int, transport: UdpPort
    ) -> tuple[RadiusClient, rc.Packet, bytes] | None:
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
        key = cache_key(addr, packet.raw[:20])
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
        transport: UdpPort,
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
        self, data: bytes, addr: Address, transport: UdpPort, arrived: float
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
        # The debit-card IVR's first Access-Request (account and PIN, no called number
        # yet; Cisco "Debit Card Application", AudioCodes and Quintum prepaid): checked,
        # nothing reserved; the call's own Access-Request follows with the same conf-id.
        authentication = client.cisco and not call.called
        self.cache.start(key)
        try:
            if authentication:
                decision = await self.credit.authenticate(call)
            else:
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
            self._access("auth", client, call.session_id, call.user_name, "error", arrived)
            return
        reply = self._auth_reply(packet, client, decision, authentication)
        self.cache.finish(key, reply)
        transport.sendto(reply, addr)
        if self.access_log is not None:
            outcome = "accept" if isinstance(decision, Authorized) else decision.code.value
            self._access("auth", client, call.session_id, call.user_name, outcome, arrived)
        if self._debug:
            log.debug("Access-Request %s from %s: %s", call.session_id, client.name, decision)

    def _access(
        self, port: str, client: RadiusClient, sid: str, user: str, outcome: str, arrived: float
    ) -> None:
        if self.access_log is not None:
            self.access_log.add(port, client.name, sid, user, outcome, self._now() - arrived)

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
        self,
        packet: rc.Packet,
        client: RadiusClient,
        decision: Authorized | Refused,
        authentication: bool = False,
    ) -> bytes:
        if isinstance(decision, Authorized) and authentication:
            # no Session-Timeout nor h323-credit-time: no call is authorized yet
            self.counters.accepted += 1
            attrs = rc.authentication_attributes(
                decision.credit_micros, decision.currency, 0 if decision.postpaid else 1
            )
            code = rc.ACCESS_ACCEPT
        elif isinstance(decision, Authorized):
            self.counters.accepted += 1
            attrs = rc.accept_attributes(
                decision.session_timeout_s,
                decision.interim_interval_s,  # [sessions] interim_interval_s
                client.cisco,
                decision.credit_micros,
                decision.currency,
                billing_model=0 if decision.postpaid else 1,  # Cisco: 0 credit, 1 debit
            )
            if client.echo_class:  # the account, echoed back in accounting
                attrs += rc.class_attribute(account_class(decision.account_id))
            code = rc.ACCESS_ACCEPT
        else:
            self.counters.rejected += 1
            return_code: int | None = None
            if client.cisco:  # the refusal's own (a fraud rule's), else its reason's
                own = decision.return_code
                return_code = own if own >= 0 else self._return_codes[decision.code]
            attrs = rc.reject_attributes(decision.message, return_code)
            code = rc.ACCESS_REJECT
        if packet.proxy_state:  # RFC 2865 §5.33: echoed, in order, after ours
            attrs += packet.proxy_state
        return rc.encode_reply(code, packet.identifier, packet.authenticator, attrs, client.secret)

    # -- Accounting-Request --------------------------------------------------------

    async def _handle_acct(
        self, data: bytes, addr: Address, transport: UdpPort, arrived: float
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
        if self.access_log is not None:
            sid = report.call.session_id if report else packet.text(rc.ACCT_SESSION_ID)
            outcome = _ACCT_OUTCOMES.get(status, f"status-{status}") if report else "ignored"
            user = packet.text(rc.USER_NAME)
            self._access("acct", client, sid, user, outcome, arrived)

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
            gateway, at_ms = gateway_of(packet, source_ip), event_ms_of(packet, self._clock())
            await self.credit.gateway_restarted(gateway, client.name, event_ms=at_ms)
            self.counters.gateway_restarts += 1
        else:
            self.counters.accounting_ignored += 1  # acknowledged, nothing to charge


async def start_radius(
    config: RadiusConfig,
    credit: CreditControl,
    access_log: AccessLog | None = None,
    spread: int = 1,
) -> tuple[RadiusFrontend, DynamicAuthClient]:
    """Start the RADIUS servers and the Disconnect/CoA client (the daemon's call cutter:
    pass it to sessions). Stop with `frontend.stop()` and `cutter.close()`. `spread`:
    the number of processes sharing the ports ([server] workers)."""
    frontend = RadiusFrontend(config, credit, access_log=access_log, spread=spread)
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
