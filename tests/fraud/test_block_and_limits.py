"""Blocking through the ledger (once, however many daemons see the attack), unblocking,
and limits that hold across two daemons under concurrent calls."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import LIBERIA_PREMIUM, add_account, call, make_fraud

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.fraud import Decision, Fraud
from chargingd.ledger import AccountNotActive, Ledger, Status

BLOCK = {"name": "premium", "kind": "destination", "max_calls": 3, "window_s": 600,
         "action": "block"}  # fmt: skip


async def two_daemons(
    redis: aioredis.Redis, server: EmbeddedRedis, clock: Clock, rules: list[dict[str, object]]
) -> tuple[Fraud, Fraud, aioredis.Redis]:
    other = aioredis.Redis.from_url(server.url)
    one = await make_fraud(redis, clock, rules)
    two = await make_fraud(other, clock, rules)
    return one, two, other


async def test_a_block_changes_the_status_once_and_cuts_once(
    redis: aioredis.Redis, redis_server: EmbeddedRedis, clock: Clock
) -> None:
    one, two, other = await two_daemons(redis, redis_server, clock, [BLOCK])
    await add_account(one.ledger)
    cuts: list[str] = []

    async def cut(account_id: str) -> int:
        cuts.append(account_id)
        return 0

    one.cut_account = two.cut_account = cut
    try:
        calls = [(one if i % 2 else two).check(call(LIBERIA_PREMIUM)) for i in range(20)]
        verdicts = await asyncio.gather(*calls)
        await one.settle()
        await two.settle()
    finally:
        await other.aclose()
    decisions = [v.decision for v in verdicts]
    assert decisions.count(Decision.ALLOW) == 3
    assert decisions.count(Decision.BLOCK) == 17
    assert sum(v.blocked_now for v in verdicts) == 1
    assert cuts == ["acc1"]
    acc = await one.ledger.get_account("acc1")
    assert (acc.status, acc.status_reason) == (Status.BLOCKED, "fraud")
    audit = [e for e in await one.ledger.audit("acc1") if e.what == "status"]
    assert len(audit) == 1
    assert audit[0].who == "fraud"
    assert audit[0].why == "fraud rule premium: 4 (limit 3, window 600 s)"
    state = await one.state("acc1")
    assert state["blocked_by"] == "premium"
    assert one.alerts is not None
    (incident,) = await one.alerts.incidents()
    assert incident.key == "fraud.premium:acc1"
    assert incident.count == 17 and incident.severity == "critical"
    assert incident.details["risky"] == ["high_risk_country", "premium_rate"]
    assert incident.details["country"] == "LR"


async def test_unblock_starts_the_counts_over_and_resolves_the_incident(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [BLOCK])
    await add_account(fraud.ledger)
    fraud.cut_account = None
    for _ in range(4):
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()
    clock.advance(1)
    acc = await fraud.unblock("acc1", who="admin:ops", why="customer confirmed")
    assert (acc.status, acc.status_reason) == (Status.ACTIVE, "")
    assert (await fraud.check(call(LIBERIA_PREMIUM))).allowed  # counted from now on
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.state == "resolved"
    assert incident.closed["by"] == "admin:ops"
    with pytest.raises(AccountNotActive, match="not blocked by a fraud rule"):
        await fraud.unblock("acc1", who="admin:ops", why="again")


async def test_unblock_resolves_the_incident_of_a_rule_an_override_enables(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A rule off in the base set and on for one account (or its tariff): unblocking that
    account resolves the rule's incident too (it used to resolve only the base set's, so
    the incident stayed open and the next block counted into it: no new alert)."""
    off = {**BLOCK, "enabled": False}
    overrides = {"acc1": {"premium": {"enabled": True}}}
    fraud = await make_fraud(redis, clock, [off], account_overrides=overrides)
    await add_account(fraud.ledger)
    fraud.cut_account = None
    for _ in range(4):
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()
    assert (await fraud.ledger.get_account("acc1")).status == Status.BLOCKED
    clock.advance(1)
    await fraud.unblock("acc1", who="admin:ops", why="customer confirmed")
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.key == "fraud.premium:acc1"
    assert (incident.state, incident.closed["by"]) == ("resolved", "admin:ops")
    # A second attack is a new incident (a new alert), not a count of the first one.
    clock.advance(1)
    for _ in range(4):
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()
    latest, first = await fraud.alerts.incidents()
    assert (latest.state, latest.count, first.state) == ("open", 1, "resolved")


async def test_unblock_refuses_an_operator_suspension(ledger: Ledger, redis: aioredis.Redis,
                                                      clock: Clock) -> None:  # fmt: skip
    fraud = await make_fraud(redis, clock, [BLOCK], ledger=ledger)
    await add_account(ledger)
    await ledger.set_status("acc1", Status.SUSPENDED, who="op")
    with pytest.raises(AccountNotActive, match="suspended"):
        await fraud.unblock("acc1", who="ops", why="x")
    assert (await ledger.get_account("acc1")).status == Status.SUSPENDED


@pytest.mark.parametrize(
    ("rule", "allowed"),
    [
        ({"name": "c", "kind": "concurrent", "max_calls": 5}, 5),
        ({"name": "v", "kind": "velocity", "max_calls": 10, "window_s": 60}, 10),
        ({"name": "d", "kind": "destination", "max_calls": 7, "window_s": 60}, 7),
    ],
)
async def test_limits_hold_across_two_daemons_under_concurrent_calls(
    redis: aioredis.Redis,
    redis_server: EmbeddedRedis,
    clock: Clock,
    rule: dict[str, object],
    allowed: int,
) -> None:
    one, two, other = await two_daemons(redis, redis_server, clock, [{**rule, "action": "refuse"}])
    try:
        calls = [(one, two)[i % 2].check(call(LIBERIA_PREMIUM)) for i in range(60)]
        verdicts = await asyncio.gather(*calls)
    finally:
        await other.aclose()
    assert sum(v.allowed for v in verdicts) == allowed
