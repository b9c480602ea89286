"""Interop with an independent Diameter stack: Erlang/OTP's diameter application.

The escript (tests/diameter/erlang/) does the CER, CCR-I/U/T and watchdog with OTP's
own code and dictionaries compiled by diameterc, and answers the server's ASR/RAR.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_harness import GW, Running, running_frontend
from diameter_peer import ErlangPeer, compile_dictionaries, erlang_missing
from sessions_harness import EUR, add_account, read_cdrs

pytestmark = pytest.mark.skipif(bool(erlang_missing()), reason=erlang_missing())

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 0.60 EUR/min, per second


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a condition of the server (never a fixed sleep)."""
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_dictionaries(tmp_path_factory.mktemp("otp-dicts"))


@pytest.fixture
async def peer(dict_dir: Path) -> AsyncIterator[ErlangPeer]:
    p = ErlangPeer(dict_dir)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        print("erlang peer events:", *p.events, sep="\n  ")
        print("erlang peer stderr:", p.stderr.decode(errors="replace"))


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        yield r


async def test_full_call_debits_the_rated_cost_and_writes_one_cdr(
    running: Running, peer: ErlangPeer
) -> None:
    await add_account(running.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm,
                            watchdog_ms=6000)  # fmt: skip
    assert up["event"] == "up"
    sid = "scscf.ims.test;1;otp-1"
    i = await peer.ccr("i", sid, 1, 0, calling=CALLER, called=BERLIN, requested=60,
                       rating_group=100)  # fmt: skip
    assert (i["result"], i["mscc_result"], i["rating_group"]) == (2001, 2001, 100)
    assert i["granted"] > 0 and i["validity"] == 60 and not i["fui"]
    u = await peer.ccr("u", sid, 2, 1, used=30, requested=60, rating_group=100)
    assert (u["result"], u["mscc_result"]) == (2001, 2001) and u["granted"] > 0
    t = await peer.ccr("t", sid, 3, 2, used=17, rating_group=100)
    assert t["result"] == 2001
    cdrs = await read_cdrs(running.redis)
    assert len(cdrs) == 1
    cdr = cdrs[0]
    price = running.sessions.pricer.price
    cost = price("retail", subject="acc1", number="+4930123456", start_ms=cdr.answer_ms,
                 usage_s=47).cost_micros  # fmt: skip
    assert cost == 470_000  # 47 s at 0.60 EUR/min, per second
    account = await running.ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - cost
    assert account.reserved_micros == 0
    assert (cdr.source, cdr.call_id, cdr.duration_s, cdr.cost_micros, cdr.status) == (
        "diameter",
        sid,
        47,
        cost,
        "normal",
    )
    assert cdr.callee == "+4930123456" and cdr.extra["client"] == "ims1"


async def _open_call(running: Running, peer: ErlangPeer, sid: str, balance_micros: int) -> dict:  # type: ignore[type-arg]
    await add_account(running.ledger, balance_micros=balance_micros, identities=(f"ani:{CALLER}",))
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm, form="vsai")
    assert up["event"] == "up"
    return await peer.ccr("i", sid, 1, 0, calling=CALLER, called=BERLIN, requested=60,
                          rating_group=100)  # fmt: skip


async def test_money_running_out_gets_fui_then_an_asr(running: Running, peer: ErlangPeer) -> None:
    sid = "scscf.ims.test;1;otp-cut"
    # 0.03 EUR buys 3 s at 0.60 EUR/min: the first grant is the last one.
    i = await _open_call(running, peer, sid, 30_000)
    assert (i["result"], i["mscc_result"], i["granted"], i["fui"]) == (2001, 2001, 3, True)
    # The peer keeps the call up past its quota: the cutter's deadline fires an ASR.
    asr = await peer.wait_for(lambda e: e.get("event") == "asr", timeout_s=15)
    assert asr["session"] == sid and asr["answered"] == 2001
    # The client ends the call on the ASA and reports the 3 s it used (RFC 4006 §5.5).
    t = await peer.ccr("t", sid, 3, 1, used=3, rating_group=100)
    assert t["result"] == 2001
    (cdr,) = await read_cdrs(running.redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("credit_cut", 3, 30_000)
    account = await running.ledger.get_account("acc1")
    assert account.balance_micros == 0, "a prepaid account that was cut never ends below zero"
    await until(lambda: running.frontend.initiated.counters.asr_confirmed == 1)


@pytest.mark.parametrize(("balance_micros", "fui"), [(1_050_000, True), (1_060_000, False)])
async def test_a_renewal_that_takes_the_last_of_the_money_carries_fui(
    running: Running, peer: ErlangPeer, balance_micros: int, fui: bool
) -> None:
    """OTP's decoder reads the CCA-U: 1.05 EUR pays 105 s at 0.01 a second; the CCR-U
    at 30 s renews for 75 s, exactly the rest (Final-Unit-Indication, RFC 4006 §5.6.1);
    one cent more and it is not the last grant. Before, both came without FUI."""
    sid = f"scscf.ims.test;1;otp-last-{balance_micros}"
    i = await _open_call(running, peer, sid, balance_micros)
    assert (i["result"], i["mscc_result"], i["granted"], i["fui"]) == (2001, 2001, 75, False)
    u = await peer.ccr("u", sid, 2, 1, used=30, requested=60, rating_group=100)
    assert (u["result"], u["mscc_result"], u["granted"], u["fui"]) == (2001, 2001, 75, fui)
    t = await peer.ccr("t", sid, 3, 2, used=20, rating_group=100)
    assert t["result"] == 2001
    account = await running.ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (balance_micros - 500_000, 0)


async def test_top_level_3gpp_charging_avps_of_otp_are_accepted(
    running: Running, peer: ErlangPeer
) -> None:
    """OTP encodes AoC-Request-Type (2055) and 3GPP-RAT-Type (21) at the CCR's top level
    with V and M, as its dictionary (TS 32.299 §6.4.2, freeDiameter's flags) says:
    each CCR of it was answered 5001 before; now the call is charged as any."""
    await add_account(running.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm)
    assert up["event"] == "up"
    sid = "scscf.ims.test;1;otp-aoc"
    top = {"aoc": 1, "rat_type": "06"}  # AOC_FULL, EUTRAN
    i = await peer.ccr("i", sid, 1, 0, calling=CALLER, called=BERLIN, requested=60,
                       rating_group=100, **top)  # fmt: skip
    assert (i["result"], i["mscc_result"]) == (2001, 2001) and i["granted"] > 0
    u = await peer.ccr("u", sid, 2, 1, used=30, requested=60, rating_group=100, **top)
    assert (u["result"], u["mscc_result"]) == (2001, 2001)
    t = await peer.ccr("t", sid, 3, 2, used=10, rating_group=100, **top)
    assert t["result"] == 2001
    account = await running.ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 400_000, 0)


async def test_unconfirmed_asr_is_retried_like_a_disconnect_request(
    redis: aioredis.Redis, tmp_path: Path, peer: ErlangPeer
) -> None:
    async with running_frontend(redis, tmp_path, disconnect_backoff_s=0.3) as running:
        sid = "scscf.ims.test;1;otp-retry"
        await peer.answer_with("asr", 5012)  # UNABLE_TO_COMPLY: not confirmed
        i = await _open_call(running, peer, sid, 20_000)
        assert i["fui"]
        await peer.wait_for(lambda e: e.get("event") == "asr" and e["answered"] == 5012,
                            timeout_s=15)  # fmt: skip
        await peer.answer_with("asr", 2001)
        await peer.wait_for(lambda e: e.get("event") == "asr" and e["answered"] == 2001,
                            timeout_s=15)  # fmt: skip
        counters = running.frontend.initiated.counters
        await until(lambda: counters.asr_confirmed == 1)  # the peer printed it first
        assert counters.asr_failed >= 1
        rec = await running.sessions.store.find(sid)
        assert rec is not None and rec.cut_ok == 1 and rec.cut_attempts >= 2


@pytest.mark.parametrize("raa", [2001, 2002])
async def test_top_up_sends_a_rar_and_the_next_ccr_u_gets_a_larger_grant(
    running: Running, peer: ErlangPeer, raa: int
) -> None:
    """RAA 2002 DIAMETER_LIMITED_SUCCESS is what RFC 4006 §5.5 says a client SHOULD
    answer (a CCR-U follows): it confirms the RAR as 2001 does (before: counted failed)."""
    sid = f"scscf.ims.test;1;otp-topup-{raa}"
    i = await _open_call(running, peer, sid, 50_000)  # 5 s of money
    assert i["fui"] and i["granted"] == 5
    await peer.answer_with("rar", raa)
    await running.ledger.topup("acc1", 10 * EUR, txn_id="t1", who="test")
    assert await running.sessions.on_topup("acc1") == 1
    rar = await peer.wait_for(lambda e: e.get("event") == "rar")
    assert rar["session"] == sid and rar["answered"] == raa
    # RFC 4006 §5.5: after the RAR the client re-authorizes with its next request number.
    u = await peer.ccr("u", sid, 2, 1, used=1, requested=60, rating_group=100)
    assert (u["result"], u["mscc_result"], u["fui"]) == (2001, 2001, False)
    assert u["granted"] > 5
    await until(lambda: running.frontend.initiated.counters.rar_confirmed == 1)
    t = await peer.ccr("t", sid, 3, 2, used=2, rating_group=100)
    assert t["result"] == 2001
    (cdr,) = await read_cdrs(running.redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 3, 30_000)


async def test_watchdog_keeps_the_link_up(running: Running, peer: ErlangPeer) -> None:
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm,
                            watchdog_ms=6000)  # fmt: skip
    assert up["event"] == "up"
    # OTP sends a DWR after Tw (6 s, the RFC 3539 minimum) of silence; we answer DWA.
    counters = running.frontend.server.counters
    await until(lambda: counters.watchdogs >= 1, timeout_s=30)  # Tw jitters by ±2 s
    assert not any(e.get("event") == "down" for e in peer.events)


async def test_octets_are_refused_5031_and_not_served_for_free(
    running: Running, peer: ErlangPeer
) -> None:
    """OTP's own encoder and decoder: a CCR-I asking CC-Total-Octets only gets 5031 in
    its MSCC and for the command, no grant, Failed-AVP (nothing held, no session); a
    call granted time that reports octets only is refused more quota (5031) and its
    CCR-T is charged for the call's time, not for nothing."""
    await add_account(running.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm)
    assert up["event"] == "up"
    i = await peer.ccr("octets-i", "scscf.ims.test;1;otp-octets", 1, 0, calling=CALLER,
                       called=BERLIN, requested_octets=10**6, rating_group=100)  # fmt: skip
    assert (i["result"], i["mscc_result"], i["granted"]) == (5031, 5031, None)
    assert i["failed_avp"]
    assert (await running.ledger.get_account("acc1")).reserved_micros == 0
    assert await running.sessions.store.find("scscf.ims.test;1;otp-octets") is None
    sid = "scscf.ims.test;1;otp-time"
    i = await peer.ccr("time-i", sid, 1, 0, calling=CALLER, called=BERLIN, requested=60,
                       rating_group=100)  # fmt: skip
    assert (i["result"], i["mscc_result"], i["failed_avp"]) == (2001, 2001, False)
    assert i["granted"] > 0
    u = await peer.ccr("time-u", sid, 2, 1, used=20, used_octets=10**5, requested=60,
                       rating_group=100)  # fmt: skip
    assert (u["result"], u["mscc_result"], u["failed_avp"]) == (2001, 2001, False)
    u = await peer.ccr("octets-u", sid, 2, 2, used_octets=10**6, requested=60, rating_group=100)
    assert (u["result"], u["mscc_result"], u["granted"], u["failed_avp"]) == (
        5031,
        5031,
        None,
        True,
    )
    t = await peer.ccr("octets-t", sid, 3, 3, used_octets=10**5, rating_group=100)
    assert t["result"] == 2001
    (cdr,) = await read_cdrs(running.redis)
    # The call's time (the CCRs' arrival times: OTP sends no Event-Timestamp), never
    # less than the 20 s reported in CC-Time.
    assert cdr.call_id == sid and cdr.duration_s >= 20
    account = await running.ledger.get_account("acc1")
    assert account.debits_micros == cdr.charged_micros == cdr.duration_s * 10_000
    assert account.reserved_micros == 0
    assert running.frontend.counters()["cc_unrated"] == 3
