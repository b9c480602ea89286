"""Review of the money path: edge cases of the ledger scripts and of amount parsing.

Each test pins one decided behaviour (see the docstrings); the invariants of DESIGN
(initial + topups - debits == balance, reserved == sum of holds, every balance change
audited) are checked after every step on a real Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import running_admin
from fakes import Clock

from chargingd.admin import ctl
from chargingd.admin.params import RpcError
from chargingd.admin.server import AsyncAdminClient
from chargingd.core.money import AmountError, parse_amount
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import (
    InsufficientCredit,
    InvalidRequest,
    Ledger,
    Mode,
    SessionClosed,
)
from chargingd.ledger import codec as C
from chargingd.ledger import keys as K

T0 = 1_700_000_000_000


@pytest.fixture
async def ledger(redis: aioredis.Redis, clock: Clock) -> Ledger:
    led = Ledger(redis, clock_ms=clock, audit_max_entries=0, session_ttl_s=3600)
    await led.load_scripts()
    return led


async def _prepaid(ledger: Ledger, account_id: str = "pre", balance: int = 100) -> None:
    await ledger.create_account(
        account_id, mode=Mode.PREPAID, currency="EUR", balance_micros=balance, who="t"
    )


async def check_books(ledger: Ledger, account_id: str) -> None:
    """DESIGN invariant 2 plus the audit trail: every balance change has an entry."""
    redis = ledger.redis
    acc = await ledger.get_account(account_id)
    assert acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == acc.balance_micros
    raw_holds: Any = await redis.hgetall(K.holds_key(account_id))
    holds = {C.s(k): int(v) for k, v in raw_holds.items()}
    raw_leases: Any = await redis.zrange(K.leases_key(account_id), 0, -1)
    leases = {C.s(m) for m in raw_leases}
    assert acc.reserved_micros == sum(holds.values())
    assert set(holds) == leases
    assert all(v >= 0 for v in holds.values())
    entries = await ledger.audit(account_id, count=100_000)
    moved = sum(
        int(e.after["balance"]) - int(e.before["balance"]) for e in entries if e.before["balance"]
    )
    assert acc.initial_balance_micros + moved == acc.balance_micros
    for raw in await redis.hvals(K.acct_key(account_id)):
        assert b"e+" not in raw and b"E+" not in raw  # no exponent form from Lua tostring
    # lease_due (reserve.lua) errs only early: no lease expires before it.
    due = await redis.hget(K.acct_key(account_id), "lease_due")
    lowest: Any = await redis.zrange(K.leases_key(account_id), 0, 0, withscores=True)
    if due is not None and lowest:
        assert int(due) <= lowest[0][1]


# -- (1) money never moves twice, never without an audit entry, never below the floor ------


async def test_adjust_refuses_a_prepaid_debt_unless_allowed(ledger: Ledger) -> None:
    """A negative adjustment below the floor changes nothing (the same txn id stays
    usable); with allow_debt (re-rated real usage) it makes a debt, audited."""
    await _prepaid(ledger)
    with pytest.raises(InsufficientCredit):
        await ledger.adjust("pre", -101, txn_id="a1", who="op", why="typo")
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.debits_micros) == (100, 0)
    assert [e.what for e in await ledger.audit("pre")] == ["create"]
    acc = await ledger.adjust("pre", -100, txn_id="a0", who="op", why="to zero")
    assert acc.balance_micros == 0
    acc = await ledger.adjust("pre", -101, txn_id="a1", who="op", why="rerate", allow_debt=True)
    assert acc.balance_micros == -101
    await check_books(ledger, "pre")


async def test_adjust_refuses_postpaid_below_credit_limit(ledger: Ledger) -> None:
    await ledger.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=1_000, who="t"
    )
    acc = await ledger.adjust("post", -1_000, txn_id="a1", who="op", why="at the floor")
    assert acc.balance_micros == -1_000
    with pytest.raises(InsufficientCredit):
        await ledger.adjust("post", -1, txn_id="a2", who="op", why="below")
    assert (await ledger.get_account("post")).balance_micros == -1_000
    await check_books(ledger, "post")


async def test_concurrent_identical_topups_apply_once(ledger: Ledger) -> None:
    await _prepaid(ledger)
    results = await asyncio.gather(
        *(ledger.topup("pre", 500, txn_id="same", who="shop") for _ in range(20))
    )
    assert {r.balance_micros for r in results} == {600}
    acc = await ledger.get_account("pre")
    assert (acc.balance_micros, acc.topups_micros) == (600, 500)
    assert [e.what for e in await ledger.audit("pre")].count("topup") == 1
    await check_books(ledger, "pre")


async def test_release_with_final_below_debited_keeps_the_debit(ledger: Ledger) -> None:
    """Decided: no refund at release (the CDR carries max(debited, rated), see
    sessionclose); corrections go through audited, idempotent adjustments (rerate)."""
    await _prepaid(ledger, balance=1_000)
    assert (await ledger.reserve("pre", "c1", 300, lease_ms=60_000)).granted_micros == 300
    assert (await ledger.commit("pre", "c1", 200)).debited_micros == 200
    res = await ledger.release("pre", "c1", 150)
    assert (res.debited_micros, res.total_debited_micros, res.balance_micros) == (0, 200, 800)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.details["amount"], entry.details["released"]) == (
        "release",
        "0",
        "100",
    )
    assert (await ledger.get_account("pre")).reserved_micros == 0
    await check_books(ledger, "pre")


async def test_commit_after_lease_expiry_and_sweep_charges_real_usage(
    ledger: Ledger, clock: Clock
) -> None:
    """The hold is gone but the usage is real: debited as a debt and flagged overrun."""
    await _prepaid(ledger, balance=100)
    await ledger.reserve("pre", "c1", 100, lease_ms=1_000)
    clock.now_ms += 120_000
    assert await ledger.sweep_expired() == 1
    await check_books(ledger, "pre")
    res = await ledger.commit("pre", "c1", 150)
    assert (res.debited_micros, res.balance_micros, res.overrun) == (150, -50, True)
    # A late renewal finds nothing available, and the final stop adds only the rest.
    assert not (await ledger.reserve("pre", "c1", 10, lease_ms=1_000, new_session=False)).ok
    res = await ledger.release("pre", "c1", 160)
    assert (res.debited_micros, res.total_debited_micros, res.balance_micros) == (10, 160, -60)
    await check_books(ledger, "pre")


async def test_commit_on_an_expired_unswept_hold_then_reclaim(ledger: Ledger, clock: Clock) -> None:
    await _prepaid(ledger, balance=100)
    await ledger.reserve("pre", "c1", 60, lease_ms=1_000)
    clock.now_ms += 5_000
    res = await ledger.commit("pre", "c1", 20)  # taken from the (expired) hold
    assert (res.balance_micros, res.overrun) == (80, False)
    await check_books(ledger, "pre")
    grant = await ledger.reserve("pre", "c2", 100, lease_ms=1_000)  # reclaims c1's rest
    assert grant.granted_micros == 80
    await check_books(ledger, "pre")


async def test_renewal_after_partial_commit_with_own_hold_above_available(ledger: Ledger) -> None:
    await _prepaid(ledger, balance=100)
    await ledger.reserve("pre", "a", 60, lease_ms=60_000)
    await ledger.reserve("pre", "b", 40, lease_ms=60_000)
    await ledger.commit("pre", "a", 30)  # a's hold 30, balance 70, reserved 70
    with pytest.raises(InsufficientCredit):  # all 70 is held by live calls
        await ledger.adjust("pre", -50, txn_id="x", who="op", why="chargeback")
    await ledger.adjust("pre", -50, txn_id="x", who="op", why="chargeback", allow_debt=True)
    await check_books(ledger, "pre")
    grant = await ledger.reserve("pre", "a", 60, lease_ms=60_000, new_session=False)
    assert not grant.ok  # 20 - b's 40 leaves nothing; a keeps its hold of 30
    assert (await ledger.get_account("pre")).reserved_micros == 70
    await ledger.release("pre", "b", 0)
    grant = await ledger.reserve("pre", "a", 60, lease_ms=60_000, new_session=False)
    assert (grant.granted_micros, grant.available_micros) == (20, 0)
    await check_books(ledger, "pre")


async def test_tombstone_stops_replays_for_its_whole_ttl(ledger: Ledger) -> None:
    """Within session_ttl_s a replayed commit/stop never charges and a replayed
    authorize is refused; the tombstone lives exactly that long (it must outlive
    sessions' closed_ttl_s so an adopted late Stop still finds it)."""
    await _prepaid(ledger, balance=1_000)
    await ledger.reserve("pre", "c1", 300, lease_ms=60_000)
    await ledger.release("pre", "c1", 250)
    ttl_ms = await ledger.redis.pttl(K.session_key("pre", "c1"))
    assert 3_590_000 < ttl_ms <= 3_600_000
    assert (await ledger.commit("pre", "c1", 900)).duplicate
    assert (await ledger.release("pre", "c1", 900)).duplicate
    with pytest.raises(SessionClosed):
        await ledger.reserve("pre", "c1", 10, lease_ms=1_000)
    assert (await ledger.get_account("pre")).balance_micros == 750
    await check_books(ledger, "pre")


async def test_sweep_racing_reserves_keeps_the_books(ledger: Ledger, clock: Clock) -> None:
    await _prepaid(ledger, balance=10_000)

    async def call(n: int) -> None:
        sid = f"c{n}"
        await ledger.reserve("pre", sid, 700, lease_ms=1_000 + n % 3 * 1_000)
        await ledger.commit("pre", sid, 100 + n)
        if n % 2:
            await ledger.release("pre", sid, 200 + n)

    async def sweeps() -> None:
        for _ in range(20):
            clock.now_ms += 400
            await ledger.sweep_expired()
            await asyncio.sleep(0)

    await asyncio.gather(sweeps(), *(call(n) for n in range(30)))
    await check_books(ledger, "pre")
    clock.now_ms += 60_000
    await ledger.sweep_expired()
    acc = await ledger.get_account("pre")
    assert acc.reserved_micros == 0 and acc.live_sessions == 0
    await check_books(ledger, "pre")


async def test_random_paths_keep_every_invariant(ledger: Ledger, clock: Clock) -> None:
    rng = random.Random(20261122)
    await _prepaid(ledger, "pre", 5_000)
    await ledger.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=3_000, who="t"
    )
    debited: dict[tuple[str, str], int] = {}
    for step in range(300):
        account = rng.choice(["pre", "post"])
        sid = f"s{rng.randrange(12)}"
        op = rng.random()
        try:
            if op < 0.35:
                await ledger.reserve(account, sid, rng.randrange(1, 2_000), lease_ms=2_000)
            elif op < 0.65:
                cum = debited.get((account, sid), 0) + rng.randrange(0, 400)
                res = await ledger.commit(account, sid, cum)
                debited[(account, sid)] = res.total_debited_micros
            elif op < 0.8:
                final = debited.get((account, sid), 0) + rng.randrange(-50, 300)
                await ledger.release(account, sid, max(final, 0))
            elif op < 0.9:
                await ledger.adjust(
                    account, rng.randrange(-800, 800) or 1, txn_id=f"t{step}", who="o", why="r"
                )
            else:
                clock.now_ms += rng.randrange(0, 3_000)
                await ledger.sweep_expired()
        except (SessionClosed, InsufficientCredit):
            pass
        await check_books(ledger, account)


async def test_concurrent_reserves_reclaim_every_expired_lease_at_once(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Leases of mixed lengths, renewed, released and left to expire, with reserves,
    commits and releases sent concurrently: after each round that ran a reserve at the
    round's time, no lease that is over is left (reserves look for them only once the
    account's lease_due says one may be: it must never say so late), and the books hold."""
    rng = random.Random(20261205)
    # Enough reclaims per reserve for every lease over (test_reserve_sweep.py checks
    # the bound: the rest stay due for the next reserves).
    ledger = Ledger(redis, clock_ms=clock, audit_max_entries=0, reclaim_per_reserve=1_000)
    await ledger.load_scripts()
    await _prepaid(ledger, "pre", 50_000)

    async def op(sid: str) -> None:
        pick = rng.random()
        try:
            if pick < 0.6:
                lease = rng.choice([1, 300, 1_000, 2_500, 10_000])
                await ledger.reserve("pre", sid, rng.randrange(1, 900), lease_ms=lease)
            elif pick < 0.8:
                await ledger.commit("pre", sid, rng.randrange(0, 50))
            else:
                await ledger.release("pre", sid, rng.randrange(0, 50))
        except SessionClosed:
            pass

    for round_ in range(120):
        clock.now_ms += rng.choice([0, 1, 299, 700, 1_500, 4_000])
        sids = [f"r{round_}-{i}" if rng.random() < 0.3 else f"s{i}" for i in range(4)]
        await asyncio.gather(
            *(op(sid) for sid in sids),
            ledger.reserve("pre", f"n{round_}", 1, lease_ms=rng.choice([1, 5_000])),
        )
        over = await ledger.redis.zcount(K.leases_key("pre"), "-inf", clock())
        assert over == 0, round_
        await check_books(ledger, "pre")


# -- (2) Lua numbers are doubles ------------------------------------------------------


async def test_amounts_near_the_limit_stay_exact(ledger: Ledger) -> None:
    big = K.MAX_AMOUNT_MICROS - 1  # odd, 15 digits: tostring() would say 9.9999999999999e+14
    await _prepaid(ledger, balance=big)
    grant = await ledger.reserve("pre", "c1", big, lease_ms=60_000)
    assert grant.granted_micros == big
    assert (await ledger.commit("pre", "c1", big - 2)).balance_micros == 2
    res = await ledger.release("pre", "c1", big)
    assert (res.debited_micros, res.balance_micros) == (2, 0)
    acc = await ledger.topup("pre", big, txn_id="t1", who="shop")
    assert (acc.balance_micros, acc.topups_micros, acc.debits_micros) == (big, big, big)
    entry = (await ledger.audit("pre", count=1))[0]
    assert entry.after["balance"] == str(big)
    await check_books(ledger, "pre")


async def test_topups_past_the_exact_range_are_refused(ledger: Ledger) -> None:
    """Each top-up is <= 1e15 but their sum must not leave the exact range of a double."""
    odd = K.MAX_AMOUNT_MICROS - 1
    await _prepaid(ledger, balance=1)
    applied = 0
    for n in range(10):
        try:
            await ledger.topup("pre", odd, txn_id=f"t{n}", who="shop")
            applied += 1
        except InvalidRequest:
            break
    acc = await ledger.get_account("pre")
    assert applied < 10
    assert acc.balance_micros == 1 + applied * odd
    await check_books(ledger, "pre")


# -- (3) cluster safety: every command a script runs stays in the account's slot ---------


async def test_scripts_touch_only_keys_of_the_account_slot(
    ledger: Ledger, redis: aioredis.Redis, redis_server: EmbeddedRedis, clock: Clock
) -> None:
    monitor_client = aioredis.Redis.from_url(redis_server.url)
    seen: list[str] = []
    async with monitor_client.monitor() as monitor:
        await _prepaid(ledger, "acc", 1_000)
        await ledger.topup("acc", 10, txn_id="t", who="s")
        await ledger.reserve("acc", "c1", 100, lease_ms=1_000)
        await ledger.reserve("acc", "c2", 100, lease_ms=5_000)
        await ledger.commit("acc", "c2", 50)
        clock.now_ms += 2_000
        await ledger.reserve("acc", "c3", 100, lease_ms=1_000)  # reclaims c1
        await ledger.release("acc", "c2", 60)
        clock.now_ms += 60_000
        await ledger.sweep_expired()
        await ledger.set_status("acc", "suspended", who="o")  # type: ignore[arg-type]
        await ledger.update_account("acc", who="o", tariff="x")
        await redis.set("review:done", "1")
        async for event in monitor.listen():
            if event["command"].startswith("SET review:done"):
                break
            if event.get("client_type") == "lua":
                seen.append(event["command"])
    await monitor_client.aclose()
    assert len(seen) > 20
    globals_ok = {K.IDENTITIES_KEY, K.HOLD_INDEX_KEY, K.ACCOUNTS_KEY}
    for command in seen:
        key = command.split(" ")[1]
        # ledger:txn:TXN (a payment reference's owner) is touched by its own one-key
        # scripts (txn_claim, txn_unclaim), before and apart from the account's script.
        assert key.startswith(("{a:acc}:", "ledger:txn:")) or key in globals_ok, command


# -- (5) amounts at the admin edge --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1000", 1_000_000_000),
        ("5", 5_000_000),
        ("-0", 0),
        ("1.0000000", 1_000_000),  # 7 decimals but exact
        ("0.5", 500_000),
        ("-12.50", -12_500_000),
        ("999999999.999999", 999_999_999_999_999),  # the largest amount (MAX_AMOUNT_MICROS - 1)
        ("1000000000", 10**15),  # MAX_AMOUNT_MICROS itself
    ],
)
def test_amounts_accepted(text: str, micros: int) -> None:
    assert parse_amount(text) == micros


@pytest.mark.parametrize(
    "text",
    [
        "0x10",
        "NaN",
        "sNaN",
        "Infinity",
        "1.0000001",
        "1_000",  # Decimal takes "_" and non-ASCII digits; money must not
        "\u0661\u0662",
        "9e999999",  # Decimal Overflow, not an AmountError, before the fix
        "1e15",
        "1000000000.000001",  # one micro past MAX_AMOUNT_MICROS: the ledger would refuse it
        "999999999999999.999999",
        "12345678901234567890123456789.0000000",  # InvalidOperation in quantize
        "1234567890123456789012345.123456",  # silently rounded to 28 digits
        "",
        "5 0",
        # Not plain decimals (issue 9 finding 6): one way to write an amount.
        "1e3",
        "1E3",
        " 1.00",
        "1.00 ",
        "\t1.00",
        "1.00\n",
        "+1.00",
        ".5",
        "5.",
        "--1",
        "1,00",
    ],
)
def test_amounts_refused_with_a_typed_error(text: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(text)


def test_decimal_inputs_are_bounded_too() -> None:
    with pytest.raises(AmountError):
        parse_amount(Decimal("1e40"))
    assert parse_amount(Decimal("-2.5")) == -2_500_000


async def test_admin_socket_amount_edges_and_debt(redis: aioredis.Redis, tmp_path: Path) -> None:
    """Through the real admin socket: odd amounts get INVALID_PARAMS (no internal error,
    nothing changes); a prepaid debt needs "allow_debt": true (-32004 otherwise)."""
    async with running_admin(redis, tmp_path) as harness, AsyncAdminClient(harness.path) as c:
        base = {"id": "al", "mode": "prepaid", "currency": "EUR", "balance": "1.00"}
        await c.call("account.create", base)
        before = await c.call("account.history", {"id": "al", "count": 100})
        for amount in ("9e999999", "1_000", "0x10", "NaN", "0", "-0", "1e40"):
            with pytest.raises(RpcError) as err:
                await c.call("account.topup", {"id": "al", "amount": amount, "txn_id": "t"})
            assert err.value.code == -32602, amount
        adjust = {"id": "al", "amount": "-1.50", "txn_id": "a1", "reason": "late CDR"}
        with pytest.raises(RpcError) as err:
            await c.call("account.adjust", adjust)
        assert err.value.code == -32004
        # Meant for the operator: amounts as amounts, never micro-units.
        assert "adjust of -1.50 EUR exceeds what 'al' has available (1.00 EUR)" in str(err.value)
        # in the account's currency's minor unit, the currency named or not (it said
        # "adjust of -150.00 exceeds what 'yen' has available (100.00)")
        await c.call("account.create", {**base, "id": "yen", "currency": "JPY", "balance": "100"})
        for given in ({}, {"currency": "JPY"}):
            with pytest.raises(RpcError) as err:
                await c.call(
                    "account.adjust",
                    {**adjust, "id": "yen", "amount": "-150", "txn_id": "y1", **given},
                )
            assert "adjust of -150 JPY exceeds what 'yen' has available (100 JPY)" in str(err.value)
        with pytest.raises(RpcError) as err:
            await c.call("account.adjust", {**adjust, "allow_debt": "yes"})
        assert err.value.code == -32602
        assert await c.call("account.history", {"id": "al", "count": 100}) == before
        acc = await c.call("account.adjust", {**adjust, "allow_debt": True})
        assert acc["balance"] == "-0.50"
        acc = await c.call("account.topup", {"id": "al", "amount": "1000", "txn_id": "t2"})
        assert acc["balance"] == "999.50"


def test_ctl_adjust_passes_allow_debt() -> None:
    parser = argparse.ArgumentParser()
    ctl.configure_parser("ctl", parser)
    base = ["account", "adjust", "al", "-1.50", "--reason", "late", "--txn-id", "a1"]
    args = parser.parse_args(base)
    assert "allow_debt" not in args.build(args)[1]
    args = parser.parse_args([*base, "--allow-debt"])
    assert args.build(args)[1]["allow_debt"] is True


# -- (6) one largest amount ----------------------------------------------------------------


async def test_one_largest_amount_for_the_edge_the_ledger_and_lua(redis: aioredis.Redis) -> None:
    """money.py, the ledger's checks and the Lua scripts share one value (they disagreed)."""
    from chargingd.core import money
    from chargingd.ledger import codec

    assert K.MAX_AMOUNT_MICROS == money.MAX_AMOUNT_MICROS
    assert parse_amount(money.format_amount(money.MAX_AMOUNT_MICROS)) == money.MAX_AMOUNT_MICROS
    with pytest.raises(AmountError):
        parse_amount(money.format_amount(money.MAX_AMOUNT_MICROS + 1))
    lua_total = await redis.eval(codec.prelude() + "\nreturn s(MAX_TOTAL_MICROS)", 0)
    assert int(lua_total) == money.MAX_TOTAL_MICROS < 2**53
    common = (Path(codec.__file__).parent / "lua" / "common.lua").read_text()
    assert str(money.MAX_TOTAL_MICROS) not in common  # given to Lua, not written twice
