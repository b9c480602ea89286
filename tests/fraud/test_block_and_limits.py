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
from chargingd.ledger import AccountNotActive, Ledger, Mode, Status, UnknownAccount

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


FAST = {"name": "fast", "kind": "velocity", "max_calls": 2, "window_s": 600, "action": "refuse"}


async def test_lift_ends_a_refusal_of_an_active_account_early_and_is_audited(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """`ctl fraud lift`: a velocity refusal (the retries count: it holds while they
    come) and an event rule's deny flag end at once, the counts start over, the
    incidents are resolved, an audit entry says who and why. Not for a blocked account
    (unblock), nor an unknown one."""
    failed = {"name": "fa", "kind": "failed_attempts", "max_calls": 1, "window_s": 600,
              "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [FAST, failed, BLOCK])
    await fraud.ledger.create_account(
        "acc1", mode=Mode.PREPAID, currency="EUR", balance_micros=10**8,
        identities=("user:alice",), who="test",
    )  # fmt: skip
    for _ in range(2):
        await fraud.refused("acc1", "user:alice", f"rej-{clock()}")
        clock.advance(1)
    assert [(await fraud.check(call())).allowed for _ in range(3)] == [False] * 3
    assert "deny:fa|user:alice" in await fraud.state("acc1")
    lifted = await fraud.lift("acc1", who="admin:ops", why="customer's phone fixed")
    assert lifted == {"id": "acc1", "identity": "", "lifted": ["fa|user:alice"]}
    assert (await fraud.check(call())).allowed
    assert "deny:fa|user:alice" not in await fraud.state("acc1")
    (entry, *_) = await fraud.ledger.audit("acc1", count=1)
    assert (entry.what, entry.who, entry.why) == (
        "fraud_lift",
        "admin:ops",
        "customer's phone fixed",
    )
    assert entry.details == {"lifted": "fa|user:alice"}
    await fraud.settle()
    assert fraud.alerts is not None
    assert {i.state for i in await fraud.alerts.incidents()} == {"resolved"}
    # a blocked account is unblock's
    for _ in range(4):
        clock.advance(1)
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()
    assert (await fraud.ledger.get_account("acc1")).status is Status.BLOCKED
    with pytest.raises(AccountNotActive, match="ctl fraud unblock"):
        await fraud.lift("acc1", who="admin:ops", why="x")
    with pytest.raises(AccountNotActive, match="ctl fraud unblock"):
        await fraud.lift(None, identity="user:alice", who="admin:ops", why="x")
    with pytest.raises(UnknownAccount):
        await fraud.lift("nobody", who="admin:ops", why="x")


async def test_lift_of_an_identity_ends_its_refusal_alone(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """`ctl fraud lift --identity`: that identity's deny flag and failed attempts go (the
    account's count no longer holds them), another identity's refusal and the account's
    own (a velocity count per account) stay, and the answer names the account's; its
    incidents stay open while the rule still refuses another identity. The audit entry
    names the identity."""
    failed = {"name": "fa", "kind": "failed_attempts", "max_calls": 2, "window_s": 600,
              "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [FAST, failed])
    await fraud.ledger.create_account(
        "acc1", mode=Mode.PREPAID, currency="EUR", balance_micros=10**8,
        identities=("user:alice", "user:bob"), who="test",
    )  # fmt: skip
    for who in ("user:bob", "user:bob", "user:bob", "user:alice"):  # bob brute-forced
        await fraud.refused("acc1", who, f"rej-{clock()}")
        clock.advance(1)
    state = await fraud.state("acc1")
    assert "deny:fa|user:alice" in state and "deny:fa|user:bob" in state, state
    lifted = await fraud.lift(None, identity="user:alice", who="admin:ops", why="her phone")
    assert lifted == {
        "id": "acc1", "identity": "user:alice", "lifted": ["fa|user:alice"],
        "account_refusals": [],
    }  # fmt: skip
    state = await fraud.state("acc1")
    assert "deny:fa|user:alice" not in state and "deny:fa|user:bob" in state, state
    assert (await fraud.check(call(identity="user:alice"))).allowed
    assert not (await fraud.check(call(identity="user:bob"))).allowed  # still refused
    (entry, *_) = await fraud.ledger.audit("acc1", count=1)
    assert (entry.what, entry.details) == (
        "fraud_lift",
        {"identity": "user:alice", "lifted": "fa|user:alice"},
    )
    await fraud.settle()
    assert fraud.alerts is not None
    assert {i.state for i in await fraud.alerts.incidents()} == {"open"}  # bob's
    # bob's password fixed: lifted too; alice's one failed attempt left the count with
    # her lift, so bob's lift leaves the count empty (a failed attempt counts as the 1st)
    await fraud.lift(None, identity="user:bob", who="admin:ops", why="new password")
    assert (await fraud.refused("acc1", "user:bob", "rej-x")).allowed
    assert not (await fraud.refused("acc1", "user:bob", "rej-y")).fired  # 2 of 2
    await fraud.settle()
    assert {i.state for i in await fraud.alerts.incidents()} == {"resolved"}
    # velocity per account (2 calls, then refused): the account's, left by --identity
    # (alice's call above was the 1st; bob's, refused by his deny flag, did not count)
    assert (await fraud.check(call(identity="user:alice"))).allowed
    assert not (await fraud.check(call(identity="user:alice"))).allowed
    lifted = await fraud.lift(None, identity="user:alice", who="admin:ops", why="x")
    assert lifted["account_refusals"] == [
        {"rule": "fast", "count": 3, "limit": 2, "window_s": 600}
    ], lifted
    assert not (await fraud.check(call(identity="user:alice"))).allowed
    await fraud.lift("acc1", who="admin:ops", why="the account's")
    assert (await fraud.check(call(identity="user:alice"))).allowed


async def test_lift_of_an_identity_starts_its_own_velocity_count_over(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A velocity rule per identity: `lift --identity` starts that identity's count over,
    another identity's count goes on (it was reset with it: the account's counts)."""
    per_identity = {**FAST, "scope": "identity", "max_calls": 1}
    fraud = await make_fraud(redis, clock, [per_identity])
    await fraud.ledger.create_account(
        "acc1", mode=Mode.PREPAID, currency="EUR", balance_micros=10**8,
        identities=("user:alice", "user:bob"), who="test",
    )  # fmt: skip
    for who in ("user:alice", "user:bob"):
        assert (await fraud.check(call(identity=who))).allowed
        assert not (await fraud.check(call(identity=who))).allowed
    lifted = await fraud.lift(None, identity="user:alice", who="admin:ops", why="x")
    assert lifted["lifted"] == [] and lifted["account_refusals"] == []
    assert (await fraud.check(call(identity="user:alice"))).allowed
    assert not (await fraud.check(call(identity="user:bob"))).allowed


async def test_lift_of_an_identity_no_account_has_clears_its_count(
    redis: aioredis.Redis, clock: Clock
) -> None:
    failed = {"name": "fa", "kind": "failed_attempts", "max_calls": 1, "window_s": 600}
    fraud = await make_fraud(redis, clock, [failed])
    verdicts = [await fraud.refused(None, "user:mallory", f"rej-{i}") for i in range(2)]
    assert [bool(v.fired) for v in verdicts] == [False, True]
    lifted = await fraud.lift(None, identity="user:mallory", who="admin:ops", why="typo")
    assert lifted == {"id": "", "identity": "user:mallory", "lifted": []}
    assert not (await fraud.refused(None, "user:mallory", "rej-3")).fired  # counted anew
    await fraud.settle()
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.state == "resolved"
