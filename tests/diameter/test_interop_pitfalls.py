"""The interop pitfalls other charging systems hit, one test each (issue 16).

Application ids in both CER forms are in test_connection.py (bytes) and
test_erlang_peer.py (OTP's own CER with Vendor-Specific-Application-Id).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from diameter_client import ME, Answered, open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import VENDOR_3GPP, A, Cmd, G, Result
from chargingd.diameter.messages import result_code

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        await add_account(r.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
        yield r


async def test_3gpp_vendor_avps_with_m_bit_are_understood(running: Running) -> None:
    """Service-Information / IMS-Information / Called-Party-Address carry V and M: a
    server that only knows vendor 0 answers 5001 and the call fails. Here the called
    party is read from it and rated."""
    client = await open_client(running.port)
    c = cl.Call("pit-3gpp", calling=CALLER, called=BERLIN)  # called only inside IMS-Information
    answer = await client.ccr(c, 1, 0, requested_s=60)
    assert answer.result == 2001
    rec = await running.sessions.store.find("pit-3gpp")
    assert rec is not None and (rec.callee, rec.destination) == ("+4930123456", "DE_BERLIN")
    # An unknown 3GPP AVP with M set is still refused, with it in Failed-AVP.
    odd = dc.u32(9999, 1, vendor=VENDOR_3GPP)
    data = cl.ccr(client.me, cl.Call("pit-3gpp-2", calling=CALLER, called=BERLIN), 1, 0,
                  *client.next_ids(), requested_s=60, extra=odd)  # fmt: skip
    refused = await client.ask(data)
    failed = refused.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
    assert [(a.code, a.vendor) for a in failed] == [(9999, VENDOR_3GPP)]
    await client.close()


def _ims_information(*members: bytes) -> bytes:
    v = VENDOR_3GPP
    called = dc.utf8(G.CALLED_PARTY_ADDRESS, BERLIN, vendor=v)
    return dc.grouped(
        G.SERVICE_INFORMATION, dc.grouped(G.IMS_INFORMATION, called, *members, vendor=v), vendor=v
    )


async def test_the_ims_information_of_a_kamailio_s_cscf_is_accepted(running: Running) -> None:
    """Kamailio's ims_charging (cdp_avp epcapp.h) sends these TS 32.299 AVPs with V and
    M inside IMS-Information. chargingd answered each of them 5001, so every call of
    such an S-CSCF was refused; now a 3GPP AVP inside Service-Information is taken
    as the charging information it is, and the call is rated as before."""
    v = VENDOR_3GPP
    members = [
        dc.grouped(823, dc.utf8(824, "INVITE", vendor=v), dc.u32(888, 3600, vendor=v), vendor=v),
        dc.u32(G.ROLE_OF_NODE, 0, vendor=v),
        dc.u32(G.NODE_FUNCTIONALITY, 0, vendor=v),
        dc.utf8(830, "a84b4c76e66710@pc33.ims.test", vendor=v),  # User-Session-Id
        dc.grouped(
            833,
            dc.u32(834, 3_974_000_000, vendor=v, flags=dc.AVP_V),
            dc.u32(2301, 125, vendor=v),
            vendor=v,
        ),
        dc.grouped(838, dc.utf8(839, "ims.test", vendor=v), vendor=v),  # Originating-IOI
        dc.utf8(841, "icid-0001", vendor=v),
        dc.grouped(851, dc.utf8(852, "in-1", vendor=v), dc.utf8(853, "out-1", vendor=v), vendor=v),
        dc.utf8(855, "voice", vendor=v),  # Service-ID
        dc.grouped(850, dc.utf8(837, BERLIN, vendor=v), vendor=v),
    ]
    client = await open_client(running.port)
    try:
        c = cl.Call("pit-kamailio", calling=CALLER)  # the called party only in IMS-Information
        i = await client.ccr(c, 1, 0, requested_s=60, extra=_ims_information(*members))
        assert (i.result, i.mscc_result) == (2001, 2001)
        rec = await running.sessions.store.find("pit-kamailio")
        assert rec is not None and (rec.callee, rec.destination) == ("+4930123456", "DE_BERLIN")
        t = await client.ccr(c, 3, 1, used_s=30)
        assert t.result == 2001
        account = await running.ledger.get_account("acc1")
        assert account.balance_micros == 10 * EUR - 30 * 10_000
        # Another vendor's AVP with the M bit in there is still refused (RFC 6733 §4.1).
        odd = dc.u32(4711, 1, vendor=193)
        data = cl.ccr(client.me, cl.Call("pit-kamailio-2", calling=CALLER), 1, 0,
                      *client.next_ids(), requested_s=60, extra=_ims_information(odd))  # fmt: skip
        refused = await client.ask(data)
        assert result_code(refused) == Result.AVP_UNSUPPORTED
        failed = refused.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
        assert [(a.code, a.vendor) for a in failed] == [(4711, 193)]
    finally:
        await client.close()


async def test_3gpp_avps_inside_the_mscc_and_its_units_are_accepted(running: Running) -> None:
    """TS 32.299 extends Multiple-Services-Credit-Control and Used-Service-Unit with 3GPP
    AVPs of the M bit (an OCS client sends Event-Charging-TimeStamp in each USU, Trigger
    and Time-Quota-Mechanism in the MSCC): chargingd answered them 5001 and refused the
    CCR-U. Now they are charging information as inside Service-Information; another
    vendor's AVP with the M bit there is still refused."""
    v = VENDOR_3GPP
    client = await open_client(running.port)
    try:
        c = cl.Call("pit-mscc", calling=CALLER, called=BERLIN)
        i = await client.ccr(c, 1, 0, requested_s=60)
        assert (i.result, i.mscc_result) == (2001, 2001)

        def mscc(*more: bytes, usu_more: bytes = b"") -> bytes:
            usu = dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, 30), usu_more)
            rsu = dc.grouped(A.REQUESTED_SERVICE_UNIT, b"")
            return dc.grouped(
                A.MULTIPLE_SERVICES_CREDIT_CONTROL, rsu, usu, dc.u32(A.RATING_GROUP, 100), *more
            )

        bare = cl.Call("pit-mscc", calling=CALLER, called=BERLIN, rating_group=None)
        ects = dc.u32(1258, int(time.time()) + 2_208_988_800, vendor=v)  # NTP seconds
        trigger = dc.grouped(1264, dc.u32(870, 1, vendor=v), vendor=v)  # Trigger/Trigger-Type
        tqm = dc.grouped(1270, dc.u32(1271, 0, vendor=v), dc.u32(1272, 0, vendor=v), vendor=v)
        u = Answered.of(await client.ask(cl.ccr(
            client.me, bare, 2, 1, *client.next_ids(), extra=mscc(trigger, tqm, usu_more=ects)
        )))  # fmt: skip
        assert (u.result, u.mscc_result) == (2001, 2001)
        odd = dc.u32(4711, 1, vendor=193)
        refused = await client.ask(
            cl.ccr(client.me, bare, 2, 2, *client.next_ids(), extra=mscc(usu_more=odd))
        )
        assert result_code(refused) == Result.AVP_UNSUPPORTED
        failed = refused.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
        assert [(a.code, a.vendor) for a in failed] == [(4711, 193)]
        t = await client.ccr(c, 3, 3, used_s=45)
        assert t.result == 2001
        account = await running.ledger.get_account("acc1")
        assert account.balance_micros == 10 * EUR - (30 + 45) * 10_000
    finally:
        await client.close()


async def test_single_service_4012_on_a_ccr_u_ends_the_session_there(running: Running) -> None:
    """RFC 4006 §7: a CCR-U answered with a failure Result-Code (here 4012 at the command
    level, the only one without MSCC) takes the server's session to Idle, its used
    units debited, and the client's too: it terminates the service (or goes on
    without credit control, CCFH CONTINUE) and sends no CCR-T. chargingd kept the
    session live for a CCR-T that does not come: the call counted as live, got an ASR
    at its deadline (answered 5002: the client has no such session any more), and was
    reaped as stale, charged provisionally. Now the CCR-U closes it, charged what it
    reported: one CDR at once; a CCR-T sent anyway is answered 2001 and moves
    nothing."""
    from sessions_harness import read_cdrs

    await add_account(running.ledger, "poor", balance_micros=50_000,
                      identities=("ani:+4930777000",))  # fmt: skip
    client = await open_client(running.port)
    try:
        c = cl.Call("pit-single-idle", calling="+4930777000", called=BERLIN, rating_group=None)
        first = await client.ccr(c, 1, 0, requested_s=60)
        assert (first.result, first.granted, first.fui) == (2001, 5, True)
        update = await client.ccr(c, 2, 1, used_s=5, requested_s=60)
        assert update.result == Result.CREDIT_LIMIT_REACHED
        (cdr,) = await read_cdrs(running.redis)
        assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("credit_cut", 5, 50_000)
        assert cdr.extra.get("charge_reason", "") == "" and cdr.charge_reason == ""
        rec = await running.sessions.store.find(c.session_id)
        assert rec is None or rec.state != "live"
        again = await client.ccr(c, 2, 1, used_s=5, requested_s=60)  # retransmitted
        assert again.result == Result.CREDIT_LIMIT_REACHED
        late = await client.ccr(c, 3, 2, used_s=0)
        assert late.result == 2001
        assert len(await read_cdrs(running.redis)) == 1
        account = await running.ledger.get_account("poor")
        assert (account.balance_micros, account.reserved_micros) == (0, 0)
        assert account.debits_micros == 50_000
        await asyncio.sleep(0.5)  # the cutter runs every 0.2 s: nothing left to cut
        assert not [m for m in client.server_requests if m.command == Cmd.ABORT_SESSION]
    finally:
        await client.close()


@pytest.mark.parametrize(("action", "name"), [(1, "REFUND_ACCOUNT"), (2, "CHECK_BALANCE"),
                                               (3, "PRICE_ENQUIRY")])  # fmt: skip
async def test_event_actions_other_than_direct_debiting_are_5012(
    running: Running, action: int, name: str
) -> None:
    """RFC 4006 §6: chargingd offers direct debiting of time only. A refund, balance
    check or price enquiry is answered 5012 UNABLE_TO_COMPLY, a permanent failure (RFC
    4006 §7, client event table: the client indicates a service error and deletes a
    refund rather than storing it for re-sending, as it would after a 3xxx), in the CCA
    grammar (Auth-Application-Id, CC-Request-Type, CC-Request-Number) with why in
    Error-Message; nothing is debited or kept: no session, no CDR."""
    from sessions_harness import read_cdrs

    client = await open_client(running.port)
    try:
        c = cl.Call(f"pit-event-{name}", calling=CALLER, called=BERLIN)
        data = cl.ccr(client.me, c, 4, 0, *client.next_ids(), requested_s=60)
        data = data.replace(dc.u32(A.REQUESTED_ACTION, 0), dc.u32(A.REQUESTED_ACTION, action))
        ans = Answered.of(await client.ask(data))
        assert (ans.result, ans.mscc_result, ans.granted) == (5012, 5012, None)
        msg = ans.msg
        assert [msg.get(a).u32() for a in (A.AUTH_APPLICATION_ID, A.CC_REQUEST_TYPE,  # type: ignore[union-attr]
                                           A.CC_REQUEST_NUMBER)] == [4, 4, 0]  # fmt: skip
        assert "direct debiting" in msg.get(A.ERROR_MESSAGE).text()  # type: ignore[union-attr]
        assert not msg.flags & dc.FLAG_E
        account = await running.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (10 * EUR, 0)
        assert await running.sessions.store.find(c.session_id) is None
        assert await read_cdrs(running.redis) == []
    finally:
        await client.close()


def _gy_top_level() -> bytes:
    """What a TS 32.299 Gy/Ro client puts at the CCR's top level beside the RFC 4006
    AVPs, 3GPP AVPs with V and M (freeDiameter's dict_dcca_3gpp sets M on all of
    them): open5gs's SMF sends Requested-Action, AoC-Request-Type AoC_FULL and
    Multiple-Services-Indicator in every CCR; GGSNs of the pre-PS-Information Gy
    send TS 29.061's 3GPP-* charging AVPs there."""
    v = VENDOR_3GPP
    return b"".join(
        [
            dc.u32(A.REQUESTED_ACTION, 0),
            dc.u32(2055, 1, vendor=v),  # AoC-Request-Type AoC_FULL
            dc.u32(A.MULTIPLE_SERVICES_INDICATOR, 1),
            dc.avp(21, b"06", vendor=v),  # 3GPP-RAT-Type (EUTRAN)
            dc.avp(22, bytes.fromhex("8262f2100001626f210001e240"), vendor=v),  # ULI
            dc.u32(2, 0x1234, vendor=v),  # 3GPP-Charging-Id
            dc.avp(6, bytes([127, 0, 0, 2]), vendor=v),  # 3GPP-SGSN-Address
            dc.avp(7, bytes([127, 0, 0, 3]), vendor=v),  # 3GPP-GGSN-Address
            dc.utf8(18, "26201", vendor=v),  # 3GPP-SGSN-MCC-MNC
            dc.avp(23, b"\x40\x00", vendor=v),  # 3GPP-MS-TimeZone
            dc.utf8(12, "0", vendor=v),  # 3GPP-Selection-Mode
            dc.utf8(13, "0800", vendor=v),  # 3GPP-Charging-Characteristics
        ]
    )


async def test_3gpp_charging_avps_at_the_ccr_top_level_are_accepted(running: Running) -> None:
    """TS 32.299 §6.4.2 puts AoC-Request-Type (2055, vendor 10415, M) at the CCR's top
    level, and Gy clients put TS 29.061's 3GPP-* charging AVPs there (3GPP-RAT-Type,
    3GPP-User-Location-Info, ...; V and M in freeDiameter's dictionary). Only those
    inside Service-Information and the MSCC were taken as charging information: each
    CCR of such a client was answered 5001, every session refused. Now they are
    ignored as the charging information they are, and the call is charged as any."""
    client = await open_client(running.port)
    try:
        c = cl.Call("pit-gy-top", calling=CALLER, called=BERLIN)
        top = _gy_top_level()
        i = await client.ccr(c, 1, 0, requested_s=60, extra=top)
        assert (i.result, i.mscc_result) == (2001, 2001) and i.granted
        u = await client.ccr(c, 2, 1, used_s=30, requested_s=60, extra=top)
        assert (u.result, u.mscc_result) == (2001, 2001) and u.granted
        t = await client.ccr(c, 3, 2, used_s=15, extra=top + dc.u32(A.TERMINATION_CAUSE, 1))
        assert t.result == 2001
        account = await running.ledger.get_account("acc1")
        assert account.balance_micros == 10 * EUR - 45 * 10_000
        assert account.reserved_micros == 0
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("code", "vendor"),
    [
        (9999, VENDOR_3GPP),  # a 3GPP AVP chargingd does not know
        (1001, VENDOR_3GPP),  # Gx Charging-Rule-Install: no charging information
        (19, VENDOR_3GPP),  # 3GPP-Teardown-Indicator: a Gi instruction to the GGSN
        (2055, 12345),  # AoC-Request-Type's code under an unknown vendor
        (99999, 12345),  # an unknown vendor's AVP
    ],
)
async def test_other_mandatory_avps_at_the_top_level_are_still_refused(
    running: Running, code: int, vendor: int
) -> None:
    """RFC 6733 §4.1 / §7.1.5: an AVP with the M bit chargingd does not understand is
    answered 5001 with it in Failed-AVP; the top-level charging AVPs above do not
    widen that to every 3GPP AVP (a Gx or Gi instruction is no charging information),
    nor to another vendor's. Nothing is authorized."""
    client = await open_client(running.port)
    try:
        odd = dc.u32(code, 1, vendor=vendor)
        c = cl.Call(f"pit-top-{code}-{vendor}", calling=CALLER, called=BERLIN)
        data = cl.ccr(client.me, c, 1, 0, *client.next_ids(), requested_s=60,
                      extra=_gy_top_level() + odd)  # fmt: skip
        refused = await client.ask(data)
        assert result_code(refused) == Result.AVP_UNSUPPORTED
        failed = refused.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
        assert [(a.code, a.vendor) for a in failed] == [(code, vendor)]
        assert await running.sessions.store.find(c.session_id) is None
    finally:
        await client.close()


async def test_request_number_after_a_rar(running: Running) -> None:
    """After a RAR the client's re-authorization is its *next* CCR-U number (RFC 4006
    §5.5); a client that restarts numbering at 0 is refused, nothing moves."""
    client = await open_client(running.port)
    c = cl.Call("pit-rar", calling=CALLER, called=BERLIN)
    assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
    assert (await client.ccr(c, 2, 1, used_s=20, requested_s=60)).result == 2001
    rec = await running.sessions.store.find("pit-rar")
    assert rec is not None
    from chargingd.sessions.cutter import ref_of

    assert await running.frontend.initiated.change_timeout(ref_of(rec), 0)
    (rar,) = [m for m in client.server_requests if m.command == Cmd.RE_AUTH]
    assert rar.get(A.SESSION_ID).text() == "pit-rar"  # type: ignore[union-attr]
    assert rar.get(A.RE_AUTH_REQUEST_TYPE).u32() == 0  # type: ignore[union-attr]
    debits = (await running.ledger.get_account("acc1")).debits_micros
    wrong = await client.ccr(c, 2, 0, used_s=5, requested_s=60)
    assert wrong.result == Result.INVALID_AVP_VALUE
    assert (await running.ledger.get_account("acc1")).debits_micros == debits
    right = await client.ccr(c, 2, 2, used_s=5, requested_s=60)
    assert right.result == 2001 and right.granted
    assert (await running.ledger.get_account("acc1")).debits_micros == 25 * 10_000
    await client.close()


@pytest.mark.parametrize(("raa", "told"), [(2001, True), (2002, True), (5012, False)])
async def test_raa_limited_success_confirms_the_rar(running: Running, raa: int, told: bool) -> None:
    """RFC 4006 §5.5: a client that receives a RAR answers RAA 2002
    DIAMETER_LIMITED_SUCCESS ("a CCR-U follows to complete the procedure"; 2001 when a
    re-authorization was already under way), then re-authorizes. chargingd counted a
    2002 as a failed RAR (ctl status rar_failed, and False to the relay's requester),
    though the client did exactly what the RFC asks; now 2001 and 2002 confirm it."""
    client = await open_client(running.port)
    client.answer_rar = raa
    try:
        c = cl.Call(f"pit-raa-{raa}", calling=CALLER, called=BERLIN)
        assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
        rec = await running.sessions.store.find(c.session_id)
        assert rec is not None
        from chargingd.sessions.cutter import ref_of

        counters = running.frontend.initiated.counters
        assert await running.frontend.initiated.change_timeout(ref_of(rec), 0) is told
        assert (counters.rar_confirmed, counters.rar_failed) == (int(told), int(not told))
        u = await client.ccr(c, 2, 1, used_s=20, requested_s=60)
        assert (u.result, u.mscc_result) == (2001, 2001) and u.granted
    finally:
        await client.close()


async def test_answers_come_well_within_the_clients_tx(running: Running) -> None:
    """RFC 4006 §13: Tx (10 s by default) then the client fails over or applies CCFH.
    60 calls' CCR-I, U and T at once on 3 connections all answer within half of it
    (a loaded 2-core test machine answers in tens of milliseconds)."""
    clients = [await open_client(running.port) for _ in range(3)]
    await add_account(running.ledger, "big", balance_micros=1000 * EUR,
                      identities=("ani:+4930999000",))  # fmt: skip
    slowest = 0.0

    async def one_call(n: int) -> None:
        nonlocal slowest
        client = clients[n % 3]
        c = cl.Call(f"pit-tx-{n}", calling="+4930999000", called=BERLIN)
        for kind, number, kw in ((1, 0, {"requested_s": 60}), (2, 1, {"used_s": 30}),
                                 (3, 2, {"used_s": 10})):  # fmt: skip
            started = time.monotonic()
            answer = await client.ccr(c, kind, number, **kw)  # type: ignore[arg-type]
            slowest = max(slowest, time.monotonic() - started)
            assert answer.result == 2001

    await asyncio.gather(*(one_call(n) for n in range(60)))
    assert slowest < 5.0, f"slowest answer {slowest:.2f} s"
    assert (await running.ledger.get_account("big")).debits_micros == 60 * 40 * 10_000
    for client in clients:
        await client.close()


def _msccs(msg: dc.Message) -> dict[int, list[dc.Avp]]:
    out = {}
    for mscc in msg.all(A.MULTIPLE_SERVICES_CREDIT_CONTROL):
        inner = mscc.group()
        out[dc.find(inner, A.RATING_GROUP).u32()] = inner  # type: ignore[union-attr]
    return out


async def test_fui_and_result_code_inside_the_right_mscc(running: Running) -> None:
    """Each MSCC is answered in its own MSCC (its Rating-Group echoed) with its Result-Code,
    GSU, Validity-Time and FUI inside it, not at the top level (RFC 4006 §8.16)."""
    await add_account(running.ledger, "poor", balance_micros=50_000,
                      identities=("ani:+4930777000",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-mscc", calling="+4930777000", called=BERLIN, rating_group=None)
    two = b"".join(
        dc.grouped(
            A.MULTIPLE_SERVICES_CREDIT_CONTROL,
            dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, 60)),
            dc.u32(A.RATING_GROUP, rg),
        )
        for rg in (10, 20)
    )
    answer = (await client.ccr(c, 1, 0, extra=two)).msg
    assert answer.get(A.RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
    assert answer.get(A.FINAL_UNIT_INDICATION) is None, "FUI belongs inside the MSCC"
    assert answer.get(A.GRANTED_SERVICE_UNIT) is None
    msccs = _msccs(answer)
    assert set(msccs) == {10, 20}
    for inner in msccs.values():
        assert dc.find(inner, A.RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
        gsu = dc.find(dc.find(inner, A.GRANTED_SERVICE_UNIT).group(), A.CC_TIME)  # type: ignore[union-attr]
        assert gsu is not None and gsu.u32() == 5  # 0.05 EUR: 5 s, the last grant
        fui = dc.find(inner, A.FINAL_UNIT_INDICATION)
        assert fui is not None
        assert dc.find(fui.group(), A.FINAL_UNIT_ACTION).u32() == 0  # type: ignore[union-attr]  # TERMINATE
        assert dc.find(inner, A.VALIDITY_TIME) is not None
    # Used up: the MSCC says 4012 CREDIT_LIMIT_REACHED, the command still 2001.
    used = dc.grouped(
        A.MULTIPLE_SERVICES_CREDIT_CONTROL,
        dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, 5)),
        dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, 60)),
        dc.u32(A.RATING_GROUP, 10),
    )
    update = (await client.ccr(c, 2, 1, extra=used)).msg
    assert update.get(A.RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
    inner = _msccs(update)[10]
    assert dc.find(inner, A.RESULT_CODE).u32() == Result.CREDIT_LIMIT_REACHED  # type: ignore[union-attr]
    assert dc.find(inner, A.FINAL_UNIT_INDICATION) is not None
    await client.close()


async def test_single_service_fui_at_the_top_level(running: Running) -> None:
    """RFC 4006 without MSCC: GSU, Validity-Time and FUI at the command level."""
    await add_account(running.ledger, "poor", balance_micros=50_000,
                      identities=("ani:+4930777000",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-single", calling="+4930777000", called=BERLIN, rating_group=None)
    answer = await client.ccr(c, 1, 0, requested_s=60)
    msg = answer.msg
    assert msg.get(A.MULTIPLE_SERVICES_CREDIT_CONTROL) is None
    assert (answer.granted, answer.fui) == (5, True)
    assert msg.get(A.VALIDITY_TIME) is not None
    await client.close()


async def test_single_service_used_up_is_4012_at_the_command_level(running: Running) -> None:
    """Without MSCC the command's Result-Code is the only one: when the final units are
    used up, CCR-U is answered 4012 CREDIT_LIMIT_REACHED (no GSU), not 2001 with GSU 0;
    the used seconds are charged once, the retransmission gets the same answer."""
    await add_account(running.ledger, "poor", balance_micros=50_000,
                      identities=("ani:+4930777000",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-single-out", calling="+4930777000", called=BERLIN, rating_group=None)
    first = await client.ccr(c, 1, 0, requested_s=60)
    assert (first.result, first.granted, first.fui) == (2001, 5, True)
    update = await client.ccr(c, 2, 1, used_s=5, requested_s=60)
    assert update.result == Result.CREDIT_LIMIT_REACHED
    assert update.msg.get(A.GRANTED_SERVICE_UNIT) is None
    assert update.msg.get(A.MULTIPLE_SERVICES_CREDIT_CONTROL) is None
    again = await client.ccr(c, 2, 1, used_s=5, requested_s=60)
    assert again.result == Result.CREDIT_LIMIT_REACHED
    assert (await client.ccr(c, 3, 2, used_s=0)).result == 2001
    account = await running.ledger.get_account("poor")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)
    assert account.debits_micros == 50_000
    await client.close()


async def test_ims_called_party_and_sip_uri_subscriber(running: Running) -> None:
    """A SIP URI Subscription-Id names the "user" identity (scheme and parameters off)."""
    await add_account(running.ledger, "alice", balance_micros=EUR,
                      identities=("user:alice@ims.test",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-sip", sip_uri="sip:alice@ims.test;user=phone", called=BERLIN)
    assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
    rec = await running.sessions.store.find("pit-sip")
    assert rec is not None and rec.account_id == "alice"
    await client.close()


def test_called_party_variants_are_read() -> None:
    from chargingd.diameter.translate import parse_ccr

    me = cl.ClientIdentity("x.test", "test")
    v = VENDOR_3GPP
    requested = dc.grouped(
        G.SERVICE_INFORMATION,
        dc.grouped(G.IMS_INFORMATION,
                   dc.utf8(G.REQUESTED_PARTY_ADDRESS, "sip:+4989123@ims.test", vendor=v),
                   vendor=v),
        vendor=v,
    )  # fmt: skip
    ccr = parse_ccr(dc.decode(cl.ccr(me, cl.Call("s"), 1, 0, 1, 1, extra=requested)))
    assert ccr.called == "sip:+4989123@ims.test"
    station = dc.utf8(A.CALLED_STATION_ID, "004930123")
    ccr = parse_ccr(dc.decode(cl.ccr(me, cl.Call("s", called=BERLIN), 1, 0, 1, 1, extra=station)))
    assert ccr.called == "004930123", "Called-Station-Id first"
    ext = dc.grouped(A.SUBSCRIPTION_ID_EXTENSION, dc.utf8(A.SUBSCRIPTION_ID_E164, "+4930111"))
    ccr = parse_ccr(dc.decode(cl.ccr(me, cl.Call("s"), 1, 0, 1, 1, extra=ext)))
    assert ccr.calling == "+4930111", "RFC 8506 Subscription-Id-Extension"


async def test_a_peer_that_restarted_gets_its_sessions_closed(running: Running) -> None:
    """RFC 6733 §8.16: a new Origin-State-Id in CER means the peer lost its sessions:
    they are closed (one CDR each, gateway_restart), not left to the reaper."""
    from diameter_client import TcpClient
    from sessions_harness import read_cdrs

    first = await TcpClient.connect(running.port)
    cea = await first.ask(cl.cer(first.me, *first.next_ids(), origin_state_id=100))
    assert cea.get(A.RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
    c = cl.Call("pit-reboot", calling=CALLER, called=BERLIN)
    assert (await first.ccr(c, 1, 0, requested_s=60)).result == 2001
    assert (await first.ccr(c, 2, 1, used_s=20, requested_s=60)).result == 2001
    await first.close()
    # Same state id again (a reconnect, not a restart): the call lives on.
    again = await TcpClient.connect(running.port)
    await again.ask(cl.cer(again.me, *again.next_ids(), origin_state_id=100))
    await again.close()
    rec = await running.sessions.store.find("pit-reboot")
    assert rec is not None and rec.state == "live"
    rebooted = await TcpClient.connect(running.port)
    await rebooted.ask(cl.cer(rebooted.me, *rebooted.next_ids(), origin_state_id=101))
    for _ in range(250):
        if await running.redis.xlen("cdr:stream"):
            break
        await asyncio.sleep(0.02)
    (cdr,) = await read_cdrs(running.redis)
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("pit-reboot", "gateway_restart", 20)
    assert running.frontend.peer_restarts == 1
    await rebooted.close()


async def test_a_session_begun_right_after_the_restart_is_not_closed_with_the_old_ones(
    running: Running,
) -> None:
    """The restart's closing of the old sessions runs when the CER arrives; a CCR-I the
    rebooted peer sends at once on that connection waits for it, so its new session is
    never among those closed (the closing made slow here: it raced before)."""
    from diameter_client import TcpClient
    from sessions_harness import read_cdrs

    first = await TcpClient.connect(running.port)
    await first.ask(cl.cer(first.me, *first.next_ids(), origin_state_id=200))
    old = cl.Call("pit-old", calling=CALLER, called=BERLIN)
    assert (await first.ccr(old, 1, 0, requested_s=60)).result == 2001
    await first.close()
    # The frontend's credit API behind a proxy whose restart closing is slow (the
    # Sessions class itself may be compiled with mypyc: its methods cannot be patched).
    running.frontend.credit = _SlowRestartClosing(running.frontend.credit)  # type: ignore[assignment]
    rebooted = await TcpClient.connect(running.port)
    await rebooted.ask(cl.cer(rebooted.me, *rebooted.next_ids(), origin_state_id=201))
    new = cl.Call("pit-new", calling=CALLER, called=BERLIN)
    assert (await rebooted.ccr(new, 1, 0, requested_s=60)).result == 2001
    assert (await rebooted.ccr(new, 2, 1, used_s=10, requested_s=60)).result == 2001
    (cdr,) = await read_cdrs(running.redis)
    assert (cdr.call_id, cdr.status) == ("pit-old", "gateway_restart")
    rec = await running.sessions.store.find("pit-new")
    assert rec is not None and rec.state == "live"
    await rebooted.close()


class _SlowRestartClosing:
    """Forwards everything to the credit API; closing a restarted peer's sessions waits
    0.3 s first (a busy Redis, many calls to list)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        await asyncio.sleep(0.3)
        await self._inner.gateway_restarted(gateway, client, event_ms=event_ms)


async def test_rating_failed_names_the_called_party_in_failed_avp(running: Running) -> None:
    """RFC 4006 §9.1: 5031 RATING_FAILED MUST carry the AVP that could not be rated in
    Failed-AVP; here the IMS Service-Information with an unusable Called-Party-Address.
    Nothing is held or debited."""
    await add_account(running.ledger, "rated", balance_micros=EUR,
                      identities=("ani:+4930777111",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-5031", calling="+4930777111", called="tel:nowhere")
    answer = await client.ccr(c, 1, 0, requested_s=60)
    assert (answer.result, answer.mscc_result) == (Result.RATING_FAILED, Result.RATING_FAILED)
    failed = answer.msg.get(A.FAILED_AVP)
    assert failed is not None
    [named] = failed.group()
    assert (named.code, named.vendor) == (G.SERVICE_INFORMATION, VENDOR_3GPP)
    account = await running.ledger.get_account("rated")
    assert (account.balance_micros, account.reserved_micros) == (EUR, 0)
    await client.close()


async def test_a_large_requested_cc_time_is_granted_what_the_money_pays(running: Running) -> None:
    """Requested-Service-Unit is a wish, not usage (RFC 4006 §5.1.2): a client asking for
    more than a day gets what the balance pays, not 5004; a direct debit of more than
    the balance pays is 4012 with nothing debited."""
    await add_account(running.ledger, "wishful", balance_micros=EUR,
                      identities=("ani:+4930777222",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("pit-big-rsu", calling="+4930777222", called=BERLIN)
    first = await client.ccr(c, 1, 0, requested_s=100_000)
    assert first.result == 2001 and first.granted
    assert (await client.ccr(c, 3, 1, used_s=10)).result == 2001
    event = await client.ccr(cl.Call("pit-big-ev", calling="+4930777222", called=BERLIN),
                             4, 0, requested_s=100_000)  # fmt: skip
    assert event.result == Result.CREDIT_LIMIT_REACHED
    account = await running.ledger.get_account("wishful")
    assert (account.balance_micros, account.reserved_micros) == (EUR - 100_000, 0)
    await client.close()


async def test_dpr_answers_the_ccrs_in_flight_before_the_dpa(running: Running) -> None:
    """A client that sends DPR right behind a CCR (shutting down) gets the CCA first, then
    the DPA, then the close; closing at once lost the CCA of a call already opened."""
    await add_account(running.ledger, "leaving", balance_micros=EUR,
                      identities=("ani:+4930777333",))  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    framer = dc.Framer(1 << 20)
    writer.write(cl.cer(ME, 1, 1))
    frames: list[dc.Message] = []
    while not frames:
        frames += [dc.decode(f) for f in framer.feed(await reader.read(65536))]
    assert result_code(frames.pop()) == 2001
    c = cl.Call("pit-dpr", calling="+4930777333", called=BERLIN)
    writer.write(cl.ccr(ME, c, 1, 0, 2, 2, requested_s=60) + cl.dpr(ME, 3, 3))
    while data := await asyncio.wait_for(reader.read(65536), 5):
        frames += [dc.decode(f) for f in framer.feed(data)]
    writer.close()
    assert [(m.command, result_code(m)) for m in frames] == [
        (Cmd.CREDIT_CONTROL, 2001),
        (Cmd.DISCONNECT_PEER, 2001),
    ]
    assert await running.sessions.store.find("pit-dpr") is not None
