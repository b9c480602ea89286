"""Every rating group of a session reported FINAL (TS 32.299 §7.2.175): the usage is
final. The unused hold is released at once; a session its client then never ends
(no CCR-T: it crashed, or ends sessions some other way) is reaped and charged exactly
the reported usage, not the time since the answer; a CCR-T that comes after all
charges nothing more and adds no CDR. Real TCP, real Redis, the reaper with a short
stale window (interim 1 s x stale_factor 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import TcpClient, open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account, read_cdrs

from chargingd.billing.cdr import CDR
from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import VENDOR_3GPP, A, G
from chargingd.diameter.translate import NTP_UNIX_OFFSET_S

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second
PER_S = 10_000
FINAL = 2  # Reporting-Reason (TS 32.299 §7.2.175)
ANSWERED_AGO_S = 120  # the CCR-I's Event-Timestamp: the call was answered that long ago


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    # stale after 2 s of silence; the background reaper left to the tests (run_once)
    async with running_frontend(
        redis, tmp_path, interim_interval_s=1, stale_factor=2, reaper_interval_s=3600
    ) as r:
        await add_account(r.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
        yield r


def mscc(rg: int, *, used_s: int | None = None, requested_s: int | None = None,
         reason: int | None = None) -> bytes:  # fmt: skip
    parts = []
    if requested_s is not None:
        parts.append(dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, requested_s)))
    if used_s is not None:
        parts.append(dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, used_s)))
    parts.append(dc.u32(A.RATING_GROUP, rg))
    if reason is not None:
        parts.append(dc.u32(G.REPORTING_REASON, reason, vendor=VENDOR_3GPP))
    return dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *parts)


def answered_long_ago() -> bytes:
    """Event-Timestamp of the CCR-I: when the call began at the client."""
    return dc.u32(A.EVENT_TIMESTAMP, int(time.time()) - ANSWERED_AGO_S + NTP_UNIX_OFFSET_S)


async def money(r: Running) -> tuple[int, int]:
    acc = await r.ledger.get_account("acc1")
    return acc.reserved_micros, acc.debits_micros


async def reaped(r: Running) -> list[CDR]:
    """Run the reaper until the session is closed (its stale window is 2 s)."""
    for _ in range(60):
        await r.sessions.reaper.run_once()
        cdrs = await read_cdrs(r.redis)
        if cdrs:
            return cdrs
        await asyncio.sleep(0.1)
    raise AssertionError("not reaped")


async def test_final_on_every_group_then_no_ccr_t_is_charged_the_reported_usage(
    running: Running,
) -> None:
    """Voice and video from the CCR-I (answered 120 s ago); both end in one CCR-U with
    FINAL (voice 10 s, video 8 s beside it). The usage is final: the hold is gone at
    once (before: the renewed hold stayed until the CCR-T). The client never sends its
    CCR-T: the reaper closes the session charged the 10 s reported, the CDR saying
    why (before: the time since the answer, up to what was held, 85 s, provisional).
    The CCR-T that comes late is answered 2001 and moves nothing: one charge, one
    CDR."""
    client = await open_client(running.port)
    c = cl.Call("final-all", calling=CALLER, called=BERLIN, rating_group=None)
    first = mscc(10, requested_s=60) + mscc(20, requested_s=60) + answered_long_ago()
    assert (await client.ccr(c, 1, 0, extra=first)).result == 2001
    ends = mscc(10, used_s=10, reason=FINAL) + mscc(20, used_s=8, reason=FINAL)
    assert (await client.ccr(c, 2, 1, extra=ends)).result == 2001
    assert await money(running) == (0, 10 * PER_S)  # nothing held for a call that ended
    [cdr] = await reaped(running)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("stale", 10, 10 * PER_S)
    assert (cdr.cost_micros, cdr.charge_reason) == (10 * PER_S, "")
    assert cdr.extra.get("usage_from") == "reporting_reason_final"
    assert "provisional" not in cdr.extra
    assert cdr.end_ms - cdr.answer_ms < 15_000  # ends at the FINAL report, not at the reap
    acc = await running.ledger.get_account("acc1")
    assert (acc.reserved_micros, acc.debits_micros) == (0, 10 * PER_S)
    assert acc.balance_micros == 10 * EUR - 10 * PER_S
    # the CCR-T after the reap: one charge, one CDR
    assert (await client.ccr(c, 3, 2)).result == 2001
    assert len(await read_cdrs(running.redis)) == 1
    assert await money(running) == (0, 10 * PER_S)
    await client.close()


async def test_final_on_the_only_group_then_a_ccr_t_charges_once(running: Running) -> None:
    """One group, FINAL with 10 s (the session stays for its CCR-T): nothing held from
    the FINAL on; the CCR-T (no USU) closes it, charged the 10 s once, one CDR, normal
    (the reaper before it finds nothing to do)."""
    client = await open_client(running.port)
    c = cl.Call("final-only", calling=CALLER, called=BERLIN, rating_group=None)
    first = mscc(10, requested_s=60) + answered_long_ago()
    assert (await client.ccr(c, 1, 0, extra=first)).result == 2001
    assert (await money(running))[0] > 0
    ends = mscc(10, used_s=10, reason=FINAL)
    assert (await client.ccr(c, 2, 1, extra=ends)).result == 2001
    assert await money(running) == (0, 10 * PER_S)
    assert (await client.ccr(c, 3, 2)).result == 2001
    assert await running.sessions.reaper.run_once() == 0
    [cdr] = await read_cdrs(running.redis)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("normal", 10, 10 * PER_S)
    assert await money(running) == (0, 10 * PER_S)
    await client.close()


async def test_quota_asked_again_after_final_holds_and_reaps_as_before(running: Running) -> None:
    """The only group ends (FINAL, 10 s, hold released), then the client asks quota for
    it again: money is held again for the new grant, and its usage is no longer final:
    a client that falls silent then is reaped provisionally as any call (the time
    since the answer, up to what was held), never for the 10 s only."""
    client = await open_client(running.port)
    c = cl.Call("final-again", calling=CALLER, called=BERLIN, rating_group=None)
    first = mscc(10, requested_s=60) + answered_long_ago()
    assert (await client.ccr(c, 1, 0, extra=first)).result == 2001
    assert (await client.ccr(c, 2, 1, extra=mscc(10, used_s=10, reason=FINAL))).result == 2001
    assert await money(running) == (0, 10 * PER_S)
    again = await client.ccr(c, 2, 2, extra=mscc(10, requested_s=60))
    assert again.result == 2001
    held, _ = await money(running)
    assert held > 0
    [cdr] = await reaped(running)
    assert cdr.status == "stale"
    assert cdr.extra.get("provisional") == "1"
    assert cdr.duration_s > 10
    assert "usage_from" not in cdr.extra
    await client.close()


async def test_single_service_final_releases_the_hold_and_a_peer_restart_charges_it(
    running: Running,
) -> None:
    """RFC 4006 single service (no MSCC): FINAL inside the top-level Used-Service-Unit
    ends it, the hold is released. The peer then restarts (a new Origin-State-Id in its
    CER) without a CCR-T: the session is closed gateway_restart, charged the 10 s
    reported (before: the time since the answer, up to what was held)."""
    first = await TcpClient.connect(running.port)
    await first.ask(cl.cer(first.me, *first.next_ids(), origin_state_id=300))
    c = cl.Call("final-single", calling=CALLER, called=BERLIN, rating_group=None)
    assert (await first.ccr(c, 1, 0, requested_s=60, extra=answered_long_ago())).result == 2001
    usu = dc.grouped(
        A.USED_SERVICE_UNIT,
        dc.u32(A.CC_TIME, 10),
        dc.u32(G.REPORTING_REASON, FINAL, vendor=VENDOR_3GPP),
    )
    assert (await first.ccr(c, 2, 1, extra=usu)).result == 2001
    assert await money(running) == (0, 10 * PER_S)
    await first.close()
    rebooted = await TcpClient.connect(running.port)
    await rebooted.ask(cl.cer(rebooted.me, *rebooted.next_ids(), origin_state_id=301))
    for _ in range(250):
        if await running.redis.xlen("cdr:stream"):
            break
        await asyncio.sleep(0.02)
    [cdr] = await read_cdrs(running.redis)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("gateway_restart", 10, 10 * PER_S)
    assert await money(running) == (0, 10 * PER_S)
    await rebooted.close()
