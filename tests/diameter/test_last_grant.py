"""Final-Unit-Indication on a first grant the money pays in full but nothing past."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import running_frontend
from sessions_harness import add_account, read_cdrs

from chargingd.diameter import client as cl

CALLER = "+4930555000"
HAMBURG = "tel:+4940123456"  # DE: 0.10 + 1.20 EUR per started minute


@pytest.mark.parametrize(
    ("balance_micros", "fui"),
    [
        (1_300_000, True),  # exactly the first minute: nothing after it
        (1_350_000, True),  # 0.05 left over buys no second minute
        (2_500_000, False),  # a second minute
    ],
)
async def test_first_grant_that_is_all_the_money_pays_carries_fui(
    redis: aioredis.Redis, tmp_path: Path, balance_micros: int, fui: bool
) -> None:
    """Interim 20 s: the first grant (35 s) holds one started minute, 60 s. Before, a
    balance of exactly that minute got the grant without FUI (sessions did not call it
    limited: the hold was what it asked), though it was the last the balance allows."""
    async with running_frontend(redis, tmp_path, interim_interval_s=20) as running:
        await add_account(
            running.ledger, balance_micros=balance_micros, identities=(f"ani:{CALLER}",)
        )
        c = await open_client(running.port)
        try:
            call = cl.Call("scscf.ims.test;1;last", calling=CALLER, called=HAMBURG)
            i = await c.ccr(call, 1, 0, requested_s=0)
            assert (i.result, i.mscc_result, i.granted, i.fui) == (2001, 2001, 60, fui)
            u = await c.ccr(call, 2, 1, used_s=60, requested_s=0)
            if fui:  # nothing more: 4012 in the MSCC, GSU 0
                assert (u.result, u.mscc_result, u.granted, u.fui) == (2001, 4012, 0, True)
            else:
                assert (u.result, u.mscc_result) == (2001, 2001) and u.granted
            t = await c.ccr(call, 3, 2, used_s=0)
            assert t.result == 2001
        finally:
            await c.close()
        (cdr,) = await read_cdrs(redis)
        assert (cdr.duration_s, cdr.cost_micros) == (60, 1_300_000)
        account = await running.ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (balance_micros - 1_300_000, 0)


BERLIN = "tel:+4930123456"  # DE_BERLIN: 0.60 EUR per minute, per second (0.01 a second)


@pytest.mark.parametrize(
    ("called", "balance_micros", "fui"),
    [
        # per second: CCR-I 35 s held (0.35); the CCR-U at 20 s commits 0.20 and holds
        # 35 s more (0.35): 0.55 is exactly that, 0.56 one second past it
        (BERLIN, 550_000, True),
        (BERLIN, 560_000, False),
        # per minute (0.10 + 1.20 a started minute): the CCR-U at 60 s holds the second
        # minute; 2.50 pays exactly two, 2.60 leaves 0.10 that buys no third, 3.70 does
        (HAMBURG, 2_500_000, True),
        (HAMBURG, 2_600_000, True),
        (HAMBURG, 3_700_000, False),
    ],
)
async def test_renewal_that_is_all_the_money_pays_carries_fui(
    redis: aioredis.Redis, tmp_path: Path, called: str, balance_micros: int, fui: bool
) -> None:
    """RFC 4006 §5.6.1/§8.34: the OCS sends Final-Unit-Indication with the last units it
    grants. Before, a CCR-U whose renewal was held in full but used up the balance
    exactly (sessions did not call it limited) was granted without FUI: the client
    learnt only at its next CCR-U (4012, GSU 0) that the units it had were the last,
    and a client that plays an announcement or redirects on FUI could not."""
    async with running_frontend(redis, tmp_path, interim_interval_s=20) as running:
        await add_account(
            running.ledger, balance_micros=balance_micros, identities=(f"ani:{CALLER}",)
        )
        c = await open_client(running.port)
        try:
            call = cl.Call(f"scscf.ims.test;1;renew{balance_micros}", calling=CALLER, called=called)
            i = await c.ccr(call, 1, 0, requested_s=0)
            assert (i.result, i.mscc_result, i.fui) == (2001, 2001, False)
            used = 20 if called == BERLIN else 60
            u = await c.ccr(call, 2, 1, used_s=used, requested_s=0)
            assert (u.result, u.mscc_result, u.fui) == (2001, 2001, fui)
            assert u.granted == (35 if called == BERLIN else 60)
            u2 = await c.ccr(call, 2, 2, used_s=u.granted, requested_s=0)
            if fui:  # what FUI announced: nothing more
                assert (u2.result, u2.mscc_result, u2.granted) == (2001, 4012, 0)
            else:  # (the money left pays part of the next grant, or all: FUI)
                assert u2.mscc_result == 2001 and u2.granted
            t = await c.ccr(call, 3, 3, used_s=0)
            assert t.result == 2001
        finally:
            await c.close()
        account = await running.ledger.get_account("acc1")
        assert account.reserved_micros == 0
        assert account.balance_micros >= 0
