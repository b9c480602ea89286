"""Shared pieces of the fraud tests: a Fraud on a real Redis with a real Ledger and
real Alerts, rules given as config tables, calls as CallFacts."""

from __future__ import annotations

import asyncio
import itertools
import weakref
from typing import Any

import phonenumbers
import redis.asyncio as aioredis
from fakes import Clock
from phonenumbers import PhoneNumberType

from chargingd.alerts import Alerts
from chargingd.alerts.store import AlertStore
from chargingd.billing.cdr import CDR
from chargingd.core.config import config_from_dict
from chargingd.fraud import CallFacts, Fraud
from chargingd.fraud.engine import unpack_value
from chargingd.ledger import Ledger, Mode

_ids = itertools.count(1)


def example(region: str, kind: int) -> str:
    """phonenumbers' own example number of that type in that region (E.164)."""
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None, (region, kind)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


BERLIN = "+4930123456"
LIBERIA_PREMIUM = example("LR", PhoneNumberType.PREMIUM_RATE)  # high-risk country, premium
UK_PREMIUM = example("GB", PhoneNumberType.PREMIUM_RATE)
DE_SHARED = example("DE", PhoneNumberType.SHARED_COST)


# One rule of every authorize kind, each acting differently (refuse, alert, block,
# learn, shadow): the fused path's comparisons of Lua's paths and the daemon's
EVERY_KIND = [
    {"name": "fast", "kind": "velocity", "max_calls": 6, "window_s": 60, "action": "refuse"},
    {"name": "per-user", "kind": "velocity", "scope": "identity", "max_calls": 3,
     "window_s": 30},
    {"name": "per-ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 8, "window_s": 60},
    {"name": "live", "kind": "concurrent", "max_calls": 4, "action": "refuse"},
    {"name": "premium", "kind": "destination", "max_calls": 2, "window_s": 600, "action": "block"},
    {"name": "country", "kind": "new_country"},
    {"name": "range", "kind": "same_destination", "range_digits": 2, "max_calls": 2,
     "window_s": 600, "shadow": True},
    {"name": "spread", "kind": "distinct_destinations", "max_destinations": 3, "window_s": 120},
]  # fmt: skip


def fraud_config(rules: list[dict[str, Any]] | None, **fraud: Any) -> Any:
    """[fraud] on, with ``rules`` (None: the default rule set)."""
    given = {} if rules is None else {"rules": rules}
    return config_from_dict({"fraud": {"enabled": True, **given, **fraud}}).fraud


# Every Alerts made here: the redis fixtures (conftest.py) settle their background
# raises before closing the client, so none is left for the event loop's close to
# cancel (a raise cancelled there took ~5 s to end: the client already closed).
MADE_ALERTS: weakref.WeakSet[Alerts] = weakref.WeakSet()


async def settle_alerts() -> None:
    """Settle the raises of this event loop's Alerts (a test's), then forget them all."""
    loop = asyncio.get_running_loop()
    for alerts in list(MADE_ALERTS):
        if all(task.get_loop() is loop for task in alerts._pending):
            await alerts.settle()
    MADE_ALERTS.clear()


def make_alerts(redis: aioredis.Redis, clock: Clock) -> Alerts:
    store = AlertStore(
        redis,
        clock_ms=clock,
        dedup_window_s=3600,
        retention_s=7200,
        calls_kept=20,
        stream_maxlen=10_000,
    )
    alerts = Alerts(store)
    MADE_ALERTS.add(alerts)
    return alerts


async def make_fraud(
    redis: aioredis.Redis,
    clock: Clock,
    rules: list[dict[str, Any]] | None,
    *,
    ledger: Ledger | None = None,
    single_redis: bool = True,
    **fraud: Any,
) -> Fraud:
    if ledger is None:
        ledger = Ledger(redis, clock_ms=clock)
        await ledger.load_scripts()
    engine = Fraud(
        fraud_config(rules, **fraud),
        redis=redis,
        ledger=ledger,
        alerts=make_alerts(redis, clock),
        clock_ms=clock,
        live_ttl_s=3600,
        single_redis=single_redis,
    )
    await engine.load_scripts()
    return engine


async def add_account(ledger: Ledger, account_id: str = "acc1", tariff: str = "") -> None:
    await ledger.create_account(
        account_id, mode=Mode.PREPAID, currency="EUR", balance_micros=100_000_000,
        tariff=tariff, who="test",
    )  # fmt: skip


def call(
    callee: str = BERLIN,
    account_id: str = "acc1",
    *,
    sid: str | None = None,
    identity: str = "user:alice",
    caller_ip: str = "",
    tariff: str = "",
) -> CallFacts:
    return CallFacts(
        account_id=account_id,
        session_id=sid or f"sid-{next(_ids)}",
        callee=callee,
        identity=identity,
        caller_ip=caller_ip,
        tariff=tariff,
    )


def cdr(
    account_id: str = "acc1",
    *,
    duration_s: int = 60,
    answered: bool = True,
    charged_micros: int = 0,
    call_id: str | None = None,
    start_ms: int = 0,
) -> CDR:
    answer_ms = start_ms + 1000 if answered else 0
    return CDR(
        source="radius",
        call_id=call_id or f"call-{next(_ids)}",
        account_id=account_id,
        caller="+4930999",
        callee=BERLIN,
        destination="DE",
        start_ms=start_ms,
        answer_ms=answer_ms,
        end_ms=start_ms + 1000 + duration_s * 1000,
        duration_s=duration_s if answered else 0,
        billed_s=duration_s if answered else 0,
        cost_micros=charged_micros,
        currency="EUR",
        tariff="",
        gateway="10.0.0.1",
        disconnect_cause=16,
        status="normal" if answered else "unanswered",
        charged_micros=charged_micros,
        charge="live",
    )


async def fraud_value(redis: aioredis.Redis, account_id: str = "acc1") -> dict[str, Any]:
    """The account's fraud state as fraud.lua keeps it ({a:ID}:fr:v)."""
    return unpack_value(await redis.get(f"{{a:{account_id}}}:fr:v"))


def counted(value: dict[str, Any]) -> int:
    """The calls the authorize counters of a value hold (every counter, every bucket)."""
    # one call: a number; more: buckets (w: per slot and identity, g: per range)
    counters = [*value.get("w", {}).values(), *(value.get("g") or {}).values()]
    return sum(1 if isinstance(c, int) else sum(c[2::3]) for c in counters)


def live_calls(value: dict[str, Any]) -> list[str]:
    """The live calls of a value: their session ids, sorted."""
    return sorted(value.get("l") or {})
