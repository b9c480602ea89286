"""FreeSWITCH's mod_radius_cdr over UDP through the real frontend, sessions and ledger
(a real Redis): its Start goes at routing, before the answer. The deadlines count
from it all the same (money first: cut early by the ring time, never late); the Stop
says the answer, the CDR's and the charge's.

What the module sends (src/mod/event_handlers/mod_radius_cdr/mod_radius_cdr.c):
my_on_routing sends Acct-Status-Type Start with Acct-Session-Id (the channel's uuid),
User-Name, Freeswitch-Src/-CLID/-Dst/-Dialplan, Framed-IP-Address, -Context, -ANI,
-Source and Freeswitch-Callstartdate (the channel's created time), and the answer
date only once the channel was answered (a transfer routes it again); my_on_reporting
sends the Stop with Freeswitch-Hangupcause, -Lastapp, -Billusec, the dates,
Acct-Session-Time = billsec (hung up - answered, whole seconds) and
Freeswitch-Direction. No Event-Timestamp and no Interim; freeradius-client adds
NAS-IP-Address, NAS-Port and Acct-Delay-Time. Dates: "%04u-%02u-%02uT%02u:%02u:%02u.%06u
%+03d%02d" of the local time and tm_gmtoff / 3600, tm_gmtoff % 3600.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from radius_peer import TestGateway, UdpPeer
from sessions_harness import EUR, Clock, add_account, make_ledger, make_sessions, read_cdrs

from chargingd.core.config import config_from_dict
from chargingd.ledger import Ledger
from chargingd.radius import codec as rc
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.server import RadiusFrontend
from chargingd.sessions.service import Sessions

SECRET = b"freeswitch-secret"
UUID = "3f8a1c2e-7b4d-4e1f-9a6c-0d2b5e8f1a37"
BERLIN = "030123456"  # the harness tariff: 0.60 EUR a minute, per second


def attr(attr_type: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return struct.pack("!BBI", attr_type, 6, value)
    raw = value.encode() if isinstance(value, str) else value
    return bytes((attr_type, len(raw) + 2)) + raw


def fs(sub_type: int, value: str | int) -> bytes:
    """A Freeswitch (vendor 27880) VSA: strings, or 4-octet integers."""
    raw = struct.pack("!I", value) if isinstance(value, int) else value.encode()
    return struct.pack("!BBIBB", 26, len(raw) + 8, 27880, sub_type, len(raw) + 2) + raw


def fs_date(epoch_ms: int, zone: str = "+0100") -> str:
    """A date as mod_radius_cdr writes it: local time, microseconds, the zone as
    "%+03d%02d" of tm_gmtoff / 3600 and tm_gmtoff % 3600 (cut to its 32-octet buffer)."""
    sign = -1 if zone[0] == "-" else 1
    hours = int(zone[1:3])
    local = datetime.fromtimestamp(epoch_ms / 1000, UTC).astimezone(
        timezone(sign * timedelta(hours=hours, minutes=30 if zone[3:] == "18" else 0))
    )
    return local.strftime("%Y-%m-%dT%H:%M:%S.%f") + zone


def accounting_request(ident: int, attrs: bytes) -> bytes:
    """As freeradius-client sends it: no Message-Authenticator (RFC 2866 §3)."""
    header = struct.pack("!BBH", rc.ACCOUNTING_REQUEST, ident, 20 + len(attrs))
    return header + rc.md5(header + bytes(16) + attrs + SECRET) + attrs


def access_request(ident: int, attrs: bytes) -> bytes:
    return rc.encode_access_request(ident, bytes(range(ident, ident + 16)), attrs, SECRET)


@dataclass
class Bench:
    t0_ms: int
    clock: Clock
    ledger: Ledger
    sessions: Sessions
    frontend: RadiusFrontend
    nas: UdpPeer
    gateway: TestGateway  # the RFC 5176 listener: the cuts that reached the switch

    async def ask(self, packet: bytes, port: int) -> rc.Packet:
        self.nas.send(packet, port)
        raw = await self.nas.recv()
        assert raw is not None, "no answer"
        return rc.decode(raw)

    async def account(self, ident: int, attrs: bytes) -> None:
        reply = await self.ask(accounting_request(ident, attrs), self.frontend.acct_port)
        assert reply.code == rc.ACCOUNTING_RESPONSE


@asynccontextmanager
async def bench(
    redis: aioredis.Redis, tmp_path: Path, credit_mode: str = "interim", **more: Any
) -> AsyncIterator[Bench]:
    coa = await UdpPeer.open()
    gateway = TestGateway(coa, SECRET)
    client: dict[str, Any] = {"name": "fs", "address": "127.0.0.1", "secret": SECRET.decode(),
                              "coa_port": coa.port, "flavour": "generic",
                              "credit_mode": credit_mode, **more}  # fmt: skip
    radius = config_from_dict(
        {"radius": {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": [client]}}
    ).radius
    t0_ms = int(time.time()) * 1000  # whole seconds: exact as the frontend's float clock
    clock = Clock(t0_ms)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path, credit_modes={"fs": credit_mode})
    # The frontend's clock is the test's: mod_radius_cdr sends no Event-Timestamp, so
    # each packet's event time is its arrival (minus Acct-Delay-Time).
    frontend = RadiusFrontend(radius, sessions, clock=lambda: clock.now_ms / 1000)
    dm = DynamicAuthClient(frontend.clients, timeout_s=0.2, retries=0, bind="127.0.0.1")
    await dm.start()
    await frontend.start()
    sessions.attach_call_cutter(dm)
    nas = await UdpPeer.open()
    try:
        yield Bench(t0_ms, clock, ledger, sessions, frontend, nas, gateway)
    finally:
        nas.close()
        await frontend.stop()
        await dm.close()
        await gateway.close()


def profile() -> bytes:
    """What both packets carry of the caller profile, and freeradius-client's own."""
    return (
        attr(rc.ACCT_SESSION_ID, UUID)
        + attr(rc.USER_NAME, "1000")
        + fs(4, "1000")  # Freeswitch-Src
        + fs(2, "Alice")  # -CLID
        + fs(5, BERLIN)  # -Dst
        + fs(3, "XML")  # -Dialplan
        + attr(rc.FRAMED_IP_ADDRESS, bytes((192, 0, 2, 10)))
        + fs(18, "default")  # -Context
        + fs(8, "1000")  # -ANI
        + fs(19, "mod_sofia")  # -Source
        + attr(5, 0)  # NAS-Port
        + attr(rc.ACCT_DELAY_TIME, 0)
        + attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1)))
    )


def start_at_routing(created_ms: int) -> bytes:
    """my_on_routing's Start: the channel was created, it is not answered."""
    return attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START) + profile() + fs(20, fs_date(created_ms))


def stop(
    created_ms: int, answered_ms: int, hungup_ms: int, cause: int, zone: str = "+0100"
) -> bytes:
    """my_on_reporting's Stop: billusec = hung up - answered, billsec its whole seconds."""
    billusec = (hungup_ms - answered_ms) * 1000 if answered_ms else 0
    packet = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + profile() + fs(13, cause)
    packet += fs(10, "bridge") + fs(15, billusec) + fs(20, fs_date(created_ms, zone))
    if answered_ms:
        packet += fs(21, fs_date(answered_ms, zone))
    packet += fs(23, fs_date(hungup_ms, zone))
    packet += attr(rc.ACCT_SESSION_TIME, billusec // 1_000_000) + fs(24, "inbound")
    return packet


async def authorize(b: Bench, session_timeout_s: int) -> None:
    asked = attr(rc.USER_NAME, "1000") + attr(rc.CALLED_STATION_ID, BERLIN)
    asked += attr(rc.ACCT_SESSION_ID, UUID)
    reply = await b.ask(access_request(1, asked), b.frontend.auth_port)
    assert reply.code == rc.ACCESS_ACCEPT
    assert reply.integer(rc.SESSION_TIMEOUT) == session_timeout_s


@pytest.mark.parametrize(
    ("zone", "answer_offset_ms"),
    [
        ("+0100", 8_250),  # Freeswitch-Callanswerdate, to the millisecond
        # India (+05:30) as mod_radius_cdr writes it ("+05" then 1800 s cut to "18"):
        # no zone to read, so the Stop's arrival minus Acct-Session-Time (billsec, cut
        # to whole seconds): within a second
        ("+0518", 9_000),
    ],
)
async def test_freeswitch_call_that_rang_8s_is_answered_8s_after_its_start(
    redis: aioredis.Redis, tmp_path: Path, zone: str, answer_offset_ms: int
) -> None:
    # The Start came at routing (t0), the callee answered 8.25 s later, hung up after
    # 30.5 s of talk (billsec 30). The CDR said answered at t0: the answer time was
    # early by the ring time. Its retransmissions change nothing.
    async with bench(redis, tmp_path) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 1000)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 39_000  # the Stop leaves as the channel reports
        final = stop(t0, t0 + 8_250, t0 + 38_750, 16, zone)
        await b.account(3, final)
        await b.account(3, final)  # a retransmission (RFC 5080: the cached answer)
        await b.account(4, final)  # the same Stop again under another Identifier
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.duration_s, cdr.cost_micros, cdr.charged_micros) == (
            "normal", 30, 300_000, 300_000)  # fmt: skip
        assert (cdr.start_ms, cdr.answer_ms) == (t0, t0 + answer_offset_ms)
        assert cdr.disconnect_cause == 16
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_unanswered_freeswitch_call_is_unanswered_and_charged_nothing(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # The call rings 20 s, nobody answers (NO_ANSWER, 19): its Stop says no answer
    # date and billsec 0. It was not charged the ring time as talk.
    async with bench(redis, tmp_path) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 1000)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 20_000
        await b.account(3, stop(t0, 0, t0 + 20_000, 19))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "unanswered", 0, 0, 0)  # fmt: skip
        assert cdr.disconnect_cause == 19
        assert "cut_reason" not in cdr.extra
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR, 0)


@pytest.mark.parametrize("credit_mode", ["own_timer", "interim"])
async def test_freeswitch_call_ringing_past_its_deadline_is_cut_and_charged_nothing(
    redis: aioredis.Redis, tmp_path: Path, credit_mode: str
) -> None:
    # An account with money for 5 s; the call rings 20 s. mod_radius_cdr sends
    # nothing between its Start at routing and its Stop, so the own timer (and a
    # limited interim call's deadline) counts from that Start, money-safe: the
    # ringing call is cut 5 s after it. Its Stop says it was never answered: one
    # CDR, unanswered, nothing charged for talk it never had.
    async with bench(redis, tmp_path, credit_mode) as b:
        await add_account(b.ledger, "acc1", balance_micros=50_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 5)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 6_000
        assert await b.sessions.cutter.run_once() == 1
        (request,) = b.gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        b.clock.now_ms = t0 + 6_500
        final = stop(t0, 0, t0 + 6_200, 16)
        await b.account(3, final)
        await b.account(4, final)  # again, under another Identifier
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "unanswered", 0, 0, 0)  # fmt: skip
        assert cdr.extra["cut_reason"] == "credit_cut"
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (50_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_prepaid_freeswitch_call_is_cut_by_its_ring_time_early_never_late(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # own_timer: money for exactly 60 s. The call rings 8 s, then talks. mod_radius_cdr
    # tells nothing of the answer before the Stop, so the own timer counts from the
    # Start at routing (+ the 999 ms an answer's whole-second time may be early): the
    # cut goes at Start + 61 s, 53 s into the talk, never after the money. The CDR is
    # answered when the Stop says, charged the 53 s the call had.
    async with bench(redis, tmp_path, "own_timer") as b:
        await add_account(b.ledger, "acc1", balance_micros=600_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 60)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 60_000
        assert await b.sessions.cutter.run_once() == 0  # not before Start + the paid 60 s
        assert b.gateway.requests == []
        b.clock.now_ms = t0 + 61_000
        assert await b.sessions.cutter.run_once() == 1
        (request,) = b.gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        b.clock.now_ms = t0 + 62_000
        await b.account(3, stop(t0, t0 + 8_000, t0 + 61_200, 16))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "credit_cut", t0 + 8_000, 53, 530_000)  # fmt: skip
        assert cdr.extra["cut_confirmed"] == "1"
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (70_000, 0)


async def test_freeswitch_call_whose_stop_is_lost_is_charged_from_its_start(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # hold_all (FreeSWITCH enforces the Session-Timeout itself): money for 60 s, told
    # 60 s. The Stop never comes (a RADIUS outage). The reaper charges the call from
    # its Start at routing, bounded by what was granted and told (60 s), as any
    # other call's: not nothing because the Start was not known to be the answer.
    async with bench(redis, tmp_path, "hold_all") as b:
        await add_account(b.ledger, "acc1", balance_micros=600_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 60)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 3_600_000
        assert await b.sessions.reaper.run_once() == 1
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "stale", t0, 60, 600_000)  # fmt: skip
        assert cdr.charge_reason == "provisional"
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (0, 0)
        # The Stop comes after all (answered at t0 + 8 s, 30 s of talk; sent at its
        # hang-up, retried since: Acct-Delay-Time): it corrects the charge and the
        # CDR, answered at its date.
        late = stop(t0, t0 + 8_000, t0 + 38_000, 16)
        delayed = attr(rc.ACCT_DELAY_TIME, 3_600 - 38)
        await b.account(3, late.replace(attr(rc.ACCT_DELAY_TIME, 0), delayed))
        _, corrected = await read_cdrs(redis)
        assert (corrected.status, corrected.answer_ms, corrected.duration_s) == (
            "normal", t0 + 8_000, 30)  # fmt: skip
        assert (corrected.charged_micros, corrected.revision) == (300_000, 1)
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (300_000, 0)


async def test_a_start_without_freeswitch_dates_is_still_the_answer(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Any other gateway's Start (RFC 2866) is the answer: the own timer counts from it
    # and cuts at the end of what was paid for; the CDR is answered at the Start. A
    # Start with Freeswitch-Src/-Dst but no Freeswitch-Callstartdate (not
    # mod_radius_cdr's) is such a Start too.
    async with bench(redis, tmp_path, "own_timer") as b:
        await add_account(b.ledger, "acc1", balance_micros=600_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 60)
        b.clock.now_ms = t0 + 8_000
        await b.account(2, attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START) + profile())
        b.clock.now_ms = t0 + 8_000 + 60_000
        assert await b.sessions.cutter.run_once() == 0  # not before the paid 60 s
        b.clock.now_ms = t0 + 8_000 + 61_000
        assert await b.sessions.cutter.run_once() == 1
        (request,) = b.gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        final = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + profile()
        await b.account(3, final + attr(rc.ACCT_SESSION_TIME, 61))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "credit_cut", t0 + 8_000, 61, 600_000)  # fmt: skip
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (0, 0)


async def test_a_freeswitch_start_with_an_answer_date_is_the_answer_at_that_date(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # A transfer routes an answered channel again: mod_radius_cdr sends a second Start,
    # now with Freeswitch-Callanswerdate (and -Calltransferdate). The own timer keeps
    # counting from the first Start (money-safe: cut at most the ring time early);
    # the CDR is answered at the date, charged the talk the Stop says.
    async with bench(redis, tmp_path, "own_timer") as b:
        await add_account(b.ledger, "acc1", balance_micros=600_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 60)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 20_000
        again = start_at_routing(t0) + fs(21, fs_date(t0 + 8_000)) + fs(22, fs_date(t0 + 20_000))
        await b.account(3, again)
        b.clock.now_ms = t0 + 60_000
        assert await b.sessions.cutter.run_once() == 0
        b.clock.now_ms = t0 + 61_000
        assert await b.sessions.cutter.run_once() == 1
        (request,) = b.gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        b.clock.now_ms = t0 + 62_000
        await b.account(4, stop(t0, t0 + 8_000, t0 + 61_500, 16))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.answer_ms, cdr.duration_s, cdr.charged_micros) == (
            "credit_cut", t0 + 8_000, 53, 530_000)  # fmt: skip
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (70_000, 0)


async def test_accounting_only_freeswitch_call_is_adopted_with_its_real_answer(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # mod_radius_cdr alone (no Access-Request: the trunk's default account): the
    # ringing Start adopts the call unanswered, the Stop answers and charges it once.
    async with bench(redis, tmp_path, default_account="trunk", lookup=["default"]) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        t0 = b.t0_ms
        await b.account(2, start_at_routing(t0))
        await b.account(3, start_at_routing(t0))  # again, under another Identifier
        b.clock.now_ms = t0 + 39_000
        final = stop(t0, t0 + 8_250, t0 + 38_750, 16)
        await b.account(4, final)
        await b.account(5, final)
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.status, cdr.answer_ms, cdr.duration_s) == (
            "trunk", "normal", t0 + 8_250, 30)  # fmt: skip
        assert (cdr.cost_micros, cdr.charged_micros, cdr.extra["adopted"]) == (
            300_000, 300_000, "1")  # fmt: skip
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


B_UUID = "9c1e4b7a-2d3f-4a5b-8c6d-7e8f9a0b1c2d"


def b_leg(packet: bytes) -> bytes:
    """The B-leg's packet of an A-leg's: FreeSWITCH originated it to bridge the caller,
    its caller profile cloned from the A-leg (same User-Name, Freeswitch-Src), its own
    uuid and Freeswitch-Direction "outbound"."""
    own = packet.replace(attr(rc.ACCT_SESSION_ID, UUID), attr(rc.ACCT_SESSION_ID, B_UUID))
    return own.replace(fs(24, "inbound"), fs(24, "outbound"))


@pytest.mark.parametrize("b_leg_first", [True, False])
async def test_bridged_freeswitch_call_is_charged_once_not_for_its_b_leg(
    redis: aioredis.Redis, tmp_path: Path, b_leg_first: bool
) -> None:
    # mod_radius_cdr's on_reporting runs for every channel: the B-leg FreeSWITCH
    # originated to bridge the caller sends its own Stop (its uuid, the A-leg's
    # User-Name, billsec 30, Freeswitch-Direction "outbound"). It was adopted by that
    # User-Name and charged the caller a second time; it is kept in cdr:legs
    # (freeswitch_outbound_leg), charged nothing, whichever Stop comes first; cdr:orphans
    # (bounded: kept for unbilled usage) gets nothing.
    async with bench(redis, tmp_path) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 1000)
        await b.account(2, start_at_routing(t0) + fs(25, B_UUID))  # Freeswitch-Other-Leg-Id
        b.clock.now_ms = t0 + 39_000
        a_stop = stop(t0, t0 + 8_250, t0 + 38_750, 16)
        b_stop = b_leg(stop(t0 + 100, t0 + 8_250, t0 + 38_750, 16))
        first, second = (b_stop, a_stop) if b_leg_first else (a_stop, b_stop)
        await b.account(3, first)
        await b.account(4, second)
        await b.account(3 if b_leg_first else 4, b_stop)  # a retransmission (cached)
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.status, cdr.duration_s, cdr.charged_micros) == (
            UUID, "normal", 30, 300_000)  # fmt: skip
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0
        ((_, fields),) = await redis.xrange("cdr:legs")
        assert fields[b"reason"] == b"freeswitch_outbound_leg"
        assert fields[b"call.session_id"] == B_UUID.encode()
        assert (fields[b"direction"], fields[b"usage_s"]) == (b"outbound", b"30")
        assert await redis.keys(f"*{B_UUID}*") == []  # no session, nothing in the ledger
        kept = "accounting kept in cdr:legs (freeswitch_outbound_leg)"
        assert b.sessions.accounting.legs.totals[kept] == 1
        # The same Stop again under another Identifier: still nothing charged.
        await b.account(5, b_stop)
        assert len(await read_cdrs(redis)) == 1
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.keys(f"*{B_UUID}*") == []


async def test_accounting_only_freeswitch_b_leg_is_not_adopted(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # No Access-Request at all (the trunk's default account): the inbound A-leg is
    # adopted and charged once; its outbound B-leg is not a second call.
    async with bench(redis, tmp_path, default_account="trunk", lookup=["default"]) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        t0 = b.t0_ms
        await b.account(2, start_at_routing(t0) + fs(25, B_UUID))
        b.clock.now_ms = t0 + 39_000
        await b.account(3, b_leg(stop(t0, t0 + 8_250, t0 + 38_750, 16)))
        await b.account(4, stop(t0, t0 + 8_250, t0 + 38_750, 16))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.charged_micros, cdr.extra["adopted"]) == (UUID, 300_000, "1")
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0
        # A Start that names a partner is a B-leg's (an A-leg's first routing comes
        # before any bridge): not adopted, even this A-leg's; its inbound Stop is.
        reasons = [fields[b"reason"] for _, fields in await redis.xrange("cdr:legs")]
        assert reasons == [b"freeswitch_b_leg_start", b"freeswitch_outbound_leg"]


async def test_authorized_freeswitch_outbound_leg_is_charged(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # A leg chargingd authorized (an originate-API call that sent its Access-Request)
    # is charged as any call, outbound or not: only adoption looks at the direction.
    async with bench(redis, tmp_path) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 1000)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 39_000
        outbound = stop(t0, t0 + 8_250, t0 + 38_750, 16).replace(
            fs(24, "inbound"), fs(24, "outbound")
        )
        await b.account(3, outbound)
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.duration_s, cdr.charged_micros) == (UUID, 30, 300_000)
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_accounting_only_call_of_another_gateway_is_still_adopted(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # No FreeSWITCH attributes (RFC 2866 only): adopted and charged as before.
    async with bench(redis, tmp_path, default_account="trunk", lookup=["default"]) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        t0 = b.t0_ms
        plain = attr(rc.ACCT_SESSION_ID, "plain-1") + attr(rc.USER_NAME, "1000")
        plain += attr(rc.CALLED_STATION_ID, BERLIN) + attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1)))
        await b.account(2, attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START) + plain)
        b.clock.now_ms = t0 + 30_000
        final = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + plain
        await b.account(3, final + attr(rc.ACCT_SESSION_TIME, 30))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.duration_s, cdr.charged_micros, cdr.extra["adopted"]) == (
            "plain-1", 30, 300_000, "1")  # fmt: skip
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


def b_leg_start(created_ms: int) -> bytes:
    """The B-leg's Start: sofia_on_init moves the channel FreeSWITCH originated to
    CS_ROUTING, where the global state handlers run (originate_on_routing returning
    FALSE skips only the standard dialplan routing), so my_on_routing sends it. Its
    caller profile is the A-leg's clone (the same User-Name); it carries
    Freeswitch-Other-Leg-Id (the originator set its signal_bond when the channel was
    made) and, as every Start, no Freeswitch-Direction (my_on_reporting alone sends it)."""
    own = start_at_routing(created_ms).replace(
        attr(rc.ACCT_SESSION_ID, UUID), attr(rc.ACCT_SESSION_ID, B_UUID)
    )
    return own + fs(25, UUID)


@pytest.mark.parametrize("authorized", [True, False])
async def test_bridged_freeswitch_call_with_its_b_legs_start_is_charged_once(
    redis: aioredis.Redis, tmp_path: Path, authorized: bool
) -> None:
    # Both legs route, so both send a Start: the B-leg's Start (no direction, the
    # A-leg's User-Name, Other-Leg-Id = the A-leg) was adopted as a call of its own,
    # and its Stop (direction outbound) then found that session and charged it: the
    # caller paid twice for one bridged call.
    more: dict[str, Any] = {} if authorized else {"default_account": "trunk",
                                                  "lookup": ["default"]}  # fmt: skip
    async with bench(redis, tmp_path, **more) as b:
        account_id = "acc1" if authorized else "trunk"
        identities = ("user:1000",) if authorized else ()
        await add_account(b.ledger, account_id, balance_micros=10 * EUR, identities=identities)
        t0 = b.t0_ms
        if authorized:
            await authorize(b, 1000)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 100
        await b.account(3, b_leg_start(t0 + 100))
        b.clock.now_ms = t0 + 39_000
        await b.account(4, b_leg(stop(t0 + 100, t0 + 8_250, t0 + 38_750, 16)))
        await b.account(5, stop(t0, t0 + 8_250, t0 + 38_750, 16))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.duration_s, cdr.charged_micros) == (UUID, 30, 300_000)
        account = await b.ledger.get_account(account_id)
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 300_000, 0)
        assert await redis.keys(f"*{B_UUID}*") == []  # no session, nothing in the ledger
        assert await redis.xlen("cdr:orphans") == 0
        reasons = [fields[b"reason"] for _, fields in await redis.xrange("cdr:legs")]
        assert reasons == [b"freeswitch_b_leg_start", b"freeswitch_outbound_leg"]


async def test_freeswitch_call_cut_ringing_whose_stop_comes_after_the_reaper_is_unanswered(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # own_timer, money for 5 s: the ringing call is cut 5 s after its Start (confirmed:
    # the switch ACKed), its Stop is held up (a RADIUS outage) and the reaper charges
    # it from its Start. The Stop, when it comes, says it was never answered: the
    # correction refunds all and the CDR is unanswered, as when the Stop comes in
    # time. The correction called it credit_cut (a cut call that talked 0 s).
    async with bench(redis, tmp_path, "own_timer") as b:
        await add_account(b.ledger, "acc1", balance_micros=50_000, identities=("user:1000",))
        t0 = b.t0_ms
        await authorize(b, 5)
        await b.account(2, start_at_routing(t0))
        b.clock.now_ms = t0 + 6_000
        assert await b.sessions.cutter.run_once() == 1
        b.clock.now_ms = t0 + 3_600_000
        assert await b.sessions.reaper.run_once() == 1
        (reaped,) = await read_cdrs(redis)
        assert (reaped.status, reaped.charged_micros) == ("stale", 50_000)
        late = stop(t0, 0, t0 + 6_200, 16)
        delayed = attr(rc.ACCT_DELAY_TIME, 3_600 - 7)
        await b.account(3, late.replace(attr(rc.ACCT_DELAY_TIME, 0), delayed))
        _, corrected = await read_cdrs(redis)
        assert (corrected.status, corrected.answer_ms, corrected.duration_s) == (
            "unanswered", 0, 0)  # fmt: skip
        assert (corrected.charged_micros, corrected.revision) == (0, 1)
        assert corrected.extra["cut_reason"] == "credit_cut"
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (50_000, 0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("credit_mode", ["hold_all", "own_timer", "interim"])
async def test_freeswitch_start_before_its_access_request_is_an_authorized_call(
    redis: aioredis.Redis, tmp_path: Path, credit_mode: str, fused: bool
) -> None:
    # mod_radius_cdr's Start goes from a global routing handler, which runs before the
    # standard one that hunts the dialplan, where mod_xml_radius's radius_auth (an
    # inline action) sends the Access-Request: the Start comes first. It adopted the
    # call, and the Access-Request then held the money and answered, but the session
    # stayed adopted ("no authorize here"): its Stop was charged in full as debt. A
    # prepaid call that ran into the cut tolerance took the account below zero
    # (overrun), and an interim call was never cut. Now it is the call authorized
    # (fused: one script; else step by step, as on Redis Cluster).
    async with bench(redis, tmp_path, credit_mode) as b:
        if not fused:
            b.sessions.step_by_step()
        await add_account(b.ledger, "acc1", balance_micros=600_000, identities=("user:1000",))
        t0 = b.t0_ms
        await b.account(2, start_at_routing(t0))
        await authorize(b, 60)
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (600_000, 600_000)
        for at_s in (30, 61, 62):
            b.clock.now_ms = t0 + at_s * 1000
            await b.sessions.cutter.run_once()
        cut = credit_mode != "hold_all"  # (hold_all: the switch ends it at its timeout)
        assert [r.code for r in b.gateway.requests] == [rc.DISCONNECT_REQUEST] * cut
        b.clock.now_ms = t0 + 63_000
        await b.account(3, stop(t0, t0 + 1_000, t0 + 62_500, 16))  # 61 s of talk
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.duration_s, cdr.charged_micros, cdr.charge_reason) == (
            "credit_cut", 61, 600_000, "cut_tolerance")  # fmt: skip
        assert "adopted" not in cdr.extra
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (0, 0)


E_UUID = "5b2d7c9e-1f3a-4b6c-8d0e-2a4c6e8f0b1d"


def originated(packet: bytes) -> bytes:
    """A channel switch_ivr_originate made without an originating session: the
    originate API (click-to-call), or a leg of an enterprise originate (a bridge to
    "a:_:b": enterprise_originate_thread calls switch_ivr_originate(NULL, ...) with the
    A-leg's caller profile duplicated, so the same User-Name). No session, so no
    signal_bond (switch_core_session_outgoing_channel sets it from the originating
    session only): its Start names no other leg; its Stop says "outbound"."""
    own = packet.replace(attr(rc.ACCT_SESSION_ID, UUID), attr(rc.ACCT_SESSION_ID, E_UUID))
    return own.replace(fs(24, "inbound"), fs(24, "outbound"))


async def test_freeswitch_leg_originated_without_a_session_is_a_call_of_its_own(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # An originate-API call (click-to-call: no Access-Request, no A-leg) is a real call:
    # its Start (no Other-Leg-Id, no direction) is adopted, its outbound Stop charges it
    # once. Nothing in what mod_radius_cdr sends tells it from a leg of an enterprise
    # originate (the same packets, the A-leg's User-Name): that leg is charged as a
    # call of its own too (docs/radius.md). With disable_radius_start on those legs
    # (<disable_radius_start=true> in the enterprise dial string) only their Stop comes:
    # an outbound leg nobody authorized is never adopted, the A-leg bills the call once.
    async with bench(redis, tmp_path, default_account="trunk", lookup=["default"]) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        t0 = b.t0_ms
        await b.account(2, originated(start_at_routing(t0)))
        b.clock.now_ms = t0 + 39_000
        await b.account(3, originated(stop(t0, t0 + 8_250, t0 + 38_750, 16)))
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.duration_s, cdr.charged_micros) == (E_UUID, 30, 300_000)
        assert cdr.extra["adopted"] == "1"
        # A bridged call whose enterprise B-leg sends no Start: charged once, its A-leg.
        b.clock.now_ms = t0 + 40_000
        await b.account(4, start_at_routing(t0 + 40_000))
        b.clock.now_ms = t0 + 79_000
        leg = originated(stop(t0 + 40_100, t0 + 48_250, t0 + 78_750, 16))
        await b.account(
            5, leg.replace(attr(rc.ACCT_SESSION_ID, E_UUID), attr(rc.ACCT_SESSION_ID, B_UUID))
        )
        await b.account(6, stop(t0 + 40_000, t0 + 48_250, t0 + 78_750, 16))
        cdrs = await read_cdrs(redis)
        assert sorted((c.call_id, c.charged_micros) for c in cdrs) == sorted(
            [(E_UUID, 300_000), (UUID, 300_000)]
        )
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 600_000, 0)
        reasons = [fields[b"reason"] for _, fields in await redis.xrange("cdr:legs")]
        assert reasons == [b"freeswitch_outbound_leg"]
