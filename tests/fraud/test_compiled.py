"""compiled.Compiled (a rule set's authorize ops worked out once per shape of call)
gives each call the ops of its rules, the same from its cache as built afresh, for
calls of every shape against several rule sets."""

from __future__ import annotations

import itertools
import random
from typing import Any

import msgpack
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


def _expected_kinds(own: Any, per_ip: Any, facts: CallFacts, dest: Any, with_ip: bool) -> list:
    """(rule, kind) of each op, rule by rule, as fraud.lua must see them."""
    out: list[tuple[Any, str]] = []
    for r in own:
        if r.kind == "velocity" and r.scope == "account":
            out.append((r, "c"))
        elif r.kind == "velocity" and r.scope == "identity" and facts.identity:
            out.append((r, "i"))
        elif r.kind == "concurrent":
            out.append((r, "l"))
        elif r.kind == "destination" and dest.reasons(r.match):
            out.append((r, "c"))
        elif r.kind == "new_country" and dest.country:
            out.append((None if dest.country in r.exempt_countries else r, "n"))
        elif r.kind == "same_destination":
            out.append((r, "g"))
        elif r.kind == "distinct_destinations":
            out.append((r, "d"))
    if with_ip and facts.caller_ip:
        out += [(r, "c") for r in per_ip]
    return out


@pytest.mark.parametrize("cfg", configs(), ids=["default", "custom", "velocity", "shadow"])
def test_compiled_plans_hold_each_rule_of_the_call_once(cfg: FraudConfig) -> None:
    """Per shape of call (identity, caller IP, destination rules matched, country,
    exemptions) the cached ops are the ops of that call, rule by rule: a warm cache
    answers what a cold one builds."""
    rules = RuleBook(cfg).base
    classifier = Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes)
    own, per_ip, _ = P.split(rules)
    warm = Compiled(own, per_ip, LIVE_TTL_MS)
    rnd = random.Random(3)
    shapes = itertools.product(NUMBERS, ["", "user:alice", "ani:+4930999"],
                               ["", "192.0.2.7"], [True, False])  # fmt: skip
    checked = 0
    for number, identity, ip, with_ip in shapes:
        for account in ("acc1", "{odd}", "ü"):
            facts = CallFacts(account_id=account, session_id=rnd.choice(SESSIONS),
                              callee=number, identity=identity, caller_ip=ip)  # fmt: skip
            dest = classifier.classify(number)
            ip_on = with_ip and bool(per_ip) and bool(ip)
            got = warm.plan(1_700_000_000_000, facts, dest, ip_on)
            # the calls of a shape share its plan, unless it may block (the call's own)
            again = warm.plan(1_700_000_000_000, facts, dest, ip_on)
            assert (again is got) is not got.may_block
            cold = Compiled(own, per_ip, LIVE_TTL_MS).plan(1_700_000_000_000, facts, dest, ip_on)
            assert (got.ops, got.rules, got.may_block) == (cold.ops, cold.rules, cold.may_block)
            flat = msgpack.unpackb(got.ops)
            ops = [flat[i : i + 8] for i in range(0, len(flat), 8)]
            want = _expected_kinds(own, per_ip, facts, dest, ip_on)
            assert [(r, op[0]) for r, op in zip(got.rules, ops, strict=True)] == want
            for rule, op in zip(got.rules, ops, strict=True):
                assert op[1] == (5 if rule in per_ip else 1)  # the caller IP's value, or
                if rule is not None:
                    assert (op[4], op[5]) == (rule.limit, rule.act)
                    if op[0] in ("c", "i", "g"):  # the counter's id, as fraud.lua kept it
                        assert op[2] == f"{rule.slot}/{rule.window_ms // 1000}"
                    elif op[0] == "d":
                        assert op[2] == str(rule.slot)
                    assert op[6] == (rule.name if rule.act in "rb" else "")
            assert got.may_block == any(r is not None and r.act == "b" for r in got.rules)
            assert got.learns == any(op[0] == "n" for op in ops)
            checked += 1
    assert checked == len(NUMBERS) * 3 * 2 * 2 * 3


def test_full_caches_drop_their_oldest_entry_not_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_KEYS (MAX_SHAPES) the oldest template goes, the newest stay; what a
    call gets is the same as from a cold cache."""
    from chargingd.fraud import compiled

    monkeypatch.setattr(compiled, "MAX_KEYS", 3)
    monkeypatch.setattr(compiled, "MAX_SHAPES", 2)
    cfg = FraudConfig(enabled=True)
    own, per_ip, _ = P.split(RuleBook(cfg).base)
    classifier = Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes)
    warm = Compiled(own, per_ip, LIVE_TTL_MS)
    numbers = [BERLIN, UK_PREMIUM, DE_SHARED, LIBERIA_PREMIUM, "+33142685300", "+12025550123"]
    for n, number in enumerate(numbers):
        facts = CallFacts(account_id="a", session_id=f"s{n}", callee=number, identity="user:a")
        dest = classifier.classify(number)
        got = warm.plan(1, facts, dest, False)
        cold = Compiled(own, per_ip, LIVE_TTL_MS).plan(1, facts, dest, False)
        assert (got.ops, got.rules) == (cold.ops, cold.rules)
        assert len(warm._by_call) == min(n + 1, 3)
        assert len(warm._templates) <= 2
        assert (True, False, dest.country, dest.kind) == next(reversed(warm._by_call))[:4]
