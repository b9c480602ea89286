"""Gateways of the Cisco VSA dialect send their Accounting Start at the leg's SETUP,
before the callee answers, through the real daemon (`chargingd serve`, its embedded
Redis) and real RADIUS packets; the cut is seen as a Disconnect-Request by a test
gateway.

What the gateways send (docs/radius.md "Start at setup"):
- Cisco IOS (CDR Accounting for Cisco IOS Voice Gateways): a Start per call leg when
  it is set up, with h323-setup-time; h323-connect-time comes in the Stop and in
  Interim-Updates; with `gw-accounting aaa` and `aaa accounting update newinfo`
  ("RADIUS Interim Update at Call Connect") an Interim-Update leaves when the leg
  connects, carrying h323-connect-time.
- GNU Gatekeeper's RadAcct (radacct.cxx): Start at the Q.931 Setup with
  h323-setup-time; Interim-Update (`update` event, every AcctUpdateInterval, connected
  calls only) with Acct-Session-Time (the talk so far) and h323-connect-time; Stop.
  h323-call-origin=proxy on all of them, no Event-Timestamp, Acct-Delay-Time 0.
- AudioCodes (SIP User's Manual, "Supported RADIUS Attributes"): Start and Stop only;
  h323-connect-time in the Stop only.

chargingd took every Start as the answer: a prepaid call was cut early by its ring
time ("I had 6 s of credit and was cut after 2 s of talk") and its CDR said it was
answered at setup. Now an Interim that says the call connected moves the answer, and
the deadline, to the connect (money first: at most a second early); the Stop says the
answer for the CDR and the rating. Without such an Interim the Start stays the answer
for the deadlines (cut early by the ring time, never late).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from radius_e2e_harness import (
    MICROS_PER_S,
    SECRET,
    Daemon,
    GatewaySocket,
    _Client,
    free_udp_ports,
    serving,
    write_setup,
)
from radius_peer import TestGateway, UdpPeer, wait_until

from chargingd.billing.cdr import CDR
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PAID_S = 6  # every account below pays 6 s (0.06 EUR at 0.01 EUR a second)
OWN_NAS = "127.0.0.2"  # the own_timer client's address
H323_SETUP_TIME, H323_CONNECT_TIME = 25, 28  # Cisco (vendor 9) sub-types


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    """One daemon, two `cisco` clients: "gw" (127.0.0.1, interim mode) and "gw-own"
    (127.0.0.2, own_timer: chargingd's own timer cuts it)."""
    tmp = tmp_path_factory.mktemp("ring-time")
    (own_coa_port,) = free_udp_ports(1)
    own_client = f"""
[[radius.clients]]
name = "gw-own"
address = "{OWN_NAS}"
secret = "{SECRET.decode()}"
coa_port = {own_coa_port}
flavour = "cisco"
credit_mode = "own_timer"
"""
    setup = write_setup(tmp, extra='flavour = "cisco"\n' + own_client)
    with serving(setup, tmp / "daemon.log") as d:
        yield d, own_coa_port


def cisco_time(epoch_s: float) -> str:
    """Cisco's NTP format: "hh:mm:ss.mmm ZONE Day Mon dd yyyy"."""
    t = datetime.fromtimestamp(epoch_s, UTC)
    return f"{t:%H:%M:%S}.{t.microsecond // 1000:03d} UTC {t:%a %b} {t.day} {t.year}"


@dataclass
class H323Leg:
    """One leg of a call as the Cisco VSA dialect accounts it: the Access-Request
    names the call by h323-conf-id; each record carries h323-setup-time, and
    h323-connect-time once the leg connected."""

    user: str
    conf_id: str
    leg_id: str
    nas: str = "127.0.0.1"
    origin: str = "originate"
    setup_s: float = field(default_factory=time.time)
    ident: int = 0

    def _common(self) -> bytes:
        return b"".join(
            (
                rc.attr_bytes(rc.USER_NAME, self.user.encode()),
                rc.attr_bytes(rc.CALLING_STATION_ID, b"+4930111111"),
                rc.attr_bytes(rc.CALLED_STATION_ID, b"00442079460000"),
                rc.attr_ipv4(rc.NAS_IP_ADDRESS, self.nas),
                rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=" + self.conf_id.encode()),
            )
        )

    def _next(self) -> int:
        self.ident = (self.ident + 1) % 256
        return self.ident

    def access_request(self) -> bytes:
        return rc.encode_access_request(self._next(), os.urandom(16), self._common(), SECRET)

    def accounting(
        self, status: int, usage_s: int | None = None, *, connect_s: float = 0.0
    ) -> bytes:
        attrs = self._common() + rc.attr_bytes(rc.ACCT_SESSION_ID, self.leg_id.encode())
        attrs += rc.cisco_vsa(rc.H323_CALL_ORIGIN, f"h323-call-origin={self.origin}".encode())
        attrs += rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        attrs += rc.attr_u32(rc.ACCT_DELAY_TIME, 0)
        if usage_s is not None:
            attrs += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
        setup = f"h323-setup-time={cisco_time(self.setup_s)}"
        attrs += rc.cisco_vsa(H323_SETUP_TIME, setup.encode())
        if connect_s:
            connect = f"h323-connect-time={cisco_time(connect_s)}"
            attrs += rc.cisco_vsa(H323_CONNECT_TIME, connect.encode())
        if status == rc.STATUS_STOP:
            attrs += rc.cisco_vsa(rc.H323_DISCONNECT_CAUSE, b"h323-disconnect-cause=10")
        return rc.encode_request(rc.ACCOUNTING_REQUEST, self._next(), attrs, SECRET)


async def gateway_socket(host: str) -> GatewaySocket:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Client, local_addr=(host, 0))
    return GatewaySocket(transport, proto)


async def send(sock: GatewaySocket, packet: bytes, port: int) -> None:
    reply = await sock.ask(packet, port)
    assert reply.code == rc.ACCOUNTING_RESPONSE


async def first_cut(gateway: TestGateway, timeout_s: float = 15.0) -> float:
    """When the first Disconnect-Request reached the gateway (wall clock, s)."""
    await wait_until(lambda: bool(gateway.requests), timeout_s=timeout_s)
    assert gateway.requests[0].code == rc.DISCONNECT_REQUEST
    return time.time()


async def cdr_of(d: Daemon, account_id: str) -> CDR:
    for _ in range(300):
        found = [c for c in d.cdrs() if c.account_id == account_id]
        if found:
            (cdr,) = found
            return cdr
        await asyncio.sleep(0.02)
    raise AssertionError(f"no CDR for {account_id}")


async def test_cisco_interim_at_connect_moves_the_cut_to_the_paid_talk(
    daemon: tuple[Daemon, int],
) -> None:
    # A Cisco gateway with `aaa accounting update newinfo`: Start at setup, the callee
    # answers 4 s later and the gateway says so in an Interim-Update (no talk yet,
    # h323-connect-time). The account pays 6 s of talk. chargingd counted the 6 s from
    # the Start and cut 2 s into the talk; the CDR said answered at setup.
    d, _ = daemon
    d.create_account("ring-newinfo", "0.06")
    leg = H323Leg("ring-newinfo", "1A2B3C4D 00000000 00000000 00000001", leg_id="0000A001")
    gateway = TestGateway(await UdpPeer.open("127.0.0.1", d.setup.coa_port), SECRET)
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(leg.access_request(), d.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        assert accept.integer(rc.SESSION_TIMEOUT) == PAID_S
        await send(sock, leg.accounting(rc.STATUS_START), d.setup.acct_port)
        await asyncio.sleep(4.0)  # it rings
        connect_s = time.time()
        await send(sock, leg.accounting(rc.STATUS_INTERIM, 0, connect_s=connect_s),
                   d.setup.acct_port)  # fmt: skip
        cut_s = await first_cut(gateway)
        talk_s = cut_s - connect_s
        # At most a second early (the gateway's times are whole seconds), never late:
        # the old cut came 2 s into the talk
        # (the upper bound leaves the cutter's tick and a loaded box a second)
        assert PAID_S - 1.5 <= talk_s <= PAID_S + 1.0, talk_s
        usage_s = int(time.time() - connect_s)
        await send(sock, leg.accounting(rc.STATUS_STOP, usage_s, connect_s=connect_s),
                   d.setup.acct_port)  # fmt: skip
    finally:
        sock.close()
        await gateway.close()
    cdr = await cdr_of(d, "ring-newinfo")
    assert (cdr.status, cdr.duration_s) == ("credit_cut", usage_s)
    assert cdr.charged_micros == min(usage_s, PAID_S) * MICROS_PER_S
    # answered at the connect (the Stop's time minus its talk), not at setup
    assert abs(cdr.answer_ms - connect_s * 1000) <= 1_000
    account = d.call("account.get", {"id": "ring-newinfo"})
    left = (PAID_S - min(usage_s, PAID_S)) * MICROS_PER_S // 10_000
    assert (account["balance"], account["reserved"]) == (f"0.0{left}", "0.00")


async def test_gnugk_update_moves_the_own_timer_to_the_answer(
    daemon: tuple[Daemon, int],
) -> None:
    # GNU Gatekeeper's RadAcct, chargingd's own timer (a client that enforces no
    # Session-Timeout): Start at Setup, the call rings 5 s, its first update a second
    # after the connect (Acct-Session-Time 1, h323-connect-time, h323-call-origin
    # proxy). The own timer counted the 6 paid seconds from the Start: cut 2 s into
    # the talk.
    d, own_coa_port = daemon
    d.create_account("ring-gnugk", "0.06")
    leg = H323Leg("ring-gnugk", "1A2B3C4D 00000000 00000000 00000002", leg_id="e5a1624d4211242c",
                  nas=OWN_NAS, origin="proxy")  # fmt: skip
    gateway = TestGateway(await UdpPeer.open(OWN_NAS, own_coa_port), SECRET)
    sock = await gateway_socket(OWN_NAS)
    try:
        accept = await sock.ask(leg.access_request(), d.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        assert accept.integer(rc.SESSION_TIMEOUT) == PAID_S
        await send(sock, leg.accounting(rc.STATUS_START), d.setup.acct_port)
        await asyncio.sleep(5.0)  # it rings
        connect_s = time.time()
        await asyncio.sleep(1.0)
        await send(sock, leg.accounting(rc.STATUS_INTERIM, 1, connect_s=connect_s),
                   d.setup.acct_port)  # fmt: skip
        cut_s = await first_cut(gateway)
        talk_s = cut_s - connect_s
        # own_timer cuts 999 ms after the paid second (the answer's whole second)
        assert PAID_S - 1.5 <= talk_s <= PAID_S + 1.5, talk_s
        usage_s = int(time.time() - connect_s)
        await send(sock, leg.accounting(rc.STATUS_STOP, usage_s, connect_s=connect_s),
                   d.setup.acct_port)  # fmt: skip
    finally:
        sock.close()
        await gateway.close()
    cdr = await cdr_of(d, "ring-gnugk")
    assert cdr.status == "credit_cut"
    assert cdr.charged_micros == min(usage_s, PAID_S) * MICROS_PER_S
    assert abs(cdr.answer_ms - connect_s * 1000) <= 1_000
    account = d.call("account.get", {"id": "ring-gnugk"})
    left = (PAID_S - min(usage_s, PAID_S)) * MICROS_PER_S // 10_000
    assert (account["balance"], account["reserved"]) == (f"0.0{left}", "0.00")


async def test_without_a_connect_signal_the_start_stays_the_answer_money_first(
    daemon: tuple[Daemon, int],
) -> None:
    # AudioCodes (Start and Stop only; h323-connect-time in the Stop): nothing tells
    # the answer before the Stop, so the deadline counts from the Start: the call is
    # cut early by its ring time (3 s), never late. Its Stop says the answer: the CDR
    # is answered at the connect, charged the talk it had. The CDR said answered at
    # setup.
    d, _ = daemon
    d.create_account("ring-audiocodes", "0.06")
    leg = H323Leg("ring-audiocodes", "1A2B3C4D 00000000 00000000 00000003", leg_id="0000A003",
                  origin="Originate")  # fmt: skip
    gateway = TestGateway(await UdpPeer.open("127.0.0.1", d.setup.coa_port), SECRET)
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(leg.access_request(), d.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        start_s = time.time()
        await send(sock, leg.accounting(rc.STATUS_START), d.setup.acct_port)
        await asyncio.sleep(3.0)  # it rings
        connect_s = time.time()
        cut_s = await first_cut(gateway)
        assert cut_s - start_s <= PAID_S + 1.0  # never past the money (+ a loaded tick)
        usage_s = int(time.time() - connect_s)
        await send(sock, leg.accounting(rc.STATUS_STOP, usage_s, connect_s=connect_s),
                   d.setup.acct_port)  # fmt: skip
    finally:
        sock.close()
        await gateway.close()
    cdr = await cdr_of(d, "ring-audiocodes")
    assert (cdr.status, cdr.duration_s) == ("credit_cut", usage_s)
    assert cdr.charged_micros == usage_s * MICROS_PER_S
    assert abs(cdr.answer_ms - connect_s * 1000) <= 1_000
    assert cdr.end_ms - cdr.answer_ms == pytest.approx(usage_s * 1000, abs=1_000)


async def test_a_call_cut_while_it_rings_is_unanswered_and_charged_nothing(
    daemon: tuple[Daemon, int],
) -> None:
    # Money for 2 s, the call still rings when they run out, nothing says the answer
    # before the Stop: the deadline counts from the Start (money first) and cuts the
    # ringing call. Its Stop
    # says it never connected (Acct-Session-Time 0, no h323-connect-time): one CDR,
    # unanswered, nothing charged, the cut kept in extra (as FreeSWITCH's).
    d, _ = daemon
    d.create_account("ring-short", "0.02")
    leg = H323Leg("ring-short", "1A2B3C4D 00000000 00000000 00000004", leg_id="0000A004")
    gateway = TestGateway(await UdpPeer.open("127.0.0.1", d.setup.coa_port), SECRET)
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(leg.access_request(), d.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await send(sock, leg.accounting(rc.STATUS_START), d.setup.acct_port)
        await first_cut(gateway)
        await send(sock, leg.accounting(rc.STATUS_STOP, 0), d.setup.acct_port)
    finally:
        sock.close()
        await gateway.close()
    cdr = await cdr_of(d, "ring-short")
    assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
        "unanswered", 0, 0, 0)  # fmt: skip
    assert cdr.extra["cut_reason"] == "credit_cut"
    account = d.call("account.get", {"id": "ring-short"})
    assert (account["balance"], account["reserved"]) == ("0.02", "0.00")
