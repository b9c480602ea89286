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
