"""Accounting shaped as gateways document it, over UDP through the real frontend,
sessions and ledger (a real Redis): what each dialect's packets charge."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from radius_peer import UdpPeer
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    make_ledger,
    make_plan,
    make_sessions,
    read_cdrs,
)

from chargingd.core.config import config_from_dict
from chargingd.ledger import Ledger
from chargingd.radius import codec as rc
from chargingd.radius.server import RadiusFrontend, start_radius
from chargingd.rating.plan import TariffPlan

SECRET = b"dialect-secret"


def attr(attr_type: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return struct.pack("!BBI", attr_type, 6, value)
    raw = value.encode() if isinstance(value, str) else value
    return bytes((attr_type, len(raw) + 2)) + raw


def cisco(sub_type: int, text: str) -> bytes:
    """A Cisco (vendor 9) h323-* VSA, "name=value" as the gateway writes it."""
    value = text.encode()
    return struct.pack("!BBIBB", 26, len(value) + 8, 9, sub_type, len(value) + 2) + value


def accounting_request(ident: int, attrs: bytes) -> bytes:
    """As radcli and most gateways send it: no Message-Authenticator (RFC 2866 §3)."""
    header = struct.pack("!BBH", rc.ACCOUNTING_REQUEST, ident, 20 + len(attrs))
    return header + rc.md5(header + bytes(16) + attrs + SECRET) + attrs


def access_request(ident: int, attrs: bytes) -> bytes:
    return rc.encode_access_request(ident, bytes(range(ident, ident + 16)), attrs, SECRET)


@dataclass
class Bench:
    t0_s: int
    clock: Clock
    ledger: Ledger
    frontend: RadiusFrontend


@asynccontextmanager
async def bench(
    redis: aioredis.Redis,
    tmp_path: Path,
    clients: list[dict[str, Any]],
    plans: tuple[TariffPlan, ...] = (),
) -> AsyncIterator[Bench]:
    radius = config_from_dict(
        {"radius": {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": clients}}
    ).radius
    t0_s = int(time.time())
    clock = Clock(t0_s * 1000)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path, plans=plans)
    frontend, cutter = await start_radius(radius, sessions)
    sessions.attach_call_cutter(cutter)
    try:
        yield Bench(t0_s, clock, ledger, frontend)
    finally:
        await frontend.stop()
        await cutter.close()


async def ask(nas: UdpPeer, packet: bytes, port: int) -> rc.Packet:
    nas.send(packet, port)
    raw = await nas.recv()
    assert raw is not None, "no answer"
    return rc.decode(raw)


async def test_same_acct_session_id_on_two_gateways_charges_each_its_own_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # RFC 2866 §5.5: an Acct-Session-Id is unique per NAS, not across them; Asterisk's
    # uniqueid (cdr_radius's Acct-Session-Id) is "<epoch>.<sequence>", so two boxes
    # started in the same second repeat each other's. Each Stop charges its own call:
    # gw-a's 100 s went to bob (gw-b's caller) and alice's call stayed open.
    clients = [
        {"name": "gw-a", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0},
        {"name": "gw-b", "address": "127.0.0.2", "secret": SECRET.decode(), "coa_port": 0},
    ]
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
        await add_account(b.ledger, "acc2", balance_micros=10 * EUR, identities=("user:bob",))
        gw_a, gw_b = await UdpPeer.open("127.0.0.1"), await UdpPeer.open("127.0.0.2")
        try:
            sid = attr(rc.ACCT_SESSION_ID, "1796000000.1") + attr(rc.CALLED_STATION_ID, "030123456")
            calls = ((gw_a, attr(rc.USER_NAME, "alice") + sid, 100),
                     (gw_b, attr(rc.USER_NAME, "bob") + sid, 50))  # fmt: skip
            for nas, ident, _ in calls:
                reply = await ask(nas, access_request(1, ident), b.frontend.auth_port)
                assert reply.code == rc.ACCESS_ACCEPT
            for nas, ident, _ in calls:
                start = ident + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START)
                start += attr(rc.EVENT_TIMESTAMP, b.t0_s)
                await ask(nas, accounting_request(2, start), b.frontend.acct_port)
            b.clock.now_ms += 100_000
            for nas, ident, usage_s in calls:
                stop = ident + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP)
                stop += attr(rc.ACCT_SESSION_TIME, usage_s)
                stop += attr(rc.EVENT_TIMESTAMP, b.t0_s + usage_s)
                await ask(nas, accounting_request(3, stop), b.frontend.acct_port)
        finally:
            gw_a.close()
            gw_b.close()
        cdrs = sorted((c.account_id, c.gateway, c.duration_s, c.cost_micros)
                      for c in await read_cdrs(redis))  # fmt: skip
        assert cdrs == [("acc1", "127.0.0.1", 100, EUR), ("acc2", "127.0.0.2", 50, EUR // 2)]
        for account_id, balance_micros in (("acc1", 9 * EUR), ("acc2", 9 * EUR + EUR // 2)):
            account = await b.ledger.get_account(account_id)
            assert (account.balance_micros, account.reserved_micros) == (balance_micros, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_cisco_debit_card_authentication_then_authorization_then_two_legs(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Cisco "Debit Card Application" (and AudioCodes' and Quintum's prepaid card IVRs):
    # the IVR first authenticates the card (User-Name = card, User-Password = PIN, no
    # Called-Station-Id yet) and announces h323-credit-amount; then it authorizes the
    # dialled number with a second Access-Request of the same h323-conf-id, whose
    # h323-credit-time bounds the call. The first was refused "invalid called number"
    # (h323-return-code=9, "called number blocked"): no card call could be made.
    clients = [{"name": "as5400", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0}]
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "card", balance_micros=10 * EUR, identities=("user:5550100",))
        await add_account(b.ledger, "dry", balance_micros=0, identities=("user:5550199",))
        nas = await UdpPeer.open()
        conf = cisco(rc.H323_CONF_ID, "h323-conf-id=02102944 600A1899 3FD61009 0E2F3CC5")
        gateway = attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1))) + attr(61, 0)  # NAS-Port-Type
        card = attr(rc.USER_NAME, "5550100") + attr(rc.USER_PASSWORD, bytes(16))
        card += attr(rc.CALLING_STATION_ID, "4940555666") + gateway + conf
        try:
            reply = await ask(nas, access_request(1, card), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            assert {k: reply.cisco_value(k) for k in reply.cisco} == {
                rc.H323_CREDIT_AMOUNT: "10.00",
                rc.H323_RETURN_CODE: "0",
                rc.H323_BILLING_MODEL: "1",
                rc.H323_CURRENCY: "EUR",
            }
            assert rc.SESSION_TIMEOUT not in reply.attrs  # no call authorized yet
            account = await b.ledger.get_account("card")
            assert (account.balance_micros, account.reserved_micros) == (10 * EUR, 0)
            for ident, user, return_code in ((2, "5550199", "4"), (3, "5550404", "1")):
                other = attr(rc.USER_NAME, user) + attr(rc.USER_PASSWORD, bytes(16)) + gateway
                other += cisco(rc.H323_CONF_ID, f"h323-conf-id=0000000{ident} 1 2 3")
                reply = await ask(nas, access_request(ident, other), b.frontend.auth_port)
                assert reply.code == rc.ACCESS_REJECT  # zero balance, invalid account
                assert reply.cisco_value(rc.H323_RETURN_CODE) == return_code

            dialled = card + attr(rc.CALLED_STATION_ID, "030123456")
            reply = await ask(nas, access_request(4, dialled), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            assert reply.integer(rc.SESSION_TIMEOUT) == 1000  # 10 EUR at 0.60 a minute
            assert reply.cisco_value(rc.H323_CREDIT_TIME) == "1000"

            # Two legs of the call, each with its own Acct-Session-Id; the outgoing
            # (originate) one is charged, with the Q.850 cause in hex (10 = 16).
            legs = (("answer", "0000001A", 5), ("originate", "0000001B", 6))
            for status, usage_s, when_s in ((rc.STATUS_START, 0, 0), (rc.STATUS_STOP, 60, 60)):
                b.clock.now_ms = (b.t0_s + when_s) * 1000
                for origin, leg_id, ident in legs:
                    packet = dialled + attr(rc.ACCT_SESSION_ID, leg_id)
                    packet += cisco(rc.H323_CALL_ORIGIN, f"h323-call-origin={origin}")
                    packet += attr(rc.ACCT_STATUS_TYPE, status) + attr(
                        rc.ACCT_SESSION_TIME, usage_s
                    )
                    packet += attr(rc.EVENT_TIMESTAMP, b.t0_s + when_s)
                    if status == rc.STATUS_STOP:
                        packet += cisco(rc.H323_DISCONNECT_CAUSE, "h323-disconnect-cause=10")
                    await ask(nas, accounting_request(ident + status, packet), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.call_id) == ("card", "02102944 600A1899 3FD61009 0E2F3CC5")
        assert (cdr.duration_s, cdr.cost_micros, cdr.disconnect_cause) == (60, 600_000, 16)
        account = await b.ledger.get_account("card")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 600_000, 0)


async def test_cisco_credit_amount_is_written_in_the_accounts_currency_minor_unit(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # h323-credit-amount (what the IVR announces, and the Access-Accept's) had 2 decimals
    # whatever the currency: 1500.00 for a yen card, 12.34 for 12.345 KWD. Now the
    # currency's minor unit (ISO 4217: JPY 0, KWD 3, EUR 2), still rounded down.
    clients = [{"name": "as5400", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0}]
    plans = tuple(make_plan(c.lower(), c) for c in ("EUR", "JPY", "KWD"))
    async with bench(redis, tmp_path, clients, plans) as b:
        cards = (("5550100", "EUR", 12_345_678, "12.34"),
                 ("5550200", "JPY", 1_500_999_999, "1500"),
                 ("5550300", "KWD", 12_345_678, "12.345"))  # fmt: skip
        for card, currency, micros, _ in cards:
            await add_account(b.ledger, currency, balance_micros=micros, currency=currency,
                              identities=(f"user:{card}",), tariff=currency.lower())  # fmt: skip
        nas = await UdpPeer.open()
        try:
            for n, (card, currency, _, announced) in enumerate(cards):
                ask_card = attr(rc.USER_NAME, card) + attr(rc.USER_PASSWORD, bytes(16))
                ask_card += attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1)))
                ask_card += cisco(rc.H323_CONF_ID, f"h323-conf-id=0000000{n} 1 2 3")
                dialled = ask_card + attr(rc.CALLED_STATION_ID, "030123456")
                for ident, packet in ((2 * n + 1, ask_card), (2 * n + 2, dialled)):
                    reply = await ask(nas, access_request(ident, packet), b.frontend.auth_port)
                    assert reply.code == rc.ACCESS_ACCEPT, (currency, reply.code)
                    assert reply.cisco_value(rc.H323_CURRENCY) == currency
                    assert reply.cisco_value(rc.H323_CREDIT_AMOUNT) == announced
        finally:
            nas.close()


def freeswitch(sub_type: int, value: bytes | int) -> bytes:
    """A FreeSWITCH (vendor 27880, mod_radius_cdr.h) VSA: strings, or 4-octet integers."""
    raw = struct.pack("!I", value) if isinstance(value, int) else value
    return struct.pack("!BBIBB", 26, len(raw) + 8, 27880, sub_type, len(raw) + 2) + raw


async def test_freeswitch_radius_cdr_stop_gives_the_q850_hangup_cause(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # mod_radius_cdr: a Start at routing (before any answer) and a Stop with
    # Acct-Session-Time = billsec and the channel's Q.850 cause in Freeswitch-Hangupcause
    # (27880/13, an integer); the numbers are Freeswitch-Src/-Dst, the id the call's uuid.
    # The CDR's cause was 0: monitoring counted a busy callee (17) and a ring with no
    # answer (19) as "failed", and a normal clearing after 42 s had no cause.
    clients = [{"name": "fs", "address": "127.0.0.1", "secret": SECRET.decode(),
                "coa_port": 0, "flavour": "generic"}]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:1000",))
        nas = await UdpPeer.open()
        try:
            for n, (cause, billsec) in enumerate(((17, 0), (19, 0), (16, 42))):
                uuid = attr(rc.ACCT_SESSION_ID, f"7f3c1f2e-1d7e-4a55-9a61-3b1c4d2e5f6{n}")
                who = (
                    attr(rc.USER_NAME, "1000")
                    + freeswitch(4, b"1000")
                    + freeswitch(5, b"030123456")
                )
                asked = attr(rc.CALLED_STATION_ID, "030123456") + attr(rc.USER_NAME, "1000") + uuid
                reply = await ask(nas, access_request(1 + n, asked), b.frontend.auth_port)
                assert reply.code == rc.ACCESS_ACCEPT
                start = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START) + uuid + who
                start += freeswitch(20, b"2026-12-06T10:00:00.000000+0000")  # Callstartdate
                await ask(nas, accounting_request(10 + n, start), b.frontend.acct_port)
                stop = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + uuid + who
                stop += freeswitch(13, cause) + freeswitch(15, billsec * 1_000_000)
                stop += attr(rc.ACCT_SESSION_TIME, billsec)
                await ask(nas, accounting_request(20 + n, stop), b.frontend.acct_port)
        finally:
            nas.close()
        cdrs = sorted(
            (c.disconnect_cause, c.duration_s, c.cost_micros) for c in await read_cdrs(redis)
        )
        assert cdrs == [(16, 42, 420_000), (17, 0, 0), (19, 0, 0)]
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 420_000, 0)


async def test_a_cisco_call_accounted_by_both_its_gateways_is_one_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Cisco's debit-card example accounts four legs of one h323-conf-id: the originating
    # gateway's (answer = the caller, originate = VoIP) and the terminating one's
    # (answer = VoIP, originate = the callee). The conf-id is a GUID: both gateways'
    # packets are the one call's, never "another client's call of the same id".
    clients = [
        {"name": "gw-in", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0},
        {"name": "gw-out", "address": "127.0.0.2", "secret": SECRET.decode(), "coa_port": 0},
    ]
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "card", balance_micros=10 * EUR, identities=("user:5550100",))
        gw_in, gw_out = await UdpPeer.open("127.0.0.1"), await UdpPeer.open("127.0.0.2")
        conf = cisco(rc.H323_CONF_ID, "h323-conf-id=3C5AEAB9 95C80008 0 587F34")
        call = attr(rc.USER_NAME, "5550100") + attr(rc.CALLED_STATION_ID, "030123456") + conf
        try:
            reply = await ask(gw_in, access_request(1, call), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            a, z = (127, 0, 0, 1), (127, 0, 0, 2)
            legs = ((gw_in, a, "answer", "1A"), (gw_in, a, "originate", "1B"),
                    (gw_out, z, "answer", "2A"), (gw_out, z, "originate", "2B"))  # fmt: skip
            for status, usage_s in ((rc.STATUS_START, 0), (rc.STATUS_STOP, 60)):
                b.clock.now_ms = (b.t0_s + usage_s) * 1000
                for n, (nas, address, origin, leg_id) in enumerate(legs):
                    packet = call + attr(rc.NAS_IP_ADDRESS, bytes(address))
                    packet += attr(rc.ACCT_SESSION_ID, leg_id) + attr(rc.ACCT_STATUS_TYPE, status)
                    packet += cisco(rc.H323_CALL_ORIGIN, f"h323-call-origin={origin}")
                    packet += attr(rc.ACCT_SESSION_TIME, usage_s)
                    packet += attr(rc.EVENT_TIMESTAMP, b.t0_s + usage_s)
                    await ask(
                        nas, accounting_request(10 * status + n, packet), b.frontend.acct_port
                    )
        finally:
            gw_in.close()
            gw_out.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.duration_s, cdr.cost_micros) == ("card", 60, 600_000)
        account = await b.ledger.get_account("card")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 600_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


def asterisk(sub_type: int, value: str | int) -> bytes:
    """An Asterisk (vendor 22736, cdr_radius.c) VSA: strings, or 4-octet integers."""
    raw = struct.pack("!I", value) if isinstance(value, int) else value.encode()
    return struct.pack("!BBIBB", 26, len(raw) + 8, 22736, sub_type, len(raw) + 2) + raw


async def test_softswitch_accounting_without_station_ids_is_rated_and_charged(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Accounting-only softswitches on a wholesale trunk (the client's default account):
    # Asterisk's cdr_radius sends one Stop per call, its numbers in Asterisk-Src/-Dst and
    # the talk time in Asterisk-Bill-Sec, with no Calling/Called-Station-Id nor
    # Acct-Session-Time (build_radius_record); FreeSWITCH's mod_radius_cdr has its
    # numbers in Freeswitch-Src/-Dst only. Each went to cdr:orphans as
    # destination_not_allowed, the Asterisk one with usage 0: 60 s of talk lost.
    clients = [
        {"name": "pbx", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0,
         "flavour": "generic", "default_account": "trunk", "lookup": ["default"]},
        {"name": "fs", "address": "127.0.0.2", "secret": SECRET.decode(), "coa_port": 0,
         "flavour": "generic", "default_account": "trunk", "lookup": ["default"]},
    ]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        pbx, fs = await UdpPeer.open("127.0.0.1"), await UdpPeer.open("127.0.0.2")
        b.clock.now_ms += 600_000
        stop = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + asterisk(101, "")  # Acct-Code
        for sub_type, value in ((102, "4940555666"), (103, "030123456"), (104, "from-internal"),
                                (105, '"Alice" <4940555666>'), (106, "SIP/alice-00000001"),
                                (110, "2026-12-06 10:00:00 +0000"),
                                (111, "2026-12-06 10:00:05 +0000"),
                                (112, "2026-12-06 10:01:05 +0000"), (113, 65), (114, 60),
                                (115, "ANSWERED"), (116, "DOCUMENTATION")):  # fmt: skip
            stop += asterisk(sub_type, value)
        stop += attr(rc.USER_NAME, "SIP/alice-00000001") + attr(rc.ACCT_SESSION_ID, "1796000000.7")
        fs_call = attr(rc.ACCT_SESSION_ID, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        fs_call += freeswitch(4, b"4940555777") + freeswitch(5, b"030123456")
        try:
            await ask(pbx, accounting_request(1, stop), b.frontend.acct_port)
            start = fs_call + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START)
            await ask(fs, accounting_request(1, start), b.frontend.acct_port)
            b.clock.now_ms += 30_000
            fs_stop = fs_call + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP)
            fs_stop += freeswitch(13, 16) + attr(rc.ACCT_SESSION_TIME, 30)
            await ask(fs, accounting_request(2, fs_stop), b.frontend.acct_port)
        finally:
            pbx.close()
            fs.close()
        cdrs = sorted(
            (c.caller, c.callee, c.duration_s, c.cost_micros) for c in await read_cdrs(redis)
        )
        assert cdrs == [("+4940555666", "+4930123456", 60, 600_000),
                        ("+4940555777", "+4930123456", 30, 300_000)]  # fmt: skip
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 900_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_audiocodes_capitalised_call_origin_is_the_charged_leg(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # AudioCodes Mediant (SIP User's Manual, "RADIUS Accounting" example) writes the
    # Cisco VSAs with h323-call-origin "Originate"; cisco_leg compared it with Cisco's
    # "originate" and ignored the leg, so the call was never charged by its Stop.
    clients = [{"name": "mediant", "address": "127.0.0.1", "secret": SECRET.decode(),
                "coa_port": 0}]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:111",))
        nas = await UdpPeer.open()
        conf = cisco(rc.H323_CONF_ID, "h323-conf-id=02102944 600a1899 3fd61009 0e2f3cc5")
        call = attr(rc.USER_NAME, "111") + attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1)))
        call += attr(61, 0) + attr(rc.CALLED_STATION_ID, "030123456")
        call += attr(rc.CALLING_STATION_ID, "202") + conf
        try:
            reply = await ask(nas, access_request(1, call), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            leg = call + attr(rc.ACCT_SESSION_ID, "1")
            leg += cisco(33, "h323-gw-id=") + cisco(27, "h323-call-type=VOIP")
            leg += cisco(rc.H323_CALL_ORIGIN, "h323-call-origin=Originate")
            start = leg + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START)
            await ask(nas, accounting_request(2, start), b.frontend.acct_port)
            b.clock.now_ms += 61_000
            stop = leg + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + attr(rc.ACCT_SESSION_TIME, 61)
            stop += attr(42, 4841) + attr(43, 8800) + attr(47, 122) + attr(48, 220)
            stop += cisco(rc.H323_DISCONNECT_CAUSE, "h323-disconnect-cause=10")
            await ask(nas, accounting_request(3, stop), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.duration_s, cdr.cost_micros, cdr.status) == (61, 610_000, "normal")
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 610_000, 0)
        assert b.frontend.counters.accounting_ignored == 0


async def test_one_gateway_authorizing_and_accounting_from_two_addresses_is_one_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # An SBC whose Access-Requests and Accounting-Requests leave from two addresses
    # (two clients), the same NAS-IP-Address in both: its packets are its own calls'.
    clients = [
        {"name": "sbc-auth", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0},
        {"name": "sbc-acct", "address": "127.0.0.2", "secret": SECRET.decode(), "coa_port": 0},
    ]
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
        auth, acct = await UdpPeer.open("127.0.0.1"), await UdpPeer.open("127.0.0.2")
        call = attr(rc.USER_NAME, "alice") + attr(rc.CALLED_STATION_ID, "030123456")
        call += attr(rc.ACCT_SESSION_ID, "sbc-0001") + attr(rc.NAS_IP_ADDRESS, bytes((10, 1, 1, 1)))
        try:
            reply = await ask(auth, access_request(1, call), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            start = call + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_START)
            await ask(acct, accounting_request(1, start + attr(rc.EVENT_TIMESTAMP, b.t0_s)),
                      b.frontend.acct_port)  # fmt: skip
            b.clock.now_ms += 45_000
            stop = call + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP)
            stop += attr(rc.ACCT_SESSION_TIME, 45) + attr(rc.EVENT_TIMESTAMP, b.t0_s + 45)
            await ask(acct, accounting_request(2, stop), b.frontend.acct_port)
        finally:
            auth.close()
            acct.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.duration_s, cdr.cost_micros) == ("acc1", 45, 450_000)
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 450_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_sippy_stop_whose_acct_delay_time_is_a_timestamp_is_charged_at_its_arrival(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # Sippy B2BUA (RadiusAccounting.asend, Python and Go) sends no Event-Timestamp and
    # puts the Unix time of the first provisional response in Acct-Delay-Time
    # ("Acct-Delay-Time = round(p1xx_ts)"). Read as a delay (RFC 2866 §5.2) it moved
    # the Stop back to 1970: the accounting-only call was priced in 1970, where no
    # tariff profile applies, and went to cdr:orphans as destination_not_allowed (42 s
    # of talk never charged); an authorized call's CDR ended at its start.
    clients = [
        {"name": "sippy", "address": "127.0.0.1", "secret": SECRET.decode(), "coa_port": 0,
         "flavour": "generic", "default_account": "trunk", "lookup": ["default"]},
    ]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        nas = await UdpPeer.open()
        arrival_s = int(time.time())  # the frontend's clock: the wall clock
        call = attr(rc.USER_NAME, "10.0.0.9") + attr(rc.CALLING_STATION_ID, "4940555666")
        call += attr(rc.CALLED_STATION_ID, "030123456") + attr(
            rc.ACCT_SESSION_ID, "5c3e1b2a@10.0.0.9"
        )
        call += cisco(rc.H323_CONF_ID, "h323-conf-id=3A5F8B2C 11D2AABB 00112233 44556677")
        call += cisco(1, "call-id=5c3e1b2a@10.0.0.9") + cisco(27, "h323-call-type=VoIP")
        stop = call + cisco(rc.H323_CALL_ORIGIN, "h323-call-origin=originate")
        stop += cisco(29, "h323-disconnect-time=10:10:42.000 GMT Mon Dec 7 2026")
        stop += attr(rc.ACCT_SESSION_TIME, 42) + cisco(
            rc.H323_DISCONNECT_CAUSE, "h323-disconnect-cause=10"
        )
        stop += cisco(28, "h323-connect-time=10:10:00.000 GMT Mon Dec 7 2026")
        stop += attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP)
        stop += attr(rc.ACCT_DELAY_TIME, arrival_s - 48)  # the first 1xx's Unix time
        try:
            await ask(nas, accounting_request(1, stop), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.duration_s, cdr.cost_micros, cdr.disconnect_cause) == (42, 420_000, 16)
        assert abs(cdr.end_ms // 1000 - arrival_s) <= 2  # not 1970, nor its answer time
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 420_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


@pytest.mark.parametrize("conf_id_asked", [False, True], ids=["current", "older"])
async def test_sippy_access_request_with_only_a_call_id_avpair_is_authorized_and_charged_once(
    redis: aioredis.Redis, tmp_path: Path, conf_id_asked: bool
) -> None:
    # Sippy B2BUA's Access-Request (RadiusAuthorisation.do_auth) carries User-Name, the
    # numbers, Cisco-AVPair "call-id=<SIP Call-ID>", h323-remote-address and
    # "h323-session-protocol=sipv2": no Acct-Session-Id and, in current versions, no
    # h323-conf-id. It was refused "invalid session id" (Sippy answers the caller 403):
    # no call through Sippy could be made. Its accounting's Acct-Session-Id is that
    # Call-ID, one Stop per leg (answer, then originate) with Sippy's Acct-Delay-Time.
    # Older versions also put the h323-conf-id in the Access-Request: a generic client's
    # call was keyed by it there and by the Call-ID in its accounting (two calls).
    clients = [{"name": "sippy", "address": "127.0.0.1", "secret": SECRET.decode(),
                "coa_port": 0, "flavour": "generic"}]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
        nas = await UdpPeer.open()
        call_id = "5c3e1b2a-7f1d@10.0.0.9"
        who = attr(rc.CALLING_STATION_ID, "4940555666") + attr(rc.CALLED_STATION_ID, "030123456")
        asked = attr(rc.USER_NAME, "alice") + attr(rc.USER_PASSWORD, bytes(16)) + who
        asked += cisco(1, "call-id=" + call_id) + cisco(23, "h323-remote-address=10.0.0.9")
        asked += cisco(1, "h323-session-protocol=sipv2")
        conf = cisco(rc.H323_CONF_ID, "h323-conf-id=3A5F8B2C 11D2AABB 00112233 44556677")
        if conf_id_asked:
            asked += conf
        try:
            reply = await ask(nas, access_request(1, asked), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT, reply.text(rc.REPLY_MESSAGE)
            assert reply.integer(rc.SESSION_TIMEOUT) == 1000  # 10 EUR at 0.60 a minute
            account = await b.ledger.get_account("acc1")
            assert account.reserved_micros > 0  # the call's hold
            b.clock.now_ms += 42_000
            for n, origin in enumerate(("answer", "originate")):
                stop = cisco(rc.H323_CALL_ORIGIN, "h323-call-origin=" + origin)
                stop += cisco(27, "h323-call-type=VoIP") + cisco(1, "h323-session-protocol=sipv2")
                stop += attr(rc.USER_NAME, "alice") + who
                stop += conf + cisco(1, "call-id=" + call_id) + attr(rc.ACCT_SESSION_ID, call_id)
                stop += attr(rc.ACCT_SESSION_TIME, 42) + attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP)
                stop += cisco(rc.H323_DISCONNECT_CAUSE, "h323-disconnect-cause=10")
                stop += attr(rc.ACCT_DELAY_TIME, int(time.time()) - 45)
                await ask(nas, accounting_request(2 + n, stop), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.call_id, cdr.duration_s) == ("acc1", call_id, 42)
        assert cdr.cost_micros == 420_000
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 420_000, 0)
        assert await redis.xlen("cdr:orphans") == 0


async def test_gnu_gatekeeper_proxy_records_are_charged(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    # GNU Gatekeeper's RadAuth authorizes the caller's ARQ with the Cisco VSAs
    # (h323-conf-id, h323-call-origin=originate); its RadAcct sends one record per
    # call, Start at the Setup, Interim-Updates, Stop, each "h323-call-origin=proxy"
    # (radacct.cxx). A cisco client ignored every record that was not "originate": the
    # 60 s call was never charged and its hold stayed until the reaper.
    clients = [{"name": "gnugk", "address": "127.0.0.1", "secret": SECRET.decode(),
                "coa_port": 0}]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "acc1", balance_micros=10 * EUR, identities=("user:alice",))
        nas = await UdpPeer.open()
        conf = cisco(rc.H323_CONF_ID, "h323-conf-id=FF8E71DC 7FF41810 93FA0001 6CC7CC03")
        gk = attr(rc.NAS_IP_ADDRESS, bytes((127, 0, 0, 1))) + attr(32, "ASMODEUSGK") + attr(61, 5)
        who = attr(rc.CALLING_STATION_ID, "4940555666") + attr(rc.CALLED_STATION_ID, "030123456")
        arq = attr(rc.USER_NAME, "alice") + attr(rc.USER_PASSWORD, bytes(16)) + gk + who + conf
        arq += cisco(rc.H323_CALL_ORIGIN, "h323-call-origin=originate")
        arq += cisco(27, "h323-call-type=VoIP") + cisco(33, "h323-gw-id=ASMODEUSGK")
        try:
            reply = await ask(nas, access_request(1, arq), b.frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            for n, (status, usage_s) in enumerate(
                ((rc.STATUS_START, None), (rc.STATUS_INTERIM, 30), (rc.STATUS_STOP, 60))
            ):
                b.clock.now_ms = (b.t0_s + (usage_s or 0)) * 1000
                record = attr(rc.ACCT_STATUS_TYPE, status) + gk + attr(6, 1)
                record += attr(rc.ACCT_SESSION_ID, "e5a1624d4211242c") + attr(rc.USER_NAME, "alice")
                if usage_s is not None:
                    record += attr(rc.ACCT_SESSION_TIME, usage_s)
                record += who + cisco(33, "h323-gw-id=ASMODEUSGK") + conf
                record += cisco(rc.H323_CALL_ORIGIN, "h323-call-origin=proxy")
                record += cisco(27, "h323-call-type=VoIP")
                record += cisco(25, "h323-setup-time=14:24:55.000 EET Mon Nov 28 2005")
                if status == rc.STATUS_STOP:
                    record += cisco(rc.H323_DISCONNECT_CAUSE, "h323-disconnect-cause=10")
                record += cisco(1, "h323-ivr-out=h323-call-id:FF8E71DC 7FF41810 93F90001 6CC7CC03")
                record += attr(rc.ACCT_DELAY_TIME, 0)
                await ask(nas, accounting_request(2 + n, record), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.account_id, cdr.duration_s, cdr.cost_micros) == ("acc1", 60, 600_000)
        account = await b.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 600_000, 0)
        assert b.frontend.counters.accounting_ignored == 0


@pytest.mark.parametrize("authorized", [True, False], ids=["authorized", "accounting_only"])
async def test_opensips_cdr_mode_stop_is_charged_its_sip_call_duration(
    redis: aioredis.Redis, tmp_path: Path, authorized: bool
) -> None:
    # OpenSIPS's acc module in CDR mode (do_accounting("aaa", "cdr"): acc_aaa_cdrs)
    # sends one Stop per call, no Start and no Acct-Session-Time: the talk time is in
    # Sip-Call-Duration (227, seconds) and Sip-Call-MSDuration (230), its
    # Event-Timestamp is the call's start (etc/dictionary.opensips: Sip-Method 204,
    # Sip-Response-Code 205, Sip-From-Tag 206, Sip-To-Tag 207). Every such call was
    # stored unanswered and charged nothing.
    clients = [{"name": "opensips", "address": "127.0.0.1", "secret": SECRET.decode(),
                "coa_port": 0, "flavour": "generic", "default_account": "trunk"}]  # fmt: skip
    async with bench(redis, tmp_path, clients) as b:
        await add_account(b.ledger, "trunk", balance_micros=10 * EUR, identities=())
        nas = await UdpPeer.open()
        call = attr(rc.USER_NAME, "alice") + attr(rc.ACCT_SESSION_ID, "a84b4c76e66710@10.0.0.1")
        call += attr(rc.CALLING_STATION_ID, "sip:4940555666@10.0.0.1")
        call += attr(rc.CALLED_STATION_ID, "sip:030123456@10.0.0.1")
        try:
            if authorized:
                reply = await ask(nas, access_request(1, call), b.frontend.auth_port)
                assert reply.code == rc.ACCESS_ACCEPT
            b.clock.now_ms += 65_000
            cdr_stop = attr(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + attr(6, 15)  # Sip-Session
            cdr_stop += attr(205, 200) + attr(204, 1) + attr(rc.EVENT_TIMESTAMP, b.t0_s + 2)
            cdr_stop += attr(206, "as6f3c1a") + attr(207, "b78c2d") + call
            cdr_stop += attr(227, 62) + attr(230, 61_400) + attr(228, 2)  # 05.9 to 67.3
            await ask(nas, accounting_request(2, cdr_stop), b.frontend.acct_port)
        finally:
            nas.close()
        (cdr,) = await read_cdrs(redis)
        # the talk in ms rounded half up, as mediation reads OpenSIPS's acc table
        assert (cdr.account_id, cdr.duration_s, cdr.cost_micros) == ("trunk", 61, 610_000)
        assert cdr.answer_ms // 1000 == b.t0_s + 2  # the Event-Timestamp: the answer
        account = await b.ledger.get_account("trunk")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 610_000, 0)
        assert await redis.xlen("cdr:orphans") == 0
