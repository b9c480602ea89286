"""status.lua as a fraud block uses it: reason "fraud", only from active, concurrent
blocks applied once, and embedded in another script (ledger_status) like reserve."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from chargingd.ledger import Ledger, Mode, Status
from chargingd.ledger.steps import fused_source

ACTIVE = ("active/",)


async def test_block_with_a_reason_only_from_active(ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    acc = await ledger.set_status(
        "a1", Status.BLOCKED, who="fraud:premium", why="6 premium calls", reason="fraud",
        only_from=ACTIVE,
    )  # fmt: skip
    assert (acc.status, acc.status_reason) == (Status.BLOCKED, "fraud")
    entry = (await ledger.audit("a1", count=1))[0]
    assert (entry.who, entry.why, entry.after["status_reason"]) == (
        "fraud:premium",
        "6 premium calls",
        "fraud",
    )
    # A closed account is never turned into a blocked one.
    await ledger.create_account("a2", mode=Mode.PREPAID, currency="EUR", who="op")
    await ledger.set_status("a2", Status.CLOSED, who="op")
    acc = await ledger.set_status(
        "a2", Status.BLOCKED, who="fraud", reason="fraud", only_from=ACTIVE
    )
    assert (acc.status, acc.status_reason) == (Status.CLOSED, "operator")


async def test_concurrent_blocks_change_the_status_once(ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    await asyncio.gather(
        *(
            ledger.set_status("a1", Status.BLOCKED, who="fraud", reason="fraud", only_from=ACTIVE)
            for _ in range(20)
        )
    )
    assert [e.what for e in await ledger.audit("a1")].count("status") == 1


async def test_status_embeds_like_reserve(redis: aioredis.Redis, ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    step = ledger.steps.status(
        "a1", Status.BLOCKED, now_ms=1, who="fraud", reason="fraud", only_from=ACTIVE
    )
    script = redis.register_script(fused_source("return ledger_status(KEYS, ARGV)", ("status",)))
    assert await script(keys=step.keys, args=step.argv) == [b"ok"]
    assert await script(keys=step.keys, args=step.argv) == [b"skipped"]
    acc = await ledger.get_account("a1")
    assert (acc.status, acc.status_reason) == (Status.BLOCKED, "fraud")
