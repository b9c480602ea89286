"""Amounts are plain decimal strings everywhere they enter, and a transaction id (a
payment reference) applied to one account is refused on any other (issue 9 finding 6).
Through the real admin socket, the real `chargingd ctl` and the ledger on a real Redis."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import Harness, running_admin

from chargingd.admin.params import RpcError
from chargingd.admin.server import AsyncAdminClient
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import DuplicateTransaction, Ledger, Mode, UnknownAccount
from chargingd.rating.loaders import TariffLoadError, load_plan

BIN = Path(sys.executable).parent / "chargingd"
NOT_PLAIN = ("1e3", " 1.00", "+1.00", "1.00 ", "1E2", ".5", "\t2")


@pytest.fixture
async def admin(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_admin(redis, tmp_path) as harness:
        yield harness


async def _create(client: AsyncAdminClient, account_id: str, balance: str = "1.00") -> None:
    params = {"id": account_id, "mode": "prepaid", "currency": "EUR", "balance": balance}
    await client.call("account.create", params)


async def _state(client: AsyncAdminClient, account_id: str) -> tuple[Any, Any]:
    acc = await client.call("account.get", {"id": account_id})
    hist = await client.call("account.history", {"id": account_id, "count": 1000})
    return acc, hist


@pytest.mark.parametrize("amount", NOT_PLAIN)
async def test_admin_socket_refuses_amounts_that_are_not_plain(admin: Harness, amount: str) -> None:
    async with AsyncAdminClient(admin.path) as client:
        await _create(client, "al")
        before = await _state(client, "al")
        calls: list[tuple[str, dict[str, Any]]] = [
            ("account.topup", {"id": "al", "amount": amount, "txn_id": "t1"}),
            ("account.adjust", {"id": "al", "amount": amount, "txn_id": "t2", "reason": "r"}),
            ("account.update", {"id": "al", "credit_limit": amount}),
            (
                "account.create",
                {"id": "bo", "mode": "prepaid", "currency": "EUR", "balance": amount},
            ),
        ]
        for method, params in calls:
            with pytest.raises(RpcError) as err:
                await client.call(method, params)
            assert err.value.code == -32602, (method, amount)
            assert "not a plain decimal amount" in err.value.message
            assert repr(amount) in err.value.message
        assert await _state(client, "al") == before
        with pytest.raises(RpcError):
            await client.call("account.get", {"id": "bo"})


async def _ctl(socket: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), "ctl", "--socket", str(socket), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_ctl_refuses_amounts_that_are_not_plain(admin: Harness) -> None:
    async with AsyncAdminClient(admin.path) as client:
        await _create(client, "al")
        before = await _state(client, "al")
    for args in (
        ("account", "topup", "al", "1e3", "--txn-id", "c1"),
        ("account", "topup", "al", "+1.00", "--txn-id", "c2"),
        ("account", "adjust", "al", " 1.00", "--reason", "r", "--txn-id", "c3"),
        ("account", "create", "bo", "--mode", "prepaid", "--currency", "EUR", "--balance", "1e3"),
    ):
        code, out, err = await _ctl(admin.path, *args)
        assert code == 2, (args, err)
        assert "not a plain decimal amount" in err and out == ""
    async with AsyncAdminClient(admin.path) as client:
        assert await _state(client, "al") == before


def test_tariff_files_refuse_amounts_that_are_not_plain(tmp_path: Path) -> None:
    plan = """
[tariff]
id = "t"
currency = "EUR"
timezone = "UTC"
[destinations]
DE = ["49"]
[rates.R]
rate = "{rate}"
unit = "60s"
increment = "1s"
[plans.P]
[[plans.P.rates]]
destinations = ["DE"]
rate = "R"
[[profiles]]
subject = "*any"
plan = "P"
from = 2026-01-01T00:00:00Z
"""
    path = tmp_path / "t.toml"
    path.write_text(plan.format(rate="0.60"))
    assert load_plan(str(path)).currency == "EUR"
    for rate in ("6e-1", " 0.60", "+0.60"):
        path.write_text(plan.format(rate=rate))
        with pytest.raises(TariffLoadError, match="plain decimal"):
            load_plan(str(path))
    for number in ("6e-1", "+0.60", "0.6E0"):  # a TOML number, not a string
        path.write_text(plan.format(rate="0.60").replace('rate = "0.60"', f"rate = {number}"))
        with pytest.raises(TariffLoadError, match="plain decimal"):
            load_plan(str(path))
    path.write_text(plan.format(rate="0.60").replace('rate = "0.60"', "rate = 0.60"))
    assert load_plan(str(path)).currency == "EUR"


async def test_a_payment_reference_belongs_to_the_first_account(admin: Harness) -> None:
    async with AsyncAdminClient(admin.path) as client:
        for account_id in ("al", "bo"):
            await _create(client, account_id)
        await client.call("account.topup", {"id": "al", "amount": "5.00", "txn_id": "pay-77"})
        bob = await _state(client, "bo")
        for method, extra in (
            ("account.topup", {}),
            ("account.adjust", {"reason": "same bank transfer"}),
        ):
            with pytest.raises(RpcError) as err:
                await client.call(
                    method, {"id": "bo", "amount": "5.00", "txn_id": "pay-77", **extra}
                )
            assert err.value.code == -32008
            assert err.value.data == {"code": "duplicate_transaction"}
            assert "'pay-77' was applied to account 'al'" in err.value.message
            assert "cannot be used for 'bo'" in err.value.message
        assert await _state(client, "bo") == bob
        # The owner may retry it (applied once) ...
        again = await client.call(
            "account.topup", {"id": "al", "amount": "5.00", "txn_id": "pay-77"}
        )
        assert again["balance"] == "6.00"
        # ... and a typo in the account id does not burn the reference.
        with pytest.raises(RpcError) as err:
            await client.call("account.topup", {"id": "nobody", "amount": "1", "txn_id": "pay-78"})
        assert err.value.code == -32001
        done = await client.call("account.topup", {"id": "bo", "amount": "1", "txn_id": "pay-78"})
        assert done["balance"] == "2.00"


async def test_concurrent_uses_of_one_reference_on_many_accounts_apply_once(
    redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Ten daemons' worth of clients race one reference over ten accounts, many times."""
    ledger = Ledger(redis)
    await ledger.load_scripts()
    accounts = [f"acct-{i}" for i in range(10)]
    for account_id in accounts:
        await ledger.create_account(account_id, mode=Mode.PREPAID, currency="EUR", who="t")
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in accounts]
    ledgers = [Ledger(c, batch_commands=False) for c in clients]
    try:
        for round_no in range(20):
            txn_id = f"bank-{round_no}"
            results = await asyncio.gather(
                *(
                    led.topup(account_id, 1_000_000, txn_id=txn_id, who="t")
                    for led, account_id in zip(ledgers, accounts, strict=True)
                ),
                *(  # and a second wave retrying on the same accounts
                    led.topup(account_id, 1_000_000, txn_id=txn_id, who="t")
                    for led, account_id in zip(ledgers, accounts, strict=True)
                ),
                return_exceptions=True,
            )
            winners = {r.id for r in results if not isinstance(r, BaseException)}
            assert len(winners) == 1, results
            refused = [r for r in results if isinstance(r, BaseException)]
            assert all(isinstance(r, DuplicateTransaction) for r in refused), refused
            assert len(refused) == 18
        balances = [(await ledger.get_account(a)).balance_micros for a in accounts]
        assert sum(balances) == 20 * 1_000_000  # each reference applied exactly once
        with pytest.raises(UnknownAccount):
            await ledger.topup("ghost", 1, txn_id="bank-x", who="t")
        await ledger.topup("acct-0", 1, txn_id="bank-x", who="t")  # not burnt by the typo
    finally:
        for c in clients:
            await c.aclose()
