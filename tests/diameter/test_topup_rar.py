"""A top-up sends a RAR to a client that holds a Final-Unit-Indication, also when the
next grant lies within the minutes the call has paid already (real TCP)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import running_frontend
from sessions_harness import EUR, add_account, read_cdrs

from chargingd.diameter import client as cl
from chargingd.diameter.dictionary import Cmd

CALLER = "+4930555000"
HAMBURG = "tel:+4940123456"  # DE: 0.10 + 1.20 EUR per started minute


async def top_up_and_see_the_rar(running: Any, c: Any) -> None:
    """5 EUR topped up on acc1: sessions re-tells its one live call, and the client
    receives exactly one RAR (within 2 s)."""
    await running.ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await running.sessions.on_topup("acc1") == 1
    for _ in range(100):
        if c.server_requests:
            break
        await asyncio.sleep(0.02)
    assert [m.command for m in c.server_requests] == [Cmd.RE_AUTH]


async def test_topup_after_fui_sends_a_rar_when_the_deadline_stays(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """2.50 EUR pays 120 s. The CCR-U at 70 s gets the final 50 s (FUI TERMINATE); a
    top-up then renews for 70 s + a 35 s grant, paid already, so the deadline does not
    move. Before, no RAR went out and the client ended the call at 120 s (its FUI)."""
    async with running_frontend(redis, tmp_path, interim_interval_s=20) as running:
        await add_account(running.ledger, balance_micros=2_500_000, identities=(f"ani:{CALLER}",))
        c = await open_client(running.port)
        try:
            call = cl.Call("scscf.ims.test;1;topup-min", calling=CALLER, called=HAMBURG)
            i = await c.ccr(call, 1, 0, requested_s=0)
            assert (i.result, i.mscc_result, i.granted, i.fui) == (2001, 2001, 60, False)
            u = await c.ccr(call, 2, 1, used_s=70, requested_s=0)
            assert (u.result, u.mscc_result, u.granted, u.fui) == (2001, 2001, 50, True)
            await top_up_and_see_the_rar(running, c)
            # RFC 4006 §5.5: the client re-authorizes with its next number.
            u = await c.ccr(call, 2, 2, used_s=10, requested_s=0)
            assert (u.result, u.mscc_result, u.fui) == (2001, 2001, False)
            assert u.granted == 40  # to the end of the paid minute; no longer the last
            t = await c.ccr(call, 3, 3, used_s=55)
            assert t.result == 2001
        finally:
            await c.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 135, 3_700_000)
        account = await running.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (3_800_000, 0)


async def test_topup_after_a_first_grant_with_fui_sends_a_rar(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """1.30 EUR pays exactly the first minute: FUI on the CCR-I (no deadline: the hold
    is all sessions asked). A top-up re-tells it (RAR); the next CCR-U is granted."""
    async with running_frontend(redis, tmp_path, interim_interval_s=20) as running:
        await add_account(running.ledger, balance_micros=1_300_000, identities=(f"ani:{CALLER}",))
        c = await open_client(running.port)
        try:
            call = cl.Call("scscf.ims.test;1;topup-first", calling=CALLER, called=HAMBURG)
            i = await c.ccr(call, 1, 0, requested_s=0)
            assert (i.result, i.mscc_result, i.granted, i.fui) == (2001, 2001, 60, True)
            await top_up_and_see_the_rar(running, c)
            u = await c.ccr(call, 2, 1, used_s=55, requested_s=0)
            assert (u.result, u.mscc_result, u.fui) == (2001, 2001, False) and u.granted
            t = await c.ccr(call, 3, 2, used_s=30)
            assert t.result == 2001
        finally:
            await c.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 85, 2_500_000)


async def test_topup_after_a_renewal_with_fui_sends_a_rar(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """2.50 EUR pays two minutes: the CCR-U at 60 s is granted the second minute, the
    last (FUI, no deadline: held in full). A top-up re-tells it (RAR), and the next
    CCR-U is granted without FUI: the FUI did not strand a call whose money came."""
    async with running_frontend(redis, tmp_path, interim_interval_s=20) as running:
        await add_account(running.ledger, balance_micros=2_500_000, identities=(f"ani:{CALLER}",))
        c = await open_client(running.port)
        try:
            call = cl.Call("scscf.ims.test;1;topup-renew", calling=CALLER, called=HAMBURG)
            i = await c.ccr(call, 1, 0, requested_s=0)
            assert (i.result, i.mscc_result, i.granted, i.fui) == (2001, 2001, 60, False)
            u = await c.ccr(call, 2, 1, used_s=60, requested_s=0)
            assert (u.result, u.mscc_result, u.granted, u.fui) == (2001, 2001, 60, True)
            await top_up_and_see_the_rar(running, c)
            u = await c.ccr(call, 2, 2, used_s=30, requested_s=0)
            assert (u.result, u.mscc_result, u.fui) == (2001, 2001, False) and u.granted
            t = await c.ccr(call, 3, 3, used_s=40)
            assert t.result == 2001
        finally:
            await c.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 130, 3_700_000)
        account = await running.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (3_800_000, 0)
