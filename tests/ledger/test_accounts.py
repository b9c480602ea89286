"""Ledger accounts on a real Redis: create.lua, update.lua, status.lua, get.lua, the
identity index scripts, list_accounts and the audit trail."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import (
    AccountExists,
    InvalidRequest,
    Ledger,
    Mode,
    Status,
    UnknownAccount,
)
from chargingd.ledger import keys as K
from chargingd.ledger.accounts import SAMPLE_CHUNK


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis, clock_ms=Clock(), audit_max_entries=50)
    await led.load_scripts()
    return led


async def test_create_and_get(ledger: Ledger) -> None:
    acc = await ledger.create_account(
        "acme-1",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=5_000_000,
        credit_limit_micros=20_000_000,
        tariff="std",
        max_calls=3,
        identities=("user:alice", "ani:+4930123456"),
        who="op",
        why="new customer",
    )
    assert acc == await ledger.get_account("acme-1")
    assert (acc.mode, acc.currency, acc.status, acc.status_reason) == (
        Mode.POSTPAID,
        "EUR",
        Status.ACTIVE,
        "",
    )
    assert acc.balance_micros == acc.initial_balance_micros == 5_000_000
    assert (acc.credit_limit_micros, acc.reserved_micros, acc.max_calls) == (20_000_000, 0, 3)
    assert acc.identities == ("user:alice", "ani:+4930123456")
    assert acc.available_micros == 25_000_000
    assert acc.created_ms == acc.updated_ms == ledger.clock_ms()
    assert await ledger.find_account("user:alice") == "acme-1"
    assert await ledger.find_account("ani:+4930123456") == "acme-1"
    assert await ledger.find_account("user:bob") is None
    [entry] = await ledger.audit("acme-1")
    assert (entry.what, entry.who, entry.why) == ("create", "op", "new customer")
    assert entry.after["balance"] == "5000000"
    assert entry.details["identities"] == "user:alice\nani:+4930123456"


async def test_create_existing_account_is_refused_and_keeps_identities(ledger: Ledger) -> None:
    await ledger.create_account(
        "a1", mode=Mode.PREPAID, currency="EUR", identities=("user:a",), who="op"
    )
    with pytest.raises(AccountExists):
        await ledger.create_account(
            "a1", mode=Mode.PREPAID, currency="USD", identities=("user:a", "user:b"), who="op"
        )
    assert (await ledger.get_account("a1")).currency == "EUR"
    assert await ledger.find_account("user:a") == "a1"
    assert await ledger.find_account("user:b") is None  # claimed then given back


async def test_create_with_taken_identity_changes_nothing(
    ledger: Ledger, redis: aioredis.Redis
) -> None:
    await ledger.create_account(
        "a1", mode=Mode.PREPAID, currency="EUR", identities=("user:a",), who="op"
    )
    with pytest.raises(InvalidRequest, match="belongs to account a1"):
        await ledger.create_account(
            "a2", mode=Mode.PREPAID, currency="EUR", identities=("user:z", "user:a"), who="op"
        )
    with pytest.raises(UnknownAccount):
        await ledger.get_account("a2")
    assert await ledger.find_account("user:z") is None
    assert await redis.exists(K.audit_key("a2")) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_id", "bad{id}"),
        ("account_id", ""),
        ("currency", "eur"),
        ("currency", "EURO"),
        ("mode", "credit"),
        ("credit_limit_micros", -1),
        ("balance_micros", 1.5),
        ("balance_micros", 10**16),
        ("max_calls", -1),
        ("identities", ("alice",)),
        ("identities", ("ani:4930123",)),
        ("identities", ("user:has space",)),
        ("identities", "user:alice"),
        ("who", ""),
    ],
)
async def test_create_validation(
    ledger: Ledger, redis: aioredis.Redis, field: str, value: object
) -> None:
    kwargs: dict[str, object] = {
        "account_id": "ok",
        "mode": Mode.PREPAID,
        "currency": "EUR",
        "who": "op",
    }
    kwargs[field] = value
    with pytest.raises(InvalidRequest):
        await ledger.create_account(**kwargs)  # type: ignore[arg-type]
    assert await redis.dbsize() == 0


async def test_postpaid_created_at_its_floor_is_suspended_for_credit(ledger: Ledger) -> None:
    acc = await ledger.create_account(
        "p",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=-10,
        credit_limit_micros=10,
        who="op",
    )
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "credit")


async def test_update_settings_and_audit(ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    acc = await ledger.update_account(
        "a1",
        who="op2",
        why="upgrade",
        credit_limit_micros=7,
        tariff="gold",
        max_calls=9,
        mode=Mode.POSTPAID,
    )
    assert (acc.mode, acc.credit_limit_micros, acc.tariff, acc.max_calls) == (
        Mode.POSTPAID,
        7,
        "gold",
        9,
    )
    entry = (await ledger.audit("a1", count=1))[0]
    assert (entry.what, entry.who, entry.why) == ("update", "op2", "upgrade")
    assert entry.details["tariff"] == "gold" and entry.details["old.tariff"] == ""
    assert entry.details["mode"] == "postpaid" and entry.details["old.mode"] == "prepaid"


async def test_update_moves_identities(ledger: Ledger) -> None:
    await ledger.create_account(
        "a1", mode=Mode.PREPAID, currency="EUR", identities=("user:a", "user:b"), who="op"
    )
    acc = await ledger.update_account("a1", who="op", identities=("user:b", "ani:+3312345"))
    assert acc.identities == ("user:b", "ani:+3312345")
    assert await ledger.find_account("user:a") is None
    assert await ledger.find_account("user:b") == "a1"
    assert await ledger.find_account("ani:+3312345") == "a1"


async def test_update_identity_conflict_changes_nothing(ledger: Ledger) -> None:
    await ledger.create_account(
        "a1", mode=Mode.PREPAID, currency="EUR", identities=("user:a",), who="op"
    )
    await ledger.create_account(
        "a2", mode=Mode.PREPAID, currency="EUR", identities=("user:b",), who="op"
    )
    with pytest.raises(InvalidRequest, match="belongs to account a2"):
        await ledger.update_account("a1", who="op", identities=("user:new", "user:b"), tariff="x")
    acc = await ledger.get_account("a1")
    assert (acc.identities, acc.tariff) == (("user:a",), "")
    assert await ledger.find_account("user:new") is None
    assert await ledger.find_account("user:a") == "a1"
    assert await ledger.find_account("user:b") == "a2"


async def test_update_currency_only_at_zero_balance(ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    assert (await ledger.update_account("a1", who="op", currency="USD")).currency == "USD"
    await ledger.topup("a1", 1, txn_id="t", who="op")
    with pytest.raises(InvalidRequest, match="zero balance"):
        await ledger.update_account("a1", who="op", currency="GBP")
    assert (await ledger.get_account("a1")).currency == "USD"


async def test_update_errors(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.update_account("nobody", who="op", tariff="x")
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    with pytest.raises(InvalidRequest, match="nothing"):
        await ledger.update_account("a1", who="op")
    with pytest.raises(InvalidRequest):
        await ledger.update_account("a1", who="op", credit_limit_micros=-5)


async def test_update_credit_limit_suspends_and_lifts(ledger: Ledger) -> None:
    await ledger.create_account(
        "p",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=-50,
        credit_limit_micros=100,
        who="o",
    )
    acc = await ledger.update_account("p", who="op", credit_limit_micros=50)
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "credit")
    acc = await ledger.update_account("p", who="op", credit_limit_micros=60)
    assert (acc.status, acc.status_reason) == (Status.ACTIVE, "")


async def test_prepaid_account_with_a_credit_limit_is_refused(ledger: Ledger) -> None:
    """A prepaid account spends its balance only (available = balance - holds): a
    credit limit on one was stored, shown by `ctl account show`, and ignored."""
    message = r"a prepaid account has no credit limit \(it spends its balance only\)"
    with pytest.raises(InvalidRequest, match=message + r": credit_limit 0\.00001 EUR needs mode"):
        await ledger.create_account(
            "pre", mode=Mode.PREPAID, currency="EUR", credit_limit_micros=10,
            identities=("user:pre",), who="op",
        )  # fmt: skip
    with pytest.raises(UnknownAccount):
        await ledger.get_account("pre")
    assert await ledger.find_account("user:pre") is None  # the identity was let go
    await ledger.create_account("pre", mode=Mode.PREPAID, currency="EUR", who="op")
    with pytest.raises(InvalidRequest, match=message):
        await ledger.update_account("pre", who="op", credit_limit_micros=5_000_000)
    assert (await ledger.get_account("pre")).credit_limit_micros == 0
    # in the account's currency: a yen account's limit in whole yen (it said 5000.00)
    await ledger.create_account("yen", mode=Mode.PREPAID, currency="JPY", who="op")
    with pytest.raises(InvalidRequest, match=message + r": credit_limit 5000 JPY needs mode"):
        await ledger.update_account("yen", who="op", credit_limit_micros=5_000_000_000)
    # Postpaid to prepaid: a limit named with it is refused; none named, it goes (audited).
    await ledger.create_account(
        "post", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=500_000_000, who="op"
    )
    with pytest.raises(InvalidRequest, match=message + r": credit_limit 0\.10 EUR needs mode"):
        await ledger.update_account(
            "post", who="op", mode=Mode.PREPAID, credit_limit_micros=100_000
        )
    assert (await ledger.get_account("post")).mode is Mode.POSTPAID
    acc = await ledger.update_account("post", who="op", mode=Mode.PREPAID)
    assert (acc.mode, acc.credit_limit_micros) == (Mode.PREPAID, 0)
    entry = (await ledger.audit("post", count=1))[0]
    assert (entry.details["credit_limit"], entry.details["old.credit_limit"]) == ("0", "500000000")
    # Back to postpaid with a limit, in one update or two.
    acc = await ledger.update_account("post", who="op", mode=Mode.POSTPAID, credit_limit_micros=100)
    assert (acc.mode, acc.credit_limit_micros, acc.available_micros) == (Mode.POSTPAID, 100, 100)


async def test_prepaid_account_stored_with_a_limit_still_takes_other_changes(
    ledger: Ledger, redis: aioredis.Redis
) -> None:
    """One written before the check (or by hand) still takes a tariff change; setting
    its limit to 0 clears it."""
    await ledger.create_account("old", mode=Mode.PREPAID, currency="EUR", who="op")
    await redis.hset(K.acct_key("old"), "credit_limit", "700")
    assert (await ledger.update_account("old", who="op", tariff="gold")).tariff == "gold"
    acc = await ledger.update_account("old", who="op", credit_limit_micros=0)
    assert acc.credit_limit_micros == 0


async def test_set_status_operator(ledger: Ledger) -> None:
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    acc = await ledger.set_status("a1", Status.SUSPENDED, who="op", why="fraud check")
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "operator")
    entry = (await ledger.audit("a1", count=1))[0]
    assert (entry.what, entry.why, entry.before["status"], entry.after["status"]) == (
        "status",
        "fraud check",
        "active",
        "suspended",
    )
    acc = await ledger.set_status("a1", Status.ACTIVE, who="op")
    assert (acc.status, acc.status_reason) == (Status.ACTIVE, "")
    with pytest.raises(UnknownAccount):
        await ledger.set_status("zz", Status.ACTIVE, who="op")
    with pytest.raises(InvalidRequest):
        await ledger.set_status("a1", "paused", who="op")  # type: ignore[arg-type]


async def test_resume_of_postpaid_at_floor_stays_suspended_for_credit(ledger: Ledger) -> None:
    await ledger.create_account(
        "p", mode=Mode.POSTPAID, currency="EUR", balance_micros=-10, credit_limit_micros=10, who="o"
    )
    acc = await ledger.set_status("p", Status.ACTIVE, who="op")
    assert (acc.status, acc.status_reason) == (Status.SUSPENDED, "credit")


async def test_get_unknown_and_bad_id(ledger: Ledger) -> None:
    with pytest.raises(UnknownAccount):
        await ledger.get_account("nobody")
    with pytest.raises(InvalidRequest):
        await ledger.get_account("{a:x}")


async def test_list_accounts_pages_sorted(ledger: Ledger, redis: aioredis.Redis) -> None:
    ids = [f"acc{i:03d}" for i in range(250)]
    for account_id in ids:
        await ledger.create_account(account_id, mode=Mode.PREPAID, currency="EUR", who="op")
    await redis.sadd(K.ACCOUNTS_KEY, "ghost")  # a create that never completed
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        cursor, page = await ledger.list_accounts(cursor=cursor, count=40)
        got = [a.id for a in page]
        assert got == sorted(got)
        seen += got
        pages += 1
        if cursor == 0:
            break
    assert pages > 1
    assert sorted(set(seen)) == ids


async def test_audit_newest_first_paging_and_trim(redis: aioredis.Redis) -> None:
    clock = Clock()
    ledger = Ledger(redis, clock_ms=clock, audit_max_entries=10)
    await ledger.create_account("a1", mode=Mode.PREPAID, currency="EUR", who="op")
    for i in range(1, 300):
        clock.now_ms += 1
        await ledger.topup("a1", i, txn_id=f"t{i}", who="op")
    length = await redis.xlen(K.audit_key("a1"))
    assert 10 <= length < 300  # MAXLEN ~ trims by whole macro nodes
    first = await ledger.audit("a1", count=3)
    assert [e.details["amount"] for e in first] == ["299", "298", "297"]
    assert first[0].ts_ms > first[1].ts_ms > first[2].ts_ms
    nxt = await ledger.audit("a1", count=2, before_id=first[-1].id)
    assert [e.details["amount"] for e in nxt] == ["296", "295"]
    assert await ledger.audit("nobody") == []
    with pytest.raises(InvalidRequest):
        await ledger.audit("a1", before_id="yesterday")


async def test_update_refuses_identities_changed_meanwhile(ledger: Ledger) -> None:
    """update.lua re-checks the identities the caller read (two admins moving them)."""
    await ledger.create_account(
        "a1", mode=Mode.PREPAID, currency="EUR", identities=("user:a",), who="op"
    )
    keys = [K.acct_key("a1"), K.audit_key("a1")]
    stale = ["1", "op", "", "50", "user:old", "identities", "user:x"]
    assert await ledger._run("update", keys, stale) == [b"identities_changed"]
    assert (await ledger.get_account("a1")).identities == ("user:a",)


async def test_mode_change_to_prepaid_lifts_a_credit_suspension(ledger: Ledger) -> None:
    await ledger.create_account(
        "p", mode=Mode.POSTPAID, currency="EUR", balance_micros=-10, credit_limit_micros=10, who="o"
    )
    acc = await ledger.update_account("p", who="op", mode=Mode.PREPAID, credit_limit_micros=0)
    assert (acc.mode, acc.status, acc.status_reason) == (Mode.PREPAID, Status.ACTIVE, "")
    assert acc.available_micros == 0  # a prepaid account below zero still grants nothing


async def test_hold_index_drop_only_when_unchanged(ledger: Ledger, redis: aioredis.Redis) -> None:
    await redis.zadd(K.HOLD_INDEX_KEY, {"a1": 500})
    assert await ledger._run("hold_index_drop", [K.HOLD_INDEX_KEY], ["a1", 400]) == 0
    assert await redis.zscore(K.HOLD_INDEX_KEY, "a1") == 500
    assert await ledger._run("hold_index_drop", [K.HOLD_INDEX_KEY], ["a1", 500]) == 1
    assert await redis.zscore(K.HOLD_INDEX_KEY, "a1") is None


async def test_reserved_by_currency_over_more_accounts_than_one_pipeline(ledger: Ledger) -> None:
    """More holding accounts than SAMPLE_CHUNK (read in several pipelines, so the sampler
    never holds the loop for thousands of replies): every hold counted once."""
    n = SAMPLE_CHUNK * 2 + 7
    expected = {"EUR": 0, "USD": 0}
    for i in range(n):
        currency = "EUR" if i % 3 else "USD"
        await ledger.create_account(
            f"r{i}", mode=Mode.PREPAID, currency=currency, balance_micros=10_000_000, who="t"
        )
        if i % 5:  # some accounts hold nothing
            await ledger.reserve(f"r{i}", f"s{i}", 1_000 + i, lease_ms=60_000)
            expected[currency] += 1_000 + i
    assert await ledger.reserved_by_currency() == expected
    assert await ledger.reserved_by_currency(limit=10) != expected  # the bound still holds


async def test_user_identities_are_stored_in_one_form(ledger: Ledger) -> None:
    """Two spellings of one SIP address are one identity (RFC 3261 §19.1.4): stored
    once, canonical, and taken for another account in either spelling."""
    await ledger.create_account(
        "sipper",
        mode=Mode.PREPAID,
        currency="EUR",
        identities=("user:sip:alice@EXAMPLE.COM", "user:alice@example.com", "ani:+4930111"),
        who="test",
    )
    account = await ledger.get_account("sipper")
    assert account.identities == ("user:alice@example.com", "ani:+4930111")
    assert await ledger.find_account("user:alice@example.com") == "sipper"
    with pytest.raises(InvalidRequest):
        await ledger.create_account(
            "other", mode=Mode.PREPAID, currency="EUR", identities=("user:SIP:alice@Example.COM",),
            who="test",
        )  # fmt: skip
    # The user part is case-sensitive: "Alice@..." is another address, and free.
    await ledger.create_account(
        "other", mode=Mode.PREPAID, currency="EUR", identities=("user:Alice@Example.COM",),
        who="test",
    )  # fmt: skip
    assert (await ledger.get_account("other")).identities == ("user:Alice@example.com",)
