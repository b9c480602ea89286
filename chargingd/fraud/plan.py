"""The arguments of the fraud scripts (lua/fraud.lua), built for one call or call event,
and their replies decoded. No I/O: engine.py sends what this builds.

A plan is a list of ops, one per rule that applies to the call: which key it counts
in, what, against which limit, and what its rule does when over it. Keys are
numbered as the scripts see them: 1 state, 2-3 the ledger's block step, 4.. the ops'.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargingd.billing.cdr import CDR
from chargingd.fraud import keys as FK
from chargingd.fraud.destinations import Destination, number_range
from chargingd.fraud.rules import Action, Rule
from chargingd.fraud.types import ALLOWED, KNOWN, CallFacts, Decision, Fired, Verdict
from chargingd.ledger import Status
from chargingd.ledger.steps import StepBuilder

# A JSON string of a member or rule name, its text as given (UTF-8 as redis-py sends it).
_q: Callable[[str], str] = json.encoder.encode_basestring
KEY_MARGIN_MS = 60_000  # a counter key outlives its longest window by this
SEEN_MS = 3_600_000  # event ids remembered against re-delivery
BLOCK_FROM = ("active/",)  # a rule blocks an active account only (never a closed one)
FIRST_OP_KEY = 4


@dataclass
class Plan:
    """KEYS and ARGV of one fraud script call, and the rule of each op."""

    now_ms: int
    identity: str
    event_id: str = ""
    keys: list[str] = field(default_factory=list)
    # each op as JSON (fraud.lua's 10 fields) around its ttl, its key index, its kind
    ops: list[tuple[str, str, int, str]] = field(default_factory=list)
    rules: list[Rule | None] = field(default_factory=list)  # the rule of op i + 1
    block_argv: list[Any] = field(default_factory=list)
    may_block: bool = False  # an op's rule blocks (not in shadow)
    ops_json: str | None = None  # the ops as argv sends them, when built already
    _key_index: dict[str, int] = field(default_factory=dict)
    _ttl: dict[int, int] = field(default_factory=dict)  # key index -> longest ttl

    def add(
        self,
        rule: Rule | None,
        kind: str,
        key: str,
        window_ms: int,
        member: str,
        *,
        ttl_ms: int | None = None,
        extra: int = 0,
    ) -> None:
        """One op; ``rule`` None: bookkeeping (learning, dedupe, a call ended) that never
        fires. ``ttl_ms``: the key's lifetime (default window + margin; 0 leaves it)."""
        index = self._key_index.get(key)
        ttl = window_ms + KEY_MARGIN_MS if ttl_ms is None else ttl_ms
        if index is None:
            index = self._key_index[key] = FIRST_OP_KEY + len(self.keys)
            self.keys.append(key)
            self._ttl[index] = ttl
        elif ttl > self._ttl[index]:
            self._ttl[index] = ttl
        # the op as JSON, less its ttl (argv puts it in): fraud.lua's 10 fields
        if rule is None:
            head = f'["{kind}",{index},0,{window_ms},0,"x","",'
        else:
            act = rule.act
            name = _q(rule.name) if act in "rb" else '""'  # the script names only these
            head = f'["{kind}",{index},{rule.slot},{window_ms},{rule.limit},"{act}",{name},'
            if act == "b":
                self.may_block = True
        self.ops.append((head, f",{extra},{_q(member)}]", index, kind))
        self.rules.append(rule)

    def argv(self) -> list[Any]:
        """ARGV: the header, the ops (one JSON array: each key's ttl on its first op),
        the block step."""
        if self.ops_json is not None:
            fixed = [self.now_ms, self.identity, len(self.ops), self.event_id, self.ops_json]
            return fixed + self.block_argv
        ttl = self._ttl
        seen: set[int] = set()
        parts = []
        for head, tail, index, _ in self.ops:
            if index in seen:
                parts.append(f"{head}0{tail}")
            else:
                seen.add(index)
                parts.append(f"{head}{ttl[index]}{tail}")
        ops = "[" + ",".join(parts) + "]"
        return [self.now_ms, self.identity, len(self.ops), self.event_id, ops, *self.block_argv]

    def rule_of(self, op: int) -> Rule:
        rule = self.rules[op - 1]
        assert rule is not None, "a bookkeeping op never fires"
        return rule


def head_keys(plan: Plan, state_key: str, block_keys: Sequence[str]) -> list[str]:
    """KEYS of the script: state, the block step's two keys, then the ops' keys."""
    return [state_key, *block_keys, *plan.keys]


def authorize_tail(
    steps: StepBuilder, account_id: str, session_id: str
) -> tuple[list[str], list[Any]]:
    """What an authorize script appends to KEYS and ARGV so a retransmission is answered
    as before (fraud.lua fraud_seen): the call's remembered refusal, the ledger's known
    step; the session id and how long a refusal is remembered."""
    known = steps.known(account_id, session_id)
    keys = [FK.refusal_key(account_id, session_id), *known.keys]
    return keys, [session_id, steps.refusal_ttl_ms]


def with_block(plan: Plan, steps: StepBuilder, account_id: str) -> list[str]:
    """The ledger's block step (built by the ledger) when an op may block; its keys."""
    if not plan.may_block:
        return [FK.state_key(account_id)] * 2  # unused; same slot as the rest
    step = steps.status(
        account_id,
        Status.BLOCKED,
        now_ms=plan.now_ms,
        who="fraud",
        reason="fraud",
        only_from=BLOCK_FROM,
    )
    plan.block_argv = list(step.argv)
    return step.keys


# -- authorize ----------------------------------------------------------------------


def check_ops(
    plan: Plan, rules: Sequence[Rule], facts: CallFacts, dest: Destination, live_ttl_ms: int
) -> None:
    """The ops of the authorize rules that apply to this call (IP rules excluded: see
    ip_ops)."""
    acc = facts.account_id
    log = FK.log_key(acc)
    for rule in rules:
        kind = rule.kind
        if kind == "velocity" and rule.scope == "account":
            plan.add(rule, "c", log, rule.window_ms, facts.session_id)
        elif kind == "velocity" and rule.scope == "identity" and facts.identity:
            key = FK.identity_key(acc, facts.identity)
            plan.add(rule, "c", key, rule.window_ms, facts.session_id)
        elif kind == "concurrent":
            plan.add(rule, "l", FK.live_key(acc), live_ttl_ms, facts.session_id)
        elif kind == "destination" and dest.reasons(rule.match):
            plan.add(rule, "c", log, rule.window_ms, facts.session_id)
        elif kind == "new_country" and dest.country:
            learn_only = dest.country in rule.exempt_countries
            rule_or_none = None if learn_only else rule
            plan.add(rule_or_none, "n", FK.countries_key(acc), rule.window_ms, dest.country)
        elif kind == "same_destination":
            key = FK.range_key(acc, number_range(dest.number, rule.range_digits))
            plan.add(rule, "c", key, rule.window_ms, facts.session_id)
        elif kind == "distinct_destinations":
            plan.add(rule, "d", log, rule.window_ms, dest.number)


def split(rules: Sequence[Rule]) -> tuple[tuple[Rule, ...], tuple[Rule, ...], bool]:
    """A rule set as authorize uses it: its authorize rules (but per caller IP), its
    rules per caller IP, and whether it must read deny flags (needs_check)."""
    per_ip = tuple(r for r in rules if r.kind == "velocity" and r.scope == "caller_ip")
    own = tuple(r for r in rules if r.at_authorize and r not in per_ip)
    return own, per_ip, needs_check(rules)


def ip_ops(plan: Plan, rules: Sequence[Rule], facts: CallFacts) -> None:
    """Velocity per caller IP: a key of every account (its own slot)."""
    for rule in rules:
        if rule.kind == "velocity" and rule.scope == "caller_ip" and facts.caller_ip:
            key = FK.ip_log_key(facts.caller_ip)
            plan.add(rule, "c", key, rule.window_ms, f"{facts.account_id}|{facts.session_id}")


def needs_check(rules: Sequence[Rule]) -> bool:
    """An account with an event rule that refuses must have its deny flags read."""
    return any(not r.at_authorize and r.action is Action.REFUSE and not r.shadow for r in rules)


# -- call events --------------------------------------------------------------------


def cdr_event_id(cdr: CDR) -> str:
    """What a CDR is counted once by: its call and revision (a re-delivery, or the same
    CDR written twice, counts nothing twice; a corrected revision counts its change)."""
    return f"cdr:{cdr.source}:{cdr.call_id}:{cdr.revision}"


def cdr_ops(plan: Plan, rules: Sequence[Rule], cdr: CDR) -> None:
    """The ops of one CDR: counted once (dedupe), the call no longer live, the event
    rules it feeds. A corrected CDR (revision > 0: a late Stop after the reaper) feeds
    only what changed against the revision it replaces (its extra says what that one
    charged and its usage): spend by the difference, the answer ratio by a change of
    answered (the call was seized once); short and failed calls count a call id once."""
    acc = cdr.account_id
    plan.add(None, "u", FK.seen_key(acc), SEEN_MS, "")
    plan.add(None, "x", FK.live_key(acc), 0, cdr.call_id, ttl_ms=0)  # ttl: check's
    answered = cdr.answer_ms > 0 or cdr.duration_s > 0
    spent, ratio_kind, ratio = cdr.charged_micros, "r", int(answered)
    if cdr.revision > 0:
        spent -= _int(cdr.extra.get("provisional_micros"))
        ratio_kind, ratio = "R", ratio - int(_int(cdr.extra.get("provisional_usage_s")) > 0)
    for rule in rules:
        kind, cooldown = rule.kind, rule.cooldown_ms
        if kind == "spend":
            if spent > 0 or (spent < 0 and cdr.revision > 0):
                key = FK.events_key(acc)
                plan.add(rule, "s", key, rule.window_ms, str(spent), extra=cooldown)
        elif _counts(rule, answered, cdr.duration_s):
            plan.add(rule, "c", FK.log_key(acc), rule.window_ms, cdr.call_id, extra=cooldown)
        elif kind == "asr" and (ratio or ratio_kind == "r"):
            key = FK.events_key(acc)
            plan.add(rule, ratio_kind, key, rule.window_ms, str(ratio), extra=rule.min_calls)


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _counts(rule: Rule, answered: bool, duration_s: int) -> bool:
    """Does a call count for short_calls (answered and short) or failed_attempts?"""
    if rule.kind == "short_calls":
        return answered and duration_s <= rule.max_duration_s
    return rule.kind == "failed_attempts" and not answered


def refusal_ops(plan: Plan, rules: Sequence[Rule], account_id: str, session_id: str) -> None:
    """An Access-Reject of a known account: failed_attempts counts it."""
    plan.add(None, "u", FK.seen_key(account_id), SEEN_MS, "")
    for rule in rules:
        if rule.kind == "failed_attempts":
            key = FK.log_key(account_id)
            plan.add(rule, "c", key, rule.window_ms, session_id, extra=rule.cooldown_ms)


def stranger_ops(plan: Plan, rules: Sequence[Rule], identity: str, session_id: str) -> None:
    """An Access-Reject of an identity no account has: counted, alerts only."""
    for rule in rules:
        if rule.kind == "failed_attempts":
            alert_only = _alert_only(rule)
            key = FK.stranger_log_key(identity)
            plan.add(alert_only, "c", key, rule.window_ms, session_id)


def _alert_only(rule: Rule) -> Rule:
    """Nothing to refuse or block without an account: the rule can only alert."""
    if rule.action is Action.ALERT or rule.shadow:
        return rule
    return dataclasses.replace(rule, action=Action.ALERT)


# -- replies --------------------------------------------------------------------------


def decode(plan: Plan, reply: Sequence[Any], by_name: dict[str, Rule]) -> Verdict:
    """A fraud_check / fraud_event reply as a Verdict."""
    outcome = _s(reply[0])
    if outcome == "dup":
        return ALLOWED
    if outcome == "known":
        return KNOWN
    if outcome == "again":  # "refuse|RULE" or "block|RULE", remembered by fraud_remember
        how, _, name = _s(reply[4]).partition("|")
        decision = Decision.BLOCK if how == "block" else Decision.REFUSE
        return Verdict(decision, by_name.get(name), again=True)
    flat = list(reply[3])
    fired = tuple(
        Fired(plan.rule_of(int(flat[i])), int(flat[i + 1])) for i in range(0, len(flat), 2)
    )
    decider = int(reply[1])
    rule = plan.rule_of(decider) if decider else None
    if outcome == "deny":
        return Verdict(Decision.REFUSE, by_name.get(_s(reply[4])), fired)
    if outcome == "refuse":
        return Verdict(Decision.REFUSE, rule, fired)
    if outcome == "block":
        return Verdict(Decision.BLOCK, rule, fired, blocked_now=bool(int(reply[2])))
    return Verdict(Decision.ALLOW, None, fired)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
