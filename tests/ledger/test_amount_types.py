"""Amounts that are not integer micro-units, through the ledger's money calls: each is
refused with InvalidRequest before any script runs, and the account is unchanged.

(A float that happens to be whole, 1.0, is refused too: money is integers end to end.
In the compiled build, setup.py, ledger/steps.py and keys.py take these values as
`object` and check them: a compiled argument check would raise TypeError instead.)"""

from __future__ import annotations

import enum

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import InvalidRequest, Ledger, Mode


class Tariff(enum.IntEnum):  # an int subclass: refused as exactly as bool, in both builds
    EURO = 1_000_000


class Micros(int):
    pass


BAD_AMOUNTS = [1.5, 1.0, True, "1000000", None, 10**16, b"1", Tariff.EURO, Micros(1000)]


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis, clock_ms=Clock(), audit_max_entries=50)
    await led.load_scripts()
    await led.create_account(
        "amt", mode=Mode.PREPAID, currency="EUR", balance_micros=10_000_000, who="op"
    )
    return led


async def _money(ledger: Ledger) -> tuple[int, int, int]:
    acc = await ledger.get_account("amt")
    return acc.balance_micros, acc.reserved_micros, acc.debits_micros


@pytest.mark.parametrize("amount", [*BAD_AMOUNTS, 0, -5])
async def test_reserve_refuses_a_bad_amount_and_holds_nothing(
    ledger: Ledger, amount: object
) -> None:
    before = await _money(ledger)
    with pytest.raises(InvalidRequest, match="reserve amount"):
        await ledger.reserve("amt", "s-bad", amount, lease_ms=60_000)  # type: ignore[arg-type]
    assert await _money(ledger) == before
    grant = await ledger.reserve("amt", "s-good", 1_000_000, lease_ms=60_000)
    assert grant.granted_micros == 1_000_000  # the account itself is fine


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_commit_refuses_a_bad_amount_and_debits_nothing(
    ledger: Ledger, amount: object
) -> None:
    await ledger.reserve("amt", "s1", 2_000_000, lease_ms=60_000)
    before = await _money(ledger)
    with pytest.raises(InvalidRequest):
        await ledger.commit("amt", "s1", amount)  # type: ignore[arg-type]
    assert await _money(ledger) == before
    result = await ledger.commit("amt", "s1", 1_500_000)
    assert result.debited_micros == 1_500_000


@pytest.mark.parametrize("amount", [*BAD_AMOUNTS, 0, -5])
async def test_topup_refuses_a_bad_amount_and_credits_nothing(
    ledger: Ledger, amount: object
) -> None:
    before = await _money(ledger)
    with pytest.raises(InvalidRequest):
        await ledger.topup("amt", amount, txn_id="t-bad", who="op")  # type: ignore[arg-type]
    assert await _money(ledger) == before
    acc = await ledger.topup("amt", 2_500_000, txn_id="t-bad", who="op")
    assert acc.balance_micros == before[0] + 2_500_000  # the refused one did not claim the txn id


@pytest.mark.parametrize(
    ("field", "value"),
    [("lease_ms", Micros(60_000)), ("lease_ms", True), ("who", None), ("who", 5)],
)
async def test_reserve_refuses_a_bad_lease_or_who_and_holds_nothing(
    ledger: Ledger, field: str, value: object
) -> None:
    """Not an int lease (an int subclass too), not a text who: InvalidRequest, nothing
    held (before: the compiled build took Micros as the int it holds, the interpreted
    one sent it and the batch it was in timed out, a None who too, in both)."""
    before = await _money(ledger)
    kwargs: dict[str, object] = {"lease_ms": 60_000, field: value}
    with pytest.raises(InvalidRequest, match=field):
        await ledger.reserve("amt", "s-bad", 1_000_000, **kwargs)  # type: ignore[arg-type]
    assert await _money(ledger) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("partial", "0"),
        ("partial", "yes"),
        ("partial", 2),
        ("new_session", "0"),
        ("new_session", None),
        ("new_session", 1.0),
    ],
)
async def test_reserve_refuses_a_flag_that_is_not_a_bool_and_holds_nothing(
    ledger: Ledger, field: str, value: object
) -> None:
    """partial / new_session: a bool (or 0/1). Before, "yes" raised ValueError and a
    text "0" was taken as the flag 0."""
    before = await _money(ledger)
    kwargs: dict[str, object] = {"lease_ms": 60_000, field: value}
    with pytest.raises(InvalidRequest, match=field):
        await ledger.reserve("amt", "s-bad", 1_000_000, **kwargs)  # type: ignore[arg-type]
    assert await _money(ledger) == before
    grant = await ledger.reserve("amt", "s-good", 1_000_000, lease_ms=60_000, partial=1)
    assert grant.granted_micros == 1_000_000


async def test_a_renewal_may_hold_nothing_and_the_session_stays_open(ledger: Ledger) -> None:
    """A renewal of 0 (a session whose usage is final: sessions/idle.py) drops the hold
    and keeps the session open: a later renewal holds again, the release charges the
    final cost once. A new session of 0 is refused (above)."""
    assert (await ledger.reserve("amt", "s-idle", 1_000_000, lease_ms=60_000)).granted_micros
    await ledger.commit("amt", "s-idle", 300_000)
    grant = await ledger.reserve("amt", "s-idle", 0, lease_ms=60_000, new_session=False)
    assert (grant.reason, grant.granted_micros) == (None, 0)
    assert await _money(ledger) == (9_700_000, 0, 300_000)
    again = await ledger.reserve("amt", "s-idle", 500_000, lease_ms=60_000, new_session=False)
    assert again.granted_micros == 500_000
    assert await _money(ledger) == (9_700_000, 500_000, 300_000)
    await ledger.release("amt", "s-idle", 400_000)
    await ledger.release("amt", "s-idle", 400_000)  # a duplicate: nothing more
    assert await _money(ledger) == (9_600_000, 0, 400_000)
