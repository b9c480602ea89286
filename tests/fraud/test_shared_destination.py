"""shared_destination: many accounts calling one risky number (range), counted from the
CDRs across accounts. A Wangiri callback wave (customers calling back, once each, the
premium number that rang them) is one call per account: no per-account rule sees it
(through the real daemon, 25 accounts calling +231 premium once each raised no alert)."""

from __future__ import annotations

import dataclasses

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import LIBERIA_PREMIUM, UK_PREMIUM, cdr, fraud_config, make_fraud

WAVE = {"name": "wave", "kind": "shared_destination", "max_accounts": 3, "window_s": 3600}


def call_to(account: str, number: str):  # type: ignore[no-untyped-def]
    return dataclasses.replace(cdr(account), callee=number)


async def test_a_callback_wave_raises_one_alert_per_number(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [WAVE])
    for i in range(3):  # 3 accounts: the limit
        await fraud.cdr(call_to(f"acc{i}", LIBERIA_PREMIUM), f"e{i}")
    await fraud.cdr(call_to("acc0", LIBERIA_PREMIUM), "again")  # an account again: once
    await fraud.settle()
    assert fraud.alerts is not None
    assert await fraud.alerts.incidents() == []
    for i in range(3, 6):
        await fraud.cdr(call_to(f"acc{i}", LIBERIA_PREMIUM), f"e{i}")
    for i in range(6):  # an ordinary number: not risky, not counted
        await fraud.cdr(call_to(f"acc{i}", "+4930123456"), f"d{i}")
    await fraud.settle()
    (incident,) = await fraud.alerts.incidents()
    assert incident.key == f"fraud.wave:{LIBERIA_PREMIUM}"
    assert incident.count == 3  # accounts 4, 5 and 6
    assert incident.details["count"] == 4 and incident.details["risky"]
    assert incident.summary == "wave: 4 accounts called it in 3600 s (limit 3): alert"


async def test_a_range_counts_its_numbers_together_and_the_window_passes(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [{**WAVE, "range_digits": 2}])
    base = UK_PREMIUM[:-2]
    for i in range(3):
        await fraud.cdr(call_to(f"acc{i}", f"{base}{10 + i}"), f"e{i}")
    clock.advance(3601)
    await fraud.cdr(call_to("acc3", f"{base}20"), "late")  # the others left the window
    await fraud.settle()
    assert fraud.alerts is not None
    assert await fraud.alerts.incidents() == []
    for i in range(4, 7):
        await fraud.cdr(call_to(f"acc{i}", f"{base}{30 + i}"), f"e{i}")
    await fraud.settle()
    (incident,) = await fraud.alerts.incidents()
    assert incident.key == f"fraud.wave:{base}"


def test_it_only_alerts_and_ships_on() -> None:
    with pytest.raises(ValueError, match="action alert"):
        fraud_config([{**WAVE, "action": "refuse"}])
    (shipped,) = [r for r in fraud_config(None).rules if r.kind == "shared_destination"]
    assert (shipped.name, shipped.max_accounts, shipped.window_s) == ("callback-wave", 5, 3600)


def test_ctl_fraud_rules_shows_its_thresholds() -> None:
    """`ctl fraud rules`: its match and range, no cooldown (it refuses nothing)."""
    from chargingd.admin.fraud import thresholds
    from chargingd.fraud.rules import RuleBook

    (rule,) = [r for r in RuleBook(fraud_config([WAVE])).base]
    assert thresholds(rule) == {
        "window_s": 3600,
        "match": ["high_risk_country", "high_risk_prefix", "premium_rate", "shared_cost"],
        "range_digits": 0,
        "max_accounts": 3,
    }


def test_an_override_is_an_error() -> None:
    with pytest.raises(ValueError, match="change the rule itself"):
        fraud_config([WAVE], account_overrides={"acc1": {"wave": {"max_accounts": 9}}})
