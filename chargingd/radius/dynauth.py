"""RFC 5176 Dynamic Authorization client: Disconnect-Request and CoA-Request.

Implements ccapi.CallCutter for sessions/service.py: tear down a live call at its gateway
(credit gone, operator kill, fraud) or give it a new Session-Timeout (top-up).
One UDP socket; requests are retransmitted with the same Identifier and doubling
waits until an answer or the retries run out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from chargingd.radius import codec as rc
from chargingd.radius.clients import ClientTable, RadiusClient
from chargingd.sessions.ccapi import SessionRef
from chargingd.sessions.cutter import cut_not_sent

log = logging.getLogger("chargingd.aaa.dm")

Address = tuple[str, int]


@dataclass
class DmCounters:
    sent: int = 0
    retransmitted: int = 0
    acked: int = 0
    session_not_found: int = 0
    nacked: int = 0
    timed_out: int = 0
    unroutable: int = 0
    stray_answers: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for monitoring."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Pending:
    answer: asyncio.Future[rc.DmAnswer]
    request_auth: bytes
    secret: bytes = field(repr=False)
    address: Address


class _Answers(asyncio.DatagramProtocol):
    def __init__(self, owner: DynamicAuthClient) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._owner.answer_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.warning("Disconnect/CoA socket error: %s", exc)


class DynamicAuthClient:
    """Sends Disconnect/CoA requests to gateways; `start()` before use, `close()` after."""

    def __init__(
        self,
        clients: ClientTable,
        *,
        timeout_s: float = 1.0,
        retries: int = 3,
        bind: str = "0.0.0.0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self.counters = DmCounters()
        self._timeout_s = timeout_s
        self._retries = retries
        self._bind = bind
        self._clock = clock
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._slots = asyncio.Semaphore(256)  # one request per Identifier at a time
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        """Open the UDP socket requests leave from and answers come back to."""
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Answers(self), local_addr=(self._bind, 0)
        )

    async def close(self) -> None:
        """Close the socket; requests still waiting end as not confirmed (False)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        """Disconnect-Request; True on ACK or on NAK with Error-Cause 503 (RFC 5176 §3.5:
        the session is already gone at the gateway, which is what we wanted)."""
        answer = await self._request(rc.DISCONNECT_REQUEST, ref, -1)
        if answer is None:
            return False
        if answer.code == rc.DISCONNECT_ACK:
            self.counters.acked += 1
            log.info("disconnected %s at %s (%s)", ref.session_id, ref.gateway, reason)
            return True
        if answer.error_cause == rc.ERROR_SESSION_CONTEXT_NOT_FOUND:
            self.counters.session_not_found += 1
            return True
        self.counters.nacked += 1
        log.warning(
            "Disconnect-NAK for %s at %s, Error-Cause %d",
            ref.session_id,
            ref.gateway,
            answer.error_cause,
        )
        return False

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        """CoA-Request with a new Session-Timeout; True only on CoA-ACK."""
        answer = await self._request(rc.COA_REQUEST, ref, max(session_timeout_s, 0))
        if answer is not None and answer.code == rc.COA_ACK:
            self.counters.acked += 1
            return True
        if answer is not None:
            self.counters.nacked += 1
        return False

    async def _request(
        self, code: int, ref: SessionRef, session_timeout_s: int
    ) -> rc.DmAnswer | None:
        client = self.clients.by_name(ref.client)
        address = _destination(client, ref.gateway)
        if client is None or address is None:
            self.counters.unroutable += 1
            log.warning("no Disconnect/CoA route to client %r at %r", ref.client, ref.gateway)
            cut_not_sent()  # (a cut's attempt: nothing went out, no Stop confirms it)
            return None
        # RFC 5176 §3: the NAS matches on its own identification attributes. A Cisco
        # gateway's POD handler matches its own Acct-Session-Id (not the h323-conf-id
        # chargingd keys the call by), the h323-conf-id and the leg's h323-call-origin;
        # other NASes get no Cisco VSA (an unsupported attribute is a NAK 401).
        attrs = rc.dm_attributes(
            ref.nas_session_id or ref.session_id,
            ref.user_name,
            ref.gateway,
            int(self._clock()),
            session_timeout_s,
            conf_id=ref.conf_id if client.cisco else "",
            call_origin=ref.call_origin if client.cisco else "",
        )
        async with self._slots:
            return await self._exchange(code, attrs, client.secret, address)

    async def _exchange(
        self, code: int, attrs: bytes, secret: bytes, address: Address
    ) -> rc.DmAnswer | None:
        if self._transport is None:
            raise RuntimeError("DynamicAuthClient.start() was not called")
        identifier = self._allocate_id()
        packet = rc.encode_request(code, identifier, attrs, secret)
        future: asyncio.Future[rc.DmAnswer] = asyncio.get_running_loop().create_future()
        self._pending[identifier] = _Pending(future, packet[4:20], secret, address)
        wait_s = self._timeout_s
        try:
            for attempt in range(self._retries + 1):
                if self._transport is None:
                    break  # closed while waiting: no answer will come
                if attempt:
                    self.counters.retransmitted += 1
                else:
                    self.counters.sent += 1
                self._transport.sendto(packet, address)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait_s)
                except TimeoutError:
                    wait_s *= 2  # back off: a loaded gateway gets more time
            self.counters.timed_out += 1
            return None
        finally:
            del self._pending[identifier]

    def _allocate_id(self) -> int:
        # The semaphore guarantees a free Identifier among the 256.
        while self._next_id in self._pending:
            self._next_id = (self._next_id + 1) & 0xFF
        identifier = self._next_id
        self._next_id = (identifier + 1) & 0xFF
        return identifier

    def answer_received(self, data: bytes, addr: Address) -> None:
        """Match an ACK/NAK to its request by Identifier and source, then verify it."""
        pending = self._pending.get(data[1]) if len(data) >= rc.HEADER_LEN else None
        if pending is None or pending.address[0] != addr[0] or pending.answer.done():
            self.counters.stray_answers += 1
            return
        try:
            answer = rc.decode_dm_answer(data, pending.secret, pending.request_auth)
        except rc.MalformedPacket:
            self.counters.stray_answers += 1
            return
        pending.answer.set_result(answer)


def _destination(client: RadiusClient | None, gateway: str) -> Address | None:
    if client is None or not client.coa_port:
        return None
    if client.coa_address:  # the operator's own route (validated at start)
        return (client.coa_address, client.coa_port)
    try:
        ipaddress.ip_address(gateway)
    except ValueError:
        return None
    return (gateway, client.coa_port)
