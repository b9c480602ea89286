"""The first grant's account check by identity (round 16a): StepBuilder.first_check
sends the identity as it is; reserve_first.lua (the plain authorize) and
check_packed.lua (the authorize with the fraud rules) compare it with the account's
identities whole (its only one: the same string, no search), else find it in the list,
newline-bounded as account_check.lua does. A prefix or an extension of a listed
identity is not listed."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import Ledger, Mode
from chargingd.ledger import keys as K
from chargingd.ledger.steps import AccountCheck, StepBuilder, fused_source

# reserve.lua's per-process ARGV (partial, new_session, who, audit max, reclaims, audit
# this hold, refusal ttl) as the plain authorize's CONF holds them
CONF = "local CONF = {'0', '1', 't', '100', '10', '0', '0'}\n"
FIRST = fused_source(CONF + "return {ledger_reserve_first(KEYS, ARGV, CONF)}", ["reserve_first"])
PACKED = fused_source(
    "local r = ledger_check_packed(KEYS[1], ARGV[1], ARGV[2]) return r", ["check_packed"]
)

CASES = [
    (("user:u10",), "user:u10", True),  # the only one: the same string
    (("user:u10",), "user:u1", False),  # a prefix of it
    (("user:u10",), "user:u100", False),  # longer
    (("user:a", "user:b", "user:c"), "user:b", True),  # listed, not the only one
    (("user:a", "user:b", "user:c"), "user:c", True),
    (("user:a", "user:b", "user:c"), "user:", False),
    (("user:a", "user:b", "user:c"), "b", False),
    ((), "user:a", False),  # no identities at all
]


async def _account(redis: aioredis.Redis, clock: Clock, ids: tuple[str, ...]) -> Ledger:
    ledger = Ledger(redis, clock_ms=clock, batch_commands=False)
    await ledger.load_scripts()
    await ledger.create_account(
        "a", mode=Mode.PREPAID, currency="EUR", balance_micros=10_000, tariff="retail",
        identities=ids, who="t",
    )  # fmt: skip
    # a first hold: the account's lease_due set (an account without it takes the general
    # path: its leases are looked for first)
    assert (await ledger.reserve("a", "long", 1_000, lease_ms=600_000)).ok
    return ledger


def _check(identity: str) -> list[str]:
    return StepBuilder.first_check(AccountCheck("retail", "EUR", identity, "prepaid"))


@pytest.mark.parametrize(("ids", "identity", "listed"), CASES)
async def test_reserve_first_finds_listed_identities_only(
    redis: aioredis.Redis, clock: Clock, ids: tuple[str, ...], identity: str, listed: bool
) -> None:
    await _account(redis, clock, ids)
    now = clock()
    keys = [*K.session_keys("a", "s1"), f"{K.account_tag('a')}:r:s1"]
    args: list[Any] = ["s1", 1_000, now, now + 30_000, 0, now, *_check(identity)]
    reply = await redis.eval(FIRST, len(keys), *keys, *args)  # type: ignore[misc]
    # granted straight ([amount, available after]), or left to the general path (nil)
    assert reply == ([1_000, 8_000] if listed else [])
    assert (await redis.hget(K.holds_key("a"), "s1") is not None) == listed


@pytest.mark.parametrize(("ids", "identity", "listed"), CASES)
async def test_check_packed_finds_listed_identities_only(
    redis: aioredis.Redis, clock: Clock, ids: tuple[str, ...], identity: str, listed: bool
) -> None:
    await _account(redis, clock, ids)
    check, wanted = _check(identity)
    reply = await redis.eval(PACKED, 1, K.acct_key("a"), check, wanted)  # type: ignore[misc]
    assert reply == (b"ok" if listed else b"stale")
