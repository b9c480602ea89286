"""The daemon's glue around the authorize rules kept cheap per call (docs/fraud-cost.md
"Twenty-first round (daemon)"): what it keeps between calls (the value keys, the last
rule set's split, the kept values' order) stays bounded and right when it changes, and
fraud/_local.c reads its integer arguments exactly."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import BERLIN, call, make_fraud

from chargingd.fraud import keys as FK
from chargingd.fraud.engine import VALUE_KEYS
from chargingd.fraud.local import Values
from chargingd.fraud.plan import AuthPlan

RULE = {"name": "v", "kind": "velocity", "max_calls": 1, "window_s": 60, "action": "refuse"}


async def test_value_keys_kept_bounded_oldest_first(redis: aioredis.Redis, clock: Clock) -> None:
    """Each account's value key as FK builds it, at most VALUE_KEYS kept, the oldest
    dropped first (one at a time: the newest stay), asked again after its drop built
    again right."""
    fraud = await make_fraud(redis, clock, [RULE])
    names = [f"acc{n}" for n in range(VALUE_KEYS + 5)]
    for name in names:
        assert fraud._value_key(name) == FK.value_key(name)
    kept = fraud._value_keys
    assert len(kept) == VALUE_KEYS
    assert next(iter(kept)) == "acc5"  # acc0..acc4 dropped, the rest kept in order
    assert list(kept)[-3:] == names[-3:]
    assert fraud._value_key("acc0") == FK.value_key("acc0")
    assert len(kept) == VALUE_KEYS and "acc5" not in kept and list(kept)[-1] == "acc0"
    for n in range(50):
        prepared = fraud.prepare(call(BERLIN, f"x{n}"))
        assert prepared is not None and prepared.value == FK.value_key(f"x{n}")
    assert len(kept) == VALUE_KEYS


async def test_each_rule_set_has_its_own_split_when_accounts_alternate(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """The last rule set's split is kept for the next call; an account with a set of
    its own in between gets its own, and the next plain account the base set's."""
    fraud = await make_fraud(
        redis, clock, [RULE], account_overrides={"vip": {"v": {"max_calls": 7}}}
    )

    def limits(account: str) -> list[Any]:
        prepared = fraud.prepare(call(BERLIN, account))
        assert prepared is not None
        flat = msgpack.unpackb(prepared.plan.ops)
        return [flat[i + 4] for i in range(0, len(flat), 8) if flat[i] == "c"]

    for _ in range(3):
        assert limits("acc1") == [1]
        assert limits("vip") == [7]
        assert limits("acc2") == [1]
    assert fraud.book.rules_for("vip", "") is not fraud.book.base
    assert fraud.book.rules_for("acc9", "") is fraud.book.base


async def test_no_override_gives_every_account_the_base_set(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [RULE])
    assert fraud.book.rules_for("acc1", "") is fraud.book.base
    assert fraud.book.rules_for("acc2", "gold") is fraud.book.base
    with_tariff = await make_fraud(
        redis, clock, [RULE], tariff_overrides={"gold": {"v": {"max_calls": 4}}}
    )
    assert with_tariff.book.rules_for("acc1", "") is with_tariff.book.base
    (gold,) = with_tariff.book.rules_for("acc1", "gold")
    assert gold.limit == 4


def test_a_value_written_again_is_the_newest() -> None:
    """Values.put of a key already kept (its entry reused) moves it last: the one
    written longest ago is dropped first, and every entry says its last bytes."""
    values = Values(2)
    values.put("a", b"1")
    values.put("b", b"2")
    values.put("a", b"3")
    values.put("c", b"4")  # past the size: b goes, not a
    assert values.raw("b") is None
    assert values.raw("a") == b"3" and values.raw("c") == b"4"
    values.put("a", b"", {b"w": {b"x": 1}})
    assert values.get("a") == (b"", {b"w": {b"x": 1}})
    values.put("a", b"5")  # a decoded table of older bytes is not kept with new ones
    got = values.get("a")
    assert got is not None and got[0] == b"5"
    assert "a" in values.known and "b" not in values.known and len(values) == 2


def test_c_reads_times_past_int64_and_2_52_as_not_its_own() -> None:
    """fraud/_local.c's integer arguments (now, the number's hash, the ttls): past 2**52
    either way, and past 2**63 (PyLong_AsLongLongAndOverflow's overflow flag, no
    exception), it declines (-1), never evaluates a wrapped or clipped number."""
    c = pytest.importorskip("chargingd.fraud._local", reason="fraud/_local.c not built")
    flat = ["c", 1, "1/60", 60_000, 6, "a", 0, 0]
    plan = AuthPlan(
        now_ms=0, rules=(None,), ops=msgpack.packb(flat), may_block=False, learns=False,
        ttl_ms=120_000, ip_ttl_ms=60_000,
    )  # fmt: skip
    from chargingd.fraud.local import LocalRules

    local = LocalRules(4)
    ops = local._compiled(plan.ops, local.ops(plan.ops))
    assert ops is not None

    def said(now: int, number_hash: int = 7, ttl: int = 120_000) -> Any:
        return c.evaluate(ops, b"", None, now, "u", "s1", "+4420", "GB", number_hash, ttl, 1)

    got = said(1_796_000_000_000)
    assert type(got) is tuple and len(got) == 6
    worst_i, fired, value, px, ip_value, ip_px = got
    assert (worst_i, fired, px, ip_value, ip_px) == (0, (), 120_000, None, 0)
    assert msgpack.unpackb(value, raw=True)[b"w"][b"1/60"] == 1_796_000_060_000
    for big in (2**52 + 1, -(2**52) - 1, 2**63 - 1, 2**63, 2**64 + 5, 2**70, -(2**70)):
        assert said(big) == -1
        assert said(1_796_000_000_000, number_hash=big) == -1
        assert said(1_796_000_000_000, ttl=big) == -1
