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
import time
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
H323_CALL_TYPE, H323_GW_ID, H323_INCOMING_CONF_ID = 27, 33, 35


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
    # account's call: for a conf-id another gateway holds live it is the call's other
    # end (admitted, nothing held or charged to its User-Name's account), for a call
    # that is over it is refused, and the live call keeps its account, hold and
    # charge. For a conf-id of no call here it is decided as any Access-Request (its
    # User-Name's account pays: its own call, held and charged as such).
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
        # the same conf-id from another gateway (NAS-IP-Address): a terminating
        # gateway's incoming leg of the live call, its other end: admitted, nothing
        # held or charged to anyone but the caller (gk-frank's account untouched)
        other = arq(conf, "gk-frank", "4930222", dialled, "answer", nas_ip="127.0.0.9")
        assert (await sock.ask(other, port)).code == rc.ACCESS_ACCEPT
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


def cisco_leg(
    conf: str,
    leg_id: str,
    user: str,
    dialled: str,
    origin: str,
    status: int,
    event_s: int,
    usage_s: int = 0,
    cause_hex: str = "10",
) -> bytes:
    """An Accounting-Request of one call leg as Cisco IOS writes it (the
    cisco_ios_radius_acct samples): its own Acct-Session-Id, the call's h323-conf-id and
    h323-incoming-conf-id, h323-call-origin / -call-type of the leg."""
    call_type = b"Telephony" if origin == "answer" else b"VoIP"
    attrs = (
        rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        + rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1")
        + rc.attr_bytes(rc.ACCT_SESSION_ID, leg_id.encode())
        + rc.attr_bytes(rc.USER_NAME, user.encode())
        + rc.attr_bytes(rc.CALLING_STATION_ID, b"4930123456")
        + rc.attr_bytes(rc.CALLED_STATION_ID, dialled.encode())
        + rc.cisco_vsa(H323_GW_ID, b"h323-gw-id=gw1.example.net")
        + rc.cisco_vsa(rc.H323_CONF_ID, f"h323-conf-id={conf}".encode())
        + rc.cisco_vsa(H323_INCOMING_CONF_ID, f"h323-incoming-conf-id={conf}".encode())
        + rc.cisco_vsa(rc.H323_CALL_ORIGIN, f"h323-call-origin={origin}".encode())
        + rc.cisco_vsa(H323_CALL_TYPE, b"h323-call-type=" + call_type)
        + rc.attr_u32(rc.ACCT_DELAY_TIME, 0)
        + rc.attr_u32(rc.EVENT_TIMESTAMP, event_s)
    )
    if status == rc.STATUS_STOP:
        attrs += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
        attrs += rc.cisco_vsa(
            rc.H323_DISCONNECT_CAUSE, f"h323-disconnect-cause={cause_hex}".encode()
        )
    return rc.encode_request(rc.ACCOUNTING_REQUEST, 3, attrs, SECRET)


async def cisco_call(
    daemon: Daemon, conf: str, user: str, attempts: list[tuple[str, int, int, str]]
) -> rc.Packet:
    """The IVR's Access-Request, the incoming (answer) leg's Start, then one outgoing
    (originate) leg per attempt (leg id, start offset s, usage s, cause), each Start
    then Stop, its Stop sent again from another socket, then the incoming leg's Stop."""
    sock, resend = await GatewaySocket.open(), await GatewaySocket.open()
    dialled, t0 = number(conf, "0044207946"), int(time.time())
    ivr = (
        rc.attr_bytes(rc.USER_NAME, user.encode())
        + rc.attr_bytes(rc.USER_PASSWORD, bytes(16))
        + rc.attr_bytes(rc.CALLING_STATION_ID, b"4930123456")
        + rc.attr_bytes(rc.CALLED_STATION_ID, dialled.encode())
        + rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1")
        + rc.cisco_vsa(rc.H323_CONF_ID, f"h323-conf-id={conf}".encode())
    )
    port = daemon.setup.acct_port
    try:
        accept = await sock.ask(
            rc.encode_access_request(1, os.urandom(16), ivr, SECRET), daemon.setup.auth_port
        )
        assert accept.code == rc.ACCESS_ACCEPT, accept
        incoming = conf.replace(" ", "")[:7] + "A"
        await sock.ask(
            cisco_leg(conf, incoming, user, dialled, "answer", rc.STATUS_START, t0), port
        )
        end_s = 0
        for leg_id, offset_s, usage_s, cause in attempts:
            start = cisco_leg(
                conf, leg_id, user, dialled, "originate", rc.STATUS_START, t0 + offset_s
            )
            assert (await sock.ask(start, port)).code == rc.ACCOUNTING_RESPONSE
            end_s = offset_s + usage_s
            stop = cisco_leg(
                conf, leg_id, user, dialled, "originate", rc.STATUS_STOP, t0 + end_s, usage_s, cause
            )
            # sent again from another port (the RADIUS duplicate cache does not see it)
            for peer in (sock, resend):
                assert (await peer.ask(stop, port)).code == rc.ACCOUNTING_RESPONSE
        stop = cisco_leg(conf, incoming, user, dialled, "answer", rc.STATUS_STOP, t0 + end_s, end_s)
        assert (await sock.ask(stop, port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
        resend.close()
    return accept


async def test_cisco_leg_after_the_first_legs_stop_is_charged_once(daemon: Daemon) -> None:
    # A Cisco gateway tries the call's next dial-peer (rotary hunting), or follows a
    # redirect or a forward, with a new outgoing leg: its own Acct-Session-Id, the
    # call's h323-conf-id (Cisco writes a new conf-id per billable call, the calls of
    # one session sharing h323-incoming-conf-id). The first leg's Stop closed the call;
    # the next leg's packets met a closed call: its Stop went to cdr:orphans
    # (stop_after_close) and, with less usage than the first leg, was dropped unbilled.
    for name in ("hunt", "fwd", "both"):
        daemon.create_account(f"cs-{name}", "10.00", identities=[f"user:cs-{name}"])
    before = await orphans(daemon)
    calls = {
        # busy on the first dial-peer (cause 0x11), answered on the second
        conf_id(): ("cs-hunt", [("0000001B", 0, 0, "11"), ("0000001C", 1, 50, "10")]),
        # 30 s answered, then forwarded: a second leg of 20 s
        conf_id(): ("cs-fwd", [("0000002B", 0, 30, "10"), ("0000002C", 31, 20, "10")]),
        # two failed attempts, then 12 s on the third
        conf_id(): ("cs-both", [("3B", 0, 0, "22"), ("3C", 1, 0, "26"), ("3D", 2, 12, "10")]),
    }
    await asyncio.gather(
        *(cisco_call(daemon, conf, user, legs) for conf, (user, legs) in calls.items())
    )
    for conf, (user, legs) in calls.items():
        paid = sum(usage_s for _, _, usage_s, _ in legs) * MICROS_PER_S
        assert money(daemon, user) == (parse_amount("10.00") - paid, 0, 0), user
        mine = [c for c in daemon.cdrs() if c.account_id == user]
        assert sum(c.charged_micros for c in mine) == paid
        assert {c.call_id.split("#")[0] for c in mine} == {conf}
        charged = sorted(c.duration_s for c in mine if c.charged_micros)
        assert charged == sorted(u for _, _, u, _ in legs if u)
    assert await orphans(daemon) == before


async def test_cisco_leg_overlapping_the_charged_call_is_kept_not_charged(daemon: Daemon) -> None:
    # A leg of the same conf-id whose time lies within what the call was charged (a
    # hairpin's second leg reported after the first's Stop) is not charged again: kept
    # in cdr:legs with its reason, not orphaned, not dropped.
    daemon.create_account("cs-pin", "10.00", identities=["user:cs-pin"])
    conf = conf_id()
    with daemon.redis() as r:
        legs_before = r.xlen("cdr:legs") if r.exists("cdr:legs") else 0
    await cisco_call(daemon, conf, "cs-pin", [("4B", 0, 40, "10"), ("4C", 10, 25, "10")])
    assert money(daemon, "cs-pin") == (parse_amount("10.00") - 40 * MICROS_PER_S, 0, 0)
    with daemon.redis() as r:
        assert r.xlen("cdr:legs") == legs_before + 3  # its Start and its Stop, twice
        ((_, last),) = r.xrevrange("cdr:legs", count=1)
    assert b"h323_leg_within_call" in b"".join(last.values())
