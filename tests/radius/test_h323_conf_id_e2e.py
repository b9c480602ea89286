"""Calls keyed by their h323-conf-id, through the real `chargingd serve` over RADIUS:
GNU Gatekeeper's answering ARQ, and a Cisco gateway's second leg of one conf-id.

One daemon for the module (embedded Redis, a flat 0.01/s tariff to +44); every test
uses its own accounts and conf-ids. The gatekeeper / gateway is the test: packets as
GNU Gatekeeper's radauth.cxx / radacct.cxx and Cisco IOS write them, from real UDP
sockets.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from collections.abc import Iterator

import pytest
from radius_e2e_harness import (
    MICROS_PER_S,
    SECRET,
    Daemon,
    GatewaySocket,
    serving,
    write_setup,
)

from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SERVICE_TYPE = 6
LOGIN_USER, CALL_CHECK = 1, 10  # radauth.cxx: originate Login-User, answerCall Call-Check
NAS_IDENTIFIER = 32
NAS_PORT_TYPE, VIRTUAL = 61, 5
H323_CALL_TYPE, H323_GW_ID = 27, 33


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("h323-conf-id-e2e")
    setup = write_setup(tmp)
    with serving(setup, tmp / "daemon.log") as daemon:
        yield daemon


@pytest.fixture
def daemon(shared: Daemon) -> Iterator[Daemon]:
    yield shared
    print(f"---- daemon log ----\n{shared.log()}")  # shown only when the test fails


def conf_id() -> str:
    """A conf-id as GNU Gatekeeper writes it (GetConferenceIDString: four 32-bit hex
    numbers, leading zeros skipped)."""
    raw = os.urandom(16)
    return " ".join(f"{int.from_bytes(raw[i : i + 4], 'big'):X}" for i in range(0, 16, 4))


def number(alias: str, prefix: str) -> str:
    """A number of its own for each alias (the gatekeeper's dialedDigits)."""
    return f"{prefix}{zlib.crc32(alias.encode()) % 10000:04d}"


def gatekeeper(nas_ip: str = "127.0.0.1") -> bytes:
    return (
        rc.attr_ipv4(rc.NAS_IP_ADDRESS, nas_ip)
        + rc.attr_bytes(NAS_IDENTIFIER, b"GnuGk")
        + rc.attr_u32(NAS_PORT_TYPE, VIRTUAL)
        + rc.cisco_vsa(H323_GW_ID, b"h323-gw-id=GnuGk")
    )


def arq(
    conf: str, user: str, calling: str, called: str, origin: str, nas_ip: str = "127.0.0.1"
) -> bytes:
    """RadAuth's Access-Request for an ARQ (radauth.cxx doCheck): User-Name the
    requesting endpoint's alias, Calling-Station-Id the caller's, Called-Station-Id the
    dialled alias, Service-Type Call-Check for the answering endpoint's ARQ."""
    attrs = (
        rc.attr_bytes(rc.USER_NAME, user.encode())
        + rc.attr_bytes(rc.USER_PASSWORD, bytes(16))
        + gatekeeper(nas_ip)
        + rc.attr_u32(SERVICE_TYPE, CALL_CHECK if origin == "answer" else LOGIN_USER)
        + rc.attr_bytes(rc.CALLING_STATION_ID, calling.encode())
        + rc.attr_bytes(rc.CALLED_STATION_ID, called.encode())
        + rc.cisco_vsa(rc.H323_CONF_ID, f"h323-conf-id={conf}".encode())
        + rc.cisco_vsa(rc.H323_CALL_ORIGIN, f"h323-call-origin={origin}".encode())
        + rc.cisco_vsa(H323_CALL_TYPE, b"h323-call-type=VoIP")
    )
    return rc.encode_access_request(1, os.urandom(16), attrs, SECRET)


def radacct(
    conf: str, user: str, calling: str, called: str, status: int, usage_s: int | None
) -> bytes:
    """RadAcct's record of the call (radacct.cxx): one per call, h323-call-origin=proxy,
    Acct-Session-Id the gatekeeper's own, the caller's User-Name."""
    attrs = (
        rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        + gatekeeper()
        + rc.attr_bytes(rc.ACCT_SESSION_ID, conf.replace(" ", "")[:16].lower().encode())
        + rc.attr_bytes(rc.USER_NAME, user.encode())
        + rc.attr_bytes(rc.CALLING_STATION_ID, calling.encode())
        + rc.attr_bytes(rc.CALLED_STATION_ID, called.encode())
        + rc.cisco_vsa(rc.H323_CONF_ID, f"h323-conf-id={conf}".encode())
        + rc.cisco_vsa(rc.H323_CALL_ORIGIN, b"h323-call-origin=proxy")
        + rc.cisco_vsa(H323_CALL_TYPE, b"h323-call-type=VoIP")
        + rc.attr_u32(rc.ACCT_DELAY_TIME, 0)
    )
    if usage_s is not None:
        attrs += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
    if status == rc.STATUS_STOP:
        attrs += rc.cisco_vsa(rc.H323_DISCONNECT_CAUSE, b"h323-disconnect-cause=10")
    return rc.encode_request(rc.ACCOUNTING_REQUEST, 2, attrs, SECRET)


def money(daemon: Daemon, account_id: str) -> tuple[int, int, int]:
    acc = daemon.call("account.get", {"id": account_id})
    return parse_amount(acc["balance"]), parse_amount(acc["reserved"]), acc["live_sessions"]


async def orphans(daemon: Daemon) -> int:
    with daemon.redis() as r:
        return int(r.xlen("cdr:orphans"))


async def gnugk_call(
    daemon: Daemon, conf: str, caller: str, callee: str, usage_s: int, *, answer_first: bool = False
) -> tuple[rc.Packet, rc.Packet]:
    """One call through the gatekeeper: the caller's ARQ, the called endpoint's ARQ (the
    same conf-id, answer), RadAcct's Start, Interim, Stop. Each packet from its own
    socket (several calls at once)."""
    sock = await GatewaySocket.open()
    caller_no, dialled = number(caller, "+4930"), number(callee, "0044207946")
    try:
        first = await sock.ask(
            arq(conf, caller, caller_no, dialled, "originate"), daemon.setup.auth_port
        )
        assert first.code == rc.ACCESS_ACCEPT, first
        second = await sock.ask(
            arq(conf, callee, caller_no, dialled, "answer"), daemon.setup.auth_port
        )
        for status, usage in (
            (rc.STATUS_START, None),
            (rc.STATUS_INTERIM, usage_s // 2),
            (rc.STATUS_STOP, usage_s),
        ):
            packet = radacct(conf, caller, caller_no, dialled, status, usage)
            reply = await sock.ask(packet, daemon.setup.acct_port)
            assert reply.code == rc.ACCOUNTING_RESPONSE
        # a retransmitted Stop (a new Identifier: the gatekeeper's retry) charges nothing
        again = radacct(conf, caller, caller_no, dialled, rc.STATUS_STOP, usage_s)
        assert (await sock.ask(again, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    return first, second


async def test_gnugk_answering_arq_of_an_account_neither_charges_nor_holds_the_callee(
    daemon: Daemon,
) -> None:
    # GNU Gatekeeper's RadAuth authorizes both ARQs of a call between two registered
    # endpoints: the caller's (originate) and the called endpoint's (answer), with the
    # same h323-conf-id. When the callee's alias was itself an account, its ARQ was
    # authorized as the callee's call of that conf-id: its locator took the conf-id,
    # so RadAcct's records charged the callee, and the caller's hold lingered until
    # the reaper. Calls go both ways at once (alice -> bob, bob -> alice, carol -> bob).
    for name in ("alice", "bob", "carol"):
        daemon.create_account(f"gk-{name}", "10.00", identities=[f"user:gk-{name}"])
    calls = [
        (conf_id(), "gk-alice", "gk-bob", 60),
        (conf_id(), "gk-bob", "gk-alice", 30),
        (conf_id(), "gk-carol", "gk-bob", 45),
        (conf_id(), "gk-alice", "gk-carol", 20),
    ]
    answers = await asyncio.gather(*(gnugk_call(daemon, *call) for call in calls))
    paid = {
        "gk-alice": (60 + 20) * MICROS_PER_S,
        "gk-bob": 30 * MICROS_PER_S,
        "gk-carol": 45 * MICROS_PER_S,
    }
    for account_id, cost in paid.items():
        assert money(daemon, account_id) == (parse_amount("10.00") - cost, 0, 0), account_id
    cdrs = sorted(
        (c.call_id, c.account_id, c.duration_s)
        for c in daemon.cdrs()
        if c.account_id.startswith("gk-")
    )
    assert cdrs == sorted((conf, caller, usage) for conf, caller, _, usage in calls)
    assert await orphans(daemon) == 0
    for (first, second), (conf, *_) in zip(answers, calls, strict=True):
        # the called endpoint is admitted (the gatekeeper would reject the call
        # otherwise) with the caller's limit, not one of its own money
        assert second.code == rc.ACCESS_ACCEPT, (conf, second)
        assert second.integer(rc.SESSION_TIMEOUT) == first.integer(rc.SESSION_TIMEOUT)
        assert second.cisco_value(rc.H323_CREDIT_TIME) == first.cisco_value(rc.H323_CREDIT_TIME)


async def test_gnugk_answering_arq_of_an_alias_that_is_no_account_is_admitted(
    daemon: Daemon,
) -> None:
    # The called endpoint's alias names no account: its ARQ was refused "unknown
    # account" and the gatekeeper rejected the call the caller had paid for.
    daemon.create_account("gk-dave", "10.00", identities=["user:gk-dave"])
    conf = conf_id()
    first, second = await gnugk_call(daemon, conf, "gk-dave", "reception-desk", 40)
    assert second.code == rc.ACCESS_ACCEPT, second
    assert second.integer(rc.SESSION_TIMEOUT) == first.integer(rc.SESSION_TIMEOUT)
    assert money(daemon, "gk-dave") == (parse_amount("10.00") - 40 * MICROS_PER_S, 0, 0)
    assert [c.duration_s for c in daemon.cdrs() if c.call_id == conf] == [40]


async def test_answer_arq_never_takes_over_nor_rides_another_call(daemon: Daemon) -> None:
    # An "answer" Access-Request is not a way to call for free nor to take another
    # account's call: for a conf-id another gateway holds, or a call that is over, it
    # is refused, and the live call keeps its account, hold and charge. For a conf-id
    # of no call here it is decided as any Access-Request (its User-Name's account
    # pays: its own call, held and charged as such).
    daemon.create_account("gk-erin", "10.00", identities=["user:gk-erin"])
    daemon.create_account("gk-frank", "10.00", identities=["user:gk-frank"])
    sock = await GatewaySocket.open()
    conf, port = conf_id(), daemon.setup.auth_port
    dialled = "00442079460077"
    try:
        assert (
            await sock.ask(arq(conf, "gk-erin", "4930111", dialled, "originate"), port)
        ).code == rc.ACCESS_ACCEPT
        held = money(daemon, "gk-erin")
        assert held[1] > 0
        # the same conf-id said to come from another gateway (NAS-IP-Address)
        spoof = arq(conf, "gk-frank", "4930222", dialled, "answer", nas_ip="127.0.0.9")
        assert (await sock.ask(spoof, port)).code == rc.ACCESS_REJECT
        assert money(daemon, "gk-frank") == (parse_amount("10.00"), 0, 0)
        assert money(daemon, "gk-erin") == held
        for status, usage in ((rc.STATUS_START, None), (rc.STATUS_STOP, 25)):
            packet = radacct(conf, "gk-erin", "4930111", dialled, status, usage)
            assert (await sock.ask(packet, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        # the call is over: a late answer ARQ of it is refused, holds nothing
        late = arq(conf, "gk-frank", "4930111", dialled, "answer")
        assert (await sock.ask(late, port)).code == rc.ACCESS_REJECT
        # no call of this conf-id here: the answering endpoint's own call, as before
        own = conf_id()
        mine = await sock.ask(arq(own, "gk-frank", "4930222", dialled, "answer"), port)
        assert mine.code == rc.ACCESS_ACCEPT
        _, reserved, live = money(daemon, "gk-frank")
        assert reserved > 0 and live == 1
        for status, usage in ((rc.STATUS_START, None), (rc.STATUS_STOP, 5)):
            packet = radacct(own, "gk-frank", "4930222", dialled, status, usage)
            assert (await sock.ask(packet, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    assert money(daemon, "gk-erin") == (parse_amount("10.00") - 25 * MICROS_PER_S, 0, 0)
    assert money(daemon, "gk-frank") == (parse_amount("10.00") - 5 * MICROS_PER_S, 0, 0)
    assert await orphans(daemon) == 0
