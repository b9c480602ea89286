"""identity_scan: unknown identities tried from one caller IP (a SIPVicious-style scan of
extensions through the SBC, each Access-Request refused as `unknown account`), counted on
the Access-Rejects; a refusing rule refuses that address's calls for its cooldown, known
accounts' too (op 'p' in authorize: the deny flag in the caller IP's value). Through the
real daemon: tests/fraud/test_daemon_e2e.py (test_a_scan_of_unknown_identities_...)."""

from __future__ import annotations

import msgpack
import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import add_account, call, fraud_config, make_fraud

from chargingd.fraud import Decision
from chargingd.fraud import keys as FK
from chargingd.fraud import plan as P
from chargingd.fraud.compiled import Compiled
from chargingd.fraud.destinations import Classifier
from chargingd.fraud.local import LocalRules
from chargingd.fraud.rules import RuleBook

IP, OTHER = "203.0.113.66", "192.0.2.10"
SCAN = {"name": "scan", "kind": "identity_scan", "max_identities": 3, "window_s": 300,
        "cooldown_s": 600, "action": "refuse", "message": "scanner refused"}  # fmt: skip
PER_IP = {"name": "per-ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 100,
          "window_s": 60}  # fmt: skip


async def probe(fraud, ip: str, n: int, start: int = 0) -> list[bool]:  # type: ignore[no-untyped-def]
    """``n`` distinct unknown identities from ``ip``: whether each reject fired the rule."""
    out = []
    for i in range(start, start + n):
        verdict = await fraud.scan(ip, f"user:{100 + i}", f"rej-{ip}-{i}")
        out.append(bool(verdict.fired))
    return out


@pytest.mark.parametrize("single_redis", [True, False], ids=["single", "cluster-steps"])
@pytest.mark.parametrize("with_velocity", [True, False], ids=["with-per-ip", "alone"])
async def test_a_scan_refuses_its_caller_ip_for_known_accounts(
    redis: aioredis.Redis, clock: Clock, single_redis: bool, with_velocity: bool
) -> None:
    rules = [PER_IP, SCAN] if with_velocity else [SCAN]
    fraud = await make_fraud(redis, clock, rules, single_redis=single_redis)
    await add_account(fraud.ledger)
    assert (await fraud.check(call(caller_ip=IP))).allowed
    # one identity retried (its retransmissions, a phone's one wrong user) counts once
    for i in range(3):
        await fraud.refused(None, "user:100", f"rej-again-{i}", caller_ip=IP)
    assert await probe(fraud, IP, 3) == [False, False, False]  # 3 distinct: the limit
    assert (await fraud.check(call(caller_ip=IP))).allowed
    assert await probe(fraud, IP, 2, start=3) == [True, True]
    refused = await fraud.check(call(caller_ip=IP))
    assert refused.decision is Decision.REFUSE
    assert refused.rule is not None and refused.rule.name == "scan"
    assert refused.message == "scanner refused"
    assert (await fraud.check(call(caller_ip=OTHER))).allowed
    assert (await fraud.check(call())).allowed  # no caller IP said: not counted per IP
    await fraud.settle()
    assert fraud.alerts is not None
    incidents = await fraud.alerts.incidents()
    assert [i.key for i in incidents] == [f"fraud.scan:{IP}"]
    assert incidents[0].details["outcome"] == "next calls refused"

    lifted = await fraud.lift_caller_ip(IP, who="admin:ops", why="SBC fixed")
    assert lifted["lifted"] == ["counts"]
    assert (await fraud.check(call(caller_ip=IP))).allowed
    assert await probe(fraud, IP, 1, start=10) == [False]  # counted anew
    await fraud.settle()
    (incident,) = await fraud.alerts.incidents()
    assert incident.state == "resolved"


async def test_the_refusal_ends_with_its_cooldown(redis: aioredis.Redis, clock: Clock) -> None:
    fraud = await make_fraud(redis, clock, [SCAN])
    await add_account(fraud.ledger)
    assert await probe(fraud, IP, 4) == [False, False, False, True]
    assert not (await fraud.check(call(caller_ip=IP))).allowed
    clock.advance(599)
    assert not (await fraud.check(call(caller_ip=IP))).allowed
    clock.advance(2)
    assert (await fraud.check(call(caller_ip=IP))).allowed


async def test_shadow_and_alert_only_never_refuse(redis: aioredis.Redis, clock: Clock) -> None:
    rules = [{**SCAN, "name": "shadowed", "shadow": True}, {**SCAN, "action": "alert"}]
    fraud = await make_fraud(redis, clock, rules)
    await add_account(fraud.ledger)
    assert await probe(fraud, IP, 5) == [False, False, False, True, True]
    assert (await fraud.check(call(caller_ip=IP))).allowed
    await fraud.settle()
    assert fraud.alerts is not None
    outcomes = {i.key: i.details["outcome"] for i in await fraud.alerts.incidents()}
    assert outcomes == {f"fraud.shadowed:{IP}": "shadow: would refuse", f"fraud.scan:{IP}": "alert"}


def test_the_default_rule_alerts_and_adds_no_op_to_authorize() -> None:
    """The shipped identity-scan rule alerts (20 unknown identities in 5 min): authorize's
    ops are what they were without it; only a refusing rule reads the IP's deny flag."""
    cfg = fraud_config(None)
    (rule,) = [r for r in RuleBook(cfg).base if r.kind == "identity_scan"]
    assert (rule.name, rule.limit, rule.window_ms, rule.action.value) == (
        "identity-scan", 20, 300_000, "alert"
    )  # fmt: skip
    # after the rules before it: they keep their slots (a rule's slot is its position)
    assert [r.name for r in cfg.rules[-2:]] == ["identity-scan", "callback-wave"]
    dest = Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes, ()).classify("+4930123")
    facts = call(caller_ip=IP)

    def ops(rules: list[dict[str, object]] | None) -> list[object]:
        base = RuleBook(fraud_config(rules)).base
        own, per_ip, _ = P.split(base)
        return msgpack.unpackb(Compiled(own, per_ip, 3_600_000).plan(0, facts, dest, True).ops)

    shipped = [r for r in fraud_config(None).rules if r.kind != "identity_scan"]
    # (the ops of a call to a number that no destination rule matches: the same either way)
    without = [
        {k: v for k, v in vars(r).items() if v is not None and k != "enabled"} for r in shipped
    ]
    assert ops(None) == ops(without)
    refusing = ops([*without, {**SCAN}])
    assert refusing[: len(ops(without))] == ops(without)
    assert refusing[len(ops(without)) :][:3] == ["p", 5, "scan"]


@pytest.mark.parametrize("compiled", [True, False], ids=["c", "python"])
def test_the_daemons_evaluation_leaves_a_refused_ip_to_lua(compiled: bool) -> None:
    """[fraud] local_values: a call from an address whose deny flag is in force is not
    decided in the daemon (fraud.lua refuses it), one from a clean address is."""
    base = RuleBook(fraud_config([PER_IP, SCAN])).base
    own, per_ip, _ = P.split(base)
    plan = Compiled(own, per_ip, 3_600_000).plan(0, call(caller_ip=IP), _dest(), True)
    local = LocalRules(100, compiled=compiled)
    now = 1_800_000_000_000
    key, ip_key = FK.value_key("acc1"), FK.ip_value_key(IP)
    local.learnt(key, b"")
    local.learnt(ip_key, msgpack.packb({"w": {}, "d": {"scan": now + 1000}}))
    args = ("user:alice", "sid-1", "+4930123", "DE", 1)
    assert local.evaluate(plan, now, key, ip_key, *args) is None
    local.learnt(key, b"")
    local.learnt(ip_key, msgpack.packb({"w": {}, "d": {"scan": now - 1}}))
    outcome = local.evaluate(plan, now, key, ip_key, *args)
    assert outcome is not None and outcome.reply[0] == b"ok"


def _dest():  # type: ignore[no-untyped-def]
    cfg = fraud_config(None)
    return Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes, ()).classify("+4930123")


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ({**SCAN, "action": "block"}, "no account to block"),
        ({k: v for k, v in SCAN.items() if k != "max_identities"}, "needs max_identities"),
        ({**SCAN, "max_calls": 3}, "max_calls does not apply"),
    ],
)
def test_config_errors(rule: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        fraud_config([rule])


async def test_the_ip_refusal_lives_as_long_as_its_cooldown(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """The caller IP's value (with its deny flag) is kept until the cooldown ends: it was
    written with the ttl of the scan's keys (the window + 60 s), and a cooldown longer
    than that ended early, with the value, once the scan stopped."""
    day = 86_400
    fraud = await make_fraud(redis, clock, [{**SCAN, "cooldown_s": day}])
    await add_account(fraud.ledger)
    await probe(fraud, IP, 4)
    assert await redis.pttl(FK.ip_value_key(IP)) > (day - 60) * 1000


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"max_identities": 50}, "max_identities: a identity_scan rule counts across"),
        ({"action": "refuse"}, "turning it on"),
        ({"enabled": True}, "turning it on"),
    ],
)
def test_an_override_cannot_change_the_count(override: dict[str, object], error: str) -> None:
    """The count and its refusal are the [fraud] rule's (an address has no account): an
    override that would change them is an error, not a silent no-op."""
    alerting = {**SCAN, "action": "alert"}
    with pytest.raises(ValueError, match=error):
        fraud_config([alerting], tariff_overrides={"retail": {"scan": override}})


def test_an_override_keeps_the_refusal_off_an_accounts_calls() -> None:
    cfg = fraud_config([SCAN], account_overrides={"pbx": {"scan": {"enabled": False}}})
    book = RuleBook(cfg)
    assert P.split(book.rules_for("pbx", "default"))[1] == ()
    assert [r.name for r in P.split(book.rules_for("acc1", "default"))[1]] == ["scan"]
