"""A gateway that never answers a Disconnect-Request does not delay other calls' cuts
(issue 4 item 5, issue 9 finding 1), through the real daemon.

One Disconnect exchange with a silent gateway lasts until its retransmissions run out
(coa_timeout_s x (1 + 2 + 4 + 8) with coa_retries = 3). The cutter sent its cuts one
after the other, so every call whose money ran out meanwhile was cut that much after its
paid second; its gateway, obeying the late cut, then reported more than the paid usage
plus the cut tolerance. Here the cut of a call of an answering gateway must leave at its
own deadline while the silent one's exchange is still running, and the obedient call
ends with the prepaid account at exactly zero, status credit_cut.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import pytest
from pyrad.packet import CoAPacket
from radius_e2e_harness import MICROS_PER_S, SECRET, Call, Daemon, GatewaySocket, write_setup
from radius_peer import DICT, UdpPeer, wait_until

from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

COA_TIMEOUT_S = 0.4  # the silent exchange: 0.4 + 0.8 + 1.6 + 3.2 = 6 s


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("cut-behind-silent")
    setup = write_setup(
        tmp,
        session_options={"disconnect_retries": 1, "cutter_interval_s": 0.2},
        radius_options={"coa_timeout_s": COA_TIMEOUT_S, "coa_retries": 3},
    )
    d = Daemon(setup, tmp / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")


class Gateway:
    """One NAS's RFC 5176 port: acknowledges Disconnect-Requests, except for the
    sessions in ``mute`` (it never answers those). Records when each arrives."""

    def __init__(self, peer: UdpPeer, mute: set[str]) -> None:
        self.peer = peer
        self.mute = mute
        self.arrived: dict[str, float] = {}  # session id -> monotonic s of the first
        self.task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            data, addr = await self.peer.inbox.get()
            request = CoAPacket(packet=data, secret=SECRET, dict=DICT)
            sid = str(request["Acct-Session-Id"][0])
            self.arrived.setdefault(sid, time.monotonic())
            if sid in self.mute:
                continue
            reply = request.CreateReply()
            reply.code = rc.DISCONNECT_ACK
            reply.add_message_authenticator()
            assert self.peer.transport is not None
            self.peer.transport.sendto(reply.ReplyPacket(), addr)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.peer.close()


async def test_a_silent_gateway_does_not_hold_up_another_calls_cut(daemon: Daemon) -> None:
    daemon.create_account("mute1", "0.01")  # pays 1 s: its cut is due first
    daemon.create_account("obey1", "0.03")  # pays 3 s
    gateway = Gateway(await UdpPeer.open("127.0.0.1", daemon.setup.coa_port), {"mute-1"})
    mute, obey = Call("mute-1", "mute1"), Call("obey-1", "obey1")
    sock = await GatewaySocket.open()
    try:
        for c in (mute, obey):
            accept = await sock.ask(c.access_request(), daemon.setup.auth_port)
            assert accept.code == rc.ACCESS_ACCEPT
        for c in (mute, obey):
            await sock.ask(c.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        answered = time.monotonic()
        await wait_until(lambda: "obey-1" in gateway.arrived, timeout_s=15.0)
        late_s = gateway.arrived["obey-1"] - answered
        assert "mute-1" in gateway.arrived
        # Due at 3 s (plus a cutter tick); behind the silent exchange it came at ~7 s.
        assert late_s < 4.5, f"the cut of obey-1 left {late_s:.1f} s after the answer"
        # The gateway obeys at once: its Stop says the cut's second, rounded up.
        stop_s = math.ceil(late_s)
        await sock.ask(obey.accounting(rc.STATUS_STOP, stop_s), daemon.setup.acct_port)
        await sock.ask(mute.accounting(rc.STATUS_STOP, 1), daemon.setup.acct_port)
    finally:
        sock.close()
        await gateway.close()
    await wait_until(lambda: len(daemon.cdrs()) == 2, timeout_s=5.0)
    cdr = next(c for c in daemon.cdrs() if c.call_id == "obey-1")
    assert (cdr.status, cdr.charged_micros) == ("credit_cut", 3 * MICROS_PER_S)
    account = daemon.call("account.get", {"id": "obey1"})
    assert (account["balance"], account["reserved"]) == ("0.00", "0.00")
