"""Test peers for the RADIUS frontend: a recording CreditControl, a UDP client, a
gateway that answers Disconnect/CoA requests. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from pyrad.dictionary import Dictionary
from pyrad.packet import CoAPacket

from chargingd.sessions.ccapi import Authorized, CallInfo, Refused, UsageReport

DICT = Dictionary(str(Path(__file__).parent.parent / "config" / "dictionary"))

Address = tuple[str, int]


class RecordingCredit:
    """A small real CreditControl: records what it is asked and answers `decide(call)`."""

    def __init__(self, decide: Callable[[CallInfo], Authorized | Refused] | None = None) -> None:
        self.decide = decide or (lambda call: Authorized("acc-1", 360, 60, 12_500_000, "EUR"))
        self.calls: list[CallInfo] = []
        self.reports: list[UsageReport] = []
        self.restarts: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        self.calls.append(call)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("credit control failed")
        return self.decide(call)

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        self.calls.append(call)
        return self.decide(call)

    async def account(self, report: UsageReport) -> None:
        self.reports.append(report)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("credit control failed")

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        self.restarts.append((gateway, client))


class _Collect(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[tuple[bytes, Address]]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.inbox.put_nowait((data, addr))


class UdpPeer:
    """A UDP socket bound to `host`: send datagrams, wait for answers with a timeout."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0) -> UdpPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        peer.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Collect(peer.inbox), local_addr=(host, port)
        )
        return peer

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def send(self, data: bytes, port: int, host: str = "127.0.0.1") -> None:
        assert self.transport is not None
        self.transport.sendto(data, (host, port))

    async def recv(self, timeout_s: float = 2.0) -> bytes | None:
        try:
            data, _ = await asyncio.wait_for(self.inbox.get(), timeout_s)
        except TimeoutError:
            return None
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TestGateway:
    """Answers Disconnect/CoA requests as `mode` says: ack, nak503, nak501 or silent."""

    __test__ = False

    def __init__(self, peer: UdpPeer, secret: bytes) -> None:
        self.peer = peer
        self.secret = secret
        self.mode = "ack"
        self.requests: list[CoAPacket] = []
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            data, addr = await self.peer.inbox.get()
            request = CoAPacket(packet=data, secret=self.secret, dict=DICT)
            assert request.VerifyCoARequest()
            assert request.verify_message_authenticator()
            self.requests.append(request)
            if self.mode == "silent":
                continue
            reply = request.CreateReply()
            reply.code = request.code + (1 if self.mode == "ack" else 2)
            if self.mode.startswith("nak"):
                reply["Error-Cause"] = int(self.mode[3:])
            reply.add_message_authenticator()
            assert self.peer.transport is not None
            self.peer.transport.sendto(reply.ReplyPacket(), addr)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peer.close()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll a condition every millisecond; AssertionError when it stays false."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)
