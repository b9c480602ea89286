"""compiled.Compiled (a rule set's authorize ops worked out once per shape of call)
builds exactly the plans plan.check_ops and plan.ip_ops build: same keys, same
arguments, same rules, for calls of every shape against several rule sets."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from fraud_harness import BERLIN, DE_SHARED, LIBERIA_PREMIUM, UK_PREMIUM, fraud_config

from chargingd.core.config import FraudConfig
from chargingd.fraud import CallFacts
from chargingd.fraud import plan as P
from chargingd.fraud.compiled import Compiled
from chargingd.fraud.destinations import Classifier
from chargingd.fraud.rules import RuleBook

LIVE_TTL_MS = 7_200_000
CUSTOM: list[dict[str, Any]] = [
    {"name": "dest-block", "kind": "destination", "max_calls": 0, "window_s": 600,
     "action": "block"},
    {"name": "prem-q", "kind": "destination", "match": ["premium_rate"], "max_calls": 3,
     "window_s": 60, "action": "refuse"},
    {"name": "sat", "kind": "destination", "match": ["high_risk_prefix"], "max_calls": 1,
     "window_s": 30, "shadow": True},
    {"name": "cc", "kind": "new_country", "exempt_countries": ["DE"], "action": "refuse"},
    {"name": "cc2", "kind": "new_country", "memory_days": 5},
    {"name": "id1", "kind": "velocity", "scope": "identity", "max_calls": 5, "window_s": 60},
    {"name": "id2", "kind": "velocity", "scope": "identity", "max_calls": 50, "window_s": 900,
     "action": "block"},
    {"name": "ip1", "kind": "velocity", "scope": "caller_ip", "max_calls": 9, "window_s": 60,
     "action": "refuse"},
    {"name": "ip2", "kind": "velocity", "scope": "caller_ip", "max_calls": 99, "window_s": 600},
    {"name": "rg", "kind": "same_destination", "range_digits": 9, "max_calls": 4, "window_s": 60},
    {"name": "conc", "kind": "concurrent", "max_calls": 3, "action": "block"},
    {"name": "many", "kind": "distinct_destinations", "max_destinations": 4, "window_s": 7200},
    {"name": "acct", "kind": "velocity", "scope": "account", "max_calls": 7, "window_s": 10},
    {"name": "short", "kind": "short_calls", "max_duration_s": 6, "max_calls": 5,
     "window_s": 60},
]  # fmt: skip
NUMBERS = [BERLIN, LIBERIA_PREMIUM, UK_PREMIUM, DE_SHARED, "+33142685300", "+447400123456",
           "+88213123456", "+999123456", "+12", "+4930", "+80012345678", "+5358123456"]  # fmt: skip
SESSIONS = ["s1", 'q"uote', "back\\slash", "t\tab\n", "üñí©ødé", "a|b|c"]


def configs() -> list[FraudConfig]:
    return [
        FraudConfig(enabled=True),  # the default rule set
        fraud_config(CUSTOM, high_risk_prefixes=["+882", "+53"]),
        fraud_config([r for r in CUSTOM if r["kind"] in ("velocity", "concurrent")]),
        fraud_config([CUSTOM[0], CUSTOM[5]], shadow=True),
    ]


@pytest.mark.parametrize("cfg", configs(), ids=["default", "custom", "velocity", "shadow"])
def test_compiled_plans_equal_the_rule_by_rule_plans(cfg: FraudConfig) -> None:
    rules = RuleBook(cfg).base
    classifier = Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes)
    own, per_ip, _ = P.split(rules)
    assert Compiled.applies(own)
    compiled = Compiled(own, per_ip, LIVE_TTL_MS)
    rnd = random.Random(3)
    shapes = itertools.product(NUMBERS, ["", "user:alice", "ani:+4930999"],
                               ["", "192.0.2.7"], [True, False])  # fmt: skip
    checked = 0
    for number, identity, ip, with_ip in shapes:
        for account in ("acc1", "{odd}", "ü"):
            facts = CallFacts(account_id=account, session_id=rnd.choice(SESSIONS),
                              callee=number, identity=identity, caller_ip=ip)  # fmt: skip
            dest = classifier.classify(number)
            want = P.Plan(1_700_000_000_000, identity)
            P.check_ops(want, own, facts, dest, LIVE_TTL_MS)
            if with_ip and per_ip:
                P.ip_ops(want, per_ip, facts)
            got = compiled.plan(1_700_000_000_000, facts, dest, with_ip and bool(per_ip))
            assert got.keys == want.keys
            assert got.argv() == want.argv()
            assert got.rules == want.rules
            assert got.may_block == want.may_block
            assert [op[3] for op in got.ops] == [op[3] for op in want.ops]
            checked += 1
    assert checked == len(NUMBERS) * 3 * 2 * 2 * 3


def test_two_range_rules_are_left_to_check_ops() -> None:
    rg2 = {"name": "rg2", "kind": "same_destination", "range_digits": 2, "max_calls": 4,
           "window_s": 60}  # fmt: skip
    cfg = fraud_config([CUSTOM[9], rg2])
    own, _, _ = P.split(RuleBook(cfg).base)
    assert not Compiled.applies(own)
