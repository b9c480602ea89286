"""How a cut reaches the gateway, through the real daemon (issue 9, findings 4 and 5).

- Disconnect-Request back-off: the wait before the next attempt counts from the end
  of the previous exchange (with its own retransmissions), so the quiet gaps grow
  1/2/4/8 x disconnect_backoff_s instead of every retry being due at once.
- A Cisco gateway's POD handler (Cisco IOS "RADIUS Packet of Disconnect") matches its
  own Acct-Session-Id, the h323-conf-id VSA as it sent it, the leg's h323-call-origin,
  User-Name and the NAS address. chargingd keys a Cisco call by the h323-conf-id (the
  Access-Request carries no Acct-Session-Id), so the Disconnect-Request must carry what
  the gateway's accounting said, not the key.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyrad.packet import CoAPacket
from radius_e2e_harness import SECRET, Daemon, GatewaySocket, serving, write_setup
from radius_peer import DICT, UdpPeer, wait_until

from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

BACKOFF_S = 0.5
COA_TIMEOUT_S = 0.3  # one exchange: 0.3 s, retransmit, 0.6 s: 0.9 s in all
CONF_ID = "3A3F5C1E 2A1B11D0 8012C4E1 F4A9B6D5"  # Cisco writes it in four hex words


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("cut-delivery")
    setup = write_setup(
        tmp,
        session_options={"disconnect_retries": 4, "disconnect_backoff_s": BACKOFF_S},
        radius_options={"coa_timeout_s": COA_TIMEOUT_S, "coa_retries": 1},
    )
    with serving(setup, tmp / "daemon.log") as d:
        yield d


@dataclass
class CiscoLeg:
    """The originating leg of a call through a Cisco IOS voice gateway: the
    Access-Request names the call by h323-conf-id only; accounting adds the leg's
    own Acct-Session-Id and h323-call-origin."""

    user: str
    leg_id: str  # the gateway's Acct-Session-Id of this leg
    conf_id: str = CONF_ID
    ident: int = 0
    common: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.common = b"".join(
            (
                rc.attr_bytes(rc.USER_NAME, self.user.encode()),
                rc.attr_bytes(rc.CALLING_STATION_ID, b"+4930111111"),
                rc.attr_bytes(rc.CALLED_STATION_ID, b"00442079460000"),
                rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
                rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=" + self.conf_id.encode()),
            )
        )

    def _next(self) -> int:
        self.ident = (self.ident + 1) % 256
        return self.ident

    def access_request(self) -> bytes:
        return rc.encode_access_request(self._next(), os.urandom(16), self.common, SECRET)

    def accounting(self, status: int, usage_s: int) -> bytes:
        attrs = self.common + rc.attr_bytes(rc.ACCT_SESSION_ID, self.leg_id.encode())
        attrs += rc.cisco_vsa(rc.H323_CALL_ORIGIN, b"h323-call-origin=originate")
        attrs += rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        attrs += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
        return rc.encode_request(rc.ACCOUNTING_REQUEST, self._next(), attrs, SECRET)


class CiscoPodGateway:
    """A POD handler as Cisco documents it: a call is disconnected only when every
    identification attribute of the request matches the call (pyrad decodes, with the
    dictionary of config/); otherwise NAK with Error-Cause 503 (session not found)."""

    def __init__(self, peer: UdpPeer, calls: dict[str, dict[str, str]]) -> None:
        self.peer = peer
        self.calls = calls  # Acct-Session-Id -> the attributes the gateway knows
        self.killed: list[str] = []
        self.naks = 0
        self.task = asyncio.create_task(self._serve())

    def _matches(self, request: CoAPacket) -> str | None:
        def one(name: str) -> str:
            values = request.get(name) or [""]
            return str(values[0])

        leg = self.calls.get(one("Acct-Session-Id"))
        if leg is None:
            return None
        wanted = {
            "User-Name": leg["user"],
            "NAS-IP-Address": leg["nas"],
            "h323-conf-id": f"h323-conf-id={leg['conf_id']}",
            "h323-call-origin": f"h323-call-origin={leg['origin']}",
        }
        if any(one(name) != value for name, value in wanted.items()):
            return None
        return one("Acct-Session-Id")

    async def _serve(self) -> None:
        while True:
            data, addr = await self.peer.inbox.get()
            request = CoAPacket(packet=data, secret=SECRET, dict=DICT)
            assert request.VerifyCoARequest()
            reply = request.CreateReply()
            leg = self._matches(request)
            if leg is not None:
                self.killed.append(leg)
                reply.code = request.code + 1
            else:
                self.naks += 1
                reply.code = request.code + 2
                reply["Error-Cause"] = 503
            reply.add_message_authenticator()
            assert self.peer.transport is not None
            self.peer.transport.sendto(reply.ReplyPacket(), addr)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peer.close()


async def test_cisco_pod_carries_what_the_gateway_matches_on(daemon: Daemon) -> None:
    daemon.create_account("cisco1", "0.02")  # pays 2 seconds: the cutter cuts it
    leg = CiscoLeg("cisco1", leg_id="0A1B2C3D")
    known = {"user": "cisco1", "nas": "127.0.0.1", "conf_id": CONF_ID, "origin": "originate"}
    peer = await UdpPeer.open("127.0.0.1", daemon.setup.coa_port)
    pod = CiscoPodGateway(peer, {"0A1B2C3D": known})
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(leg.access_request(), daemon.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        start = await sock.ask(leg.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        assert start.code == rc.ACCOUNTING_RESPONSE
        await wait_until(lambda: bool(pod.killed) or pod.naks > 0, timeout_s=15.0)
        assert pod.killed == ["0A1B2C3D"], f"the POD handler refused {pod.naks} request(s)"
        stop = await sock.ask(leg.accounting(rc.STATUS_STOP, 2), daemon.setup.acct_port)
        assert stop.code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
        await pod.close()
    for _ in range(200):
        cdrs = [c for c in daemon.cdrs() if c.account_id == "cisco1"]
        if cdrs:
            break
        await asyncio.sleep(0.02)
    (cdr,) = cdrs
    assert (cdr.call_id, cdr.status) == (CONF_ID, "credit_cut")


class SilentGateway:
    """Records when each Disconnect-Request datagram arrives; never answers."""

    def __init__(self, peer: UdpPeer) -> None:
        self.peer = peer
        self.seen: list[tuple[float, int]] = []  # (monotonic s, Identifier)
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            data, _ = await self.peer.inbox.get()
            self.seen.append((time.monotonic(), data[1]))

    def attempt_starts(self) -> list[float]:
        """When each attempt began: a new Identifier is a new exchange (RFC 5176
        retransmissions of one exchange keep theirs)."""
        starts: list[float] = []
        last_id = -1
        for at, ident in self.seen:
            if ident != last_id:
                starts.append(at)
                last_id = ident
        return starts

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peer.close()


async def test_disconnect_backoff_grows_after_each_exchange(daemon: Daemon, tmp_path: Path) -> None:
    daemon.create_account("silentgw", "0.02")
    gateway = SilentGateway(await UdpPeer.open("127.0.0.1", daemon.setup.coa_port))
    leg = CiscoLeg("silentgw", leg_id="5E5E5E5E", conf_id="11111111 22222222 33333333 44444444")
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(leg.access_request(), daemon.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await sock.ask(leg.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        # 4 attempts, each 2 datagrams (the request and its retransmission).
        await wait_until(lambda: len(gateway.seen) >= 8, timeout_s=30.0)
        await asyncio.sleep(2 * COA_TIMEOUT_S * 2)  # a fifth attempt would show now
    finally:
        sock.close()
        await gateway.close()
    starts = gateway.attempt_starts()
    assert len(starts) == 4, gateway.seen  # disconnect_retries
    exchange_s = COA_TIMEOUT_S * 3
    quiet = [b - a - exchange_s for a, b in itertools.pairwise(starts)]
    # Each quiet gap is the back-off of that attempt: 0.5, 1, 2 s (plus at most a
    # cutter tick and scheduling); the old code had every retry due at once (~0 s).
    # Only lower bounds, with a quarter second for a late datagram (a late start
    # shortens the gap after it by as much): scheduling on a loaded box stretches the
    # gaps unevenly (a check of the differences between gaps failed at load 7.5), and
    # the bounds 0.25 < 0.75 < 1.75 s already show the back-off doubling.
    for n, gap in enumerate(quiet):
        assert gap >= BACKOFF_S * 2**n - 0.25, quiet
