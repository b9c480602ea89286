"""The admin socket's invoicing methods (billing profiles, subscriptions, charges and
credits, payments) on a real ledger and the session's PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from invoicing_harness import invoicing_config

from chargingd.admin.methods import AdminMethods
from chargingd.admin.params import Peer
from chargingd.billing.db import BillingDB
from chargingd.invoicing import Books
from chargingd.ledger import Ledger, Mode

PEER = Peer(pid=1, uid=0, gid=0)


@pytest.fixture
async def methods(redis: aioredis.Redis, pg_url: str) -> AsyncIterator[AdminMethods]:
    ledger = Ledger(redis)
    await ledger.load_scripts()
    opened: list[Books] = []

    async def open_books() -> Books:
        books = Books(invoicing_config(), await BillingDB.open(pg_url), ledger, who="admin")
        opened.append(books)
        return books

    async def status() -> dict[str, Any]:
        return {}

    await ledger.create_account("post", mode=Mode.POSTPAID, currency="EUR", who="t")
    await ledger.create_account("pre", mode=Mode.PREPAID, currency="EUR", who="t")
    yield AdminMethods(ledger, status, open_books=open_books)
    for books in opened:
        await books.db.close()


async def call(m: AdminMethods, method: str, params: dict[str, Any]) -> dict[str, Any]:
    response = await m.dispatch(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, PEER
    )
    assert response is not None
    return response


async def ok(m: AdminMethods, method: str, params: dict[str, Any]) -> Any:
    response = await call(m, method, params)
    assert "result" in response, response
    return response["result"]


async def error(m: AdminMethods, method: str, params: dict[str, Any]) -> tuple[int, str]:
    response = await call(m, method, params)
    assert "error" in response, response
    return response["error"]["code"], response["error"]["message"]


async def test_billing_profile(methods: AdminMethods) -> None:
    shown = await ok(methods, "billing.get", {"id": "post"})
    assert (shown["billing_day"], shown["tax_mode"], shown["vat_rate"]) == (1, "standard", None)
    changed = await ok(
        methods,
        "billing.set",
        {"id": "post", "billing_day": 15, "customer_name": "ACME", "country": "DE",
         "vat_rate": "19", "customer_address": ["Hauptstr. 1", "Berlin"], "operator": "ops"},
    )  # fmt: skip
    assert (changed["billing_day"], changed["vat_rate"], changed["customer_address"]) == (
        15,
        "19",
        ["Hauptstr. 1", "Berlin"],
    )
    # A fraction typed for a percentage would tax a hundredfold too little: refused.
    assert await error(methods, "billing.set", {"id": "post", "vat_rate": "0.19"}) == (
        -32020,
        "vat_rate: '0.19' would be 0.19 %: rates are in percent (\"19\" for 19 %)",
    )
    assert await error(methods, "billing.set", {"id": "post", "billing_day": 31}) == (
        -32020,
        "billing_day must be an integer 1..28",
    )
    code, message = await error(
        methods, "billing.set", {"id": "post", "tax_mode": "reverse_charge"}
    )
    assert (code, message) == (-32020, "reverse charge needs the customer's VAT id (vat_id)")
    # Two capitals that are no region: the VAT rate of GB (or of vat_rates.UK, which the
    # config refuses) never applies to such a customer.
    for country, hint in (("UK", " (the United Kingdom is GB)"), ("XX", "")):
        assert await error(methods, "billing.set", {"id": "post", "country": country}) == (
            -32020,
            f"country {country!r} is not an ISO 3166 code{hint}",
        )
    assert (await ok(methods, "billing.get", {"id": "post"}))["country"] == "DE"
    assert (await ok(methods, "billing.set", {"id": "post", "country": "GB"}))["country"] == "GB"
    # An ISO country without a telephone numbering plan is still a customer's country.
    assert (await ok(methods, "billing.set", {"id": "post", "country": "AQ"}))["country"] == "AQ"
    assert (await ok(methods, "billing.set", {"id": "post", "country": ""}))["country"] == ""
    code, _ = await error(methods, "billing.set", {"id": "post", "colour": "red"})
    assert code == -32602
    code, message = await error(methods, "billing.get", {"id": "nobody"})
    assert code == -32001 and "nobody" in message


async def test_subscriptions_and_charges(methods: AdminMethods) -> None:
    sub = await ok(
        methods,
        "subscription.add",
        {"id": "post", "description": "DID rental", "amount": "9.90", "starts_on": "2026-11-16"},
    )
    assert (sub["amount"], sub["ends_on"]) == ("9.90", None)
    ended = await ok(
        methods, "subscription.end", {"subscription": sub["subscription"], "ends_on": "2027-01-31"}
    )
    assert ended["ends_on"] == "2027-01-31"
    code, message = await error(
        methods, "subscription.end", {"subscription": sub["subscription"], "ends_on": "2026-01-01"}
    )
    assert code == -32020 and "cannot end before" in message
    listed = await ok(methods, "subscription.list", {"id": "post"})
    assert [s["ends_on"] for s in listed["subscriptions"]] == ["2027-01-31"]
    code, message = await error(
        methods,
        "subscription.add",
        {"id": "pre", "description": "x", "amount": "1.00", "starts_on": "2026-11-01"},
    )
    assert code == -32020 and "prepaid" in message
    code, message = await error(
        methods, "subscription.add", {"id": "post", "description": "x", "amount": "1.00",
                                      "starts_on": "16/11/2026"},
    )  # fmt: skip
    assert (code, message) == (-32602, "starts_on must be a date YYYY-MM-DD")
    charge = {"id": "post", "kind": "credit", "description": "Goodwill", "amount": "5.00",
              "date": "2026-11-20", "reference": "gw-1"}  # fmt: skip
    first = await ok(methods, "charge.add", charge)
    again = await ok(methods, "charge.add", charge)
    assert (first["created"], again["created"], again["charge"]) == (True, False, first["charge"])
    code, message = await error(methods, "charge.add", charge | {"amount": "6.00"})
    assert code == -32022 and "gw-1" in message
    listed = await ok(methods, "charge.list", {"id": "post"})
    assert [(c["kind"], c["amount"], c["invoice"]) for c in listed["charges"]] == [
        ("credit", "5.00", None)
    ]


async def test_payment_errors_are_clear(methods: AdminMethods) -> None:
    params = {"id": "post", "amount": "10.00", "invoice": "INV-2026-000001", "reference": "B-1"}
    assert await error(methods, "payment.add", params) == (-32021, "no invoice 'INV-2026-000001'")
    code, _ = await error(methods, "payment.add", params | {"amount": 10.0})
    assert code == -32602  # a float is never money
    assert (await ok(methods, "payment.list", {"id": "post"})) == {"payments": []}


async def test_without_a_billing_database(redis: aioredis.Redis) -> None:
    ledger = Ledger(redis)
    await ledger.load_scripts()

    async def status() -> dict[str, Any]:
        return {}

    m = AdminMethods(ledger, status)
    assert (await error(m, "billing.get", {"id": "x"}))[0] == -32001  # unknown account first
    await ledger.create_account("x", mode=Mode.POSTPAID, currency="EUR", who="t")
    assert await error(m, "billing.get", {"id": "x"}) == (
        -32024,
        "no billing here: this daemon has no billing database",
    )
