"""The arguments of the fraud scripts (lua/fraud.lua), built for one call or call event,
and their replies decoded. No I/O: engine.py sends what this builds.

An event plan (Plan) is a list of ops, one per rule the event feeds: which key it
counts in, what, against which limit, and what its rule does when over it. Keys are
numbered as the scripts see them: 1 the account's value, 2-3 the ledger's block step,
4.. the ops'. An authorize plan (AuthPlan, built by compiled.py) counts in the
account's value (and the caller IP's) only.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargingd.billing.cdr import CDR
from chargingd.core.currencies import minor_unit
from chargingd.fraud import keys as FK
from chargingd.fraud.rules import Action, Rule
from chargingd.fraud.types import ALLOWED, KNOWN, Decision, Fired, Verdict
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
    currency: str = ""  # the account's (a CDR's): a spend block's why is written in it
    keys: list[str] = field(default_factory=list)
    # each op as JSON (fraud.lua's 10 fields) around its ttl, its key index, its kind
    ops: list[tuple[str, str, int, str]] = field(default_factory=list)
    rules: list[Rule | None] = field(default_factory=list)  # the rule of op i + 1
    block_argv: list[Any] = field(default_factory=list)
    may_block: bool = False  # an op's rule blocks (not in shadow)
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
        value_ttl = max(ttl.values(), default=KEY_MARGIN_MS)
        places = minor_unit(self.currency) if self.currency else ""
        fixed: list[Any] = [self.now_ms, self.identity, self.event_id, ops, self.currency, places]
        fixed.append(value_ttl)
        fixed += [0, 0, 0, 0]  # fraud.lua's ARGV 8-11 (authorize only)
        return fixed + self.block_argv

    def rule_of(self, op: int) -> Rule:
        rule = self.rules[op - 1]
        assert rule is not None, "a bookkeeping op never fires"
        return rule


def member_hash(text: str) -> int:
    """What the account's value keeps of a called number (distinct numbers): its CRC-32,
    5 bytes instead of the text (fraud.lua; two numbers alike count as one). Never of a
    session id: a caller may choose its id and search one with a live call's hash."""
    return zlib.crc32(text.encode())


def head_keys(plan: Plan, value_key: str, block_keys: Sequence[str]) -> list[str]:
    """KEYS of an event script: the value, the block step's two keys, the ops' keys."""
    return [value_key, *block_keys, *plan.keys]


@dataclass
class AuthPlan:
    """The authorize ops of one call (compiled.py: fixed per rule set and shape of call,
    as fraud.lua reads them) and the rule of each op. Shared by the calls of a shape
    unless it may block (its block step is then the call's own)."""

    now_ms: int  # the block step's time (0 in a shared plan)
    rules: tuple[Rule | None, ...]  # the rule of op i + 1
    ops: bytes  # fraud.lua's ARGV[4]
    may_block: bool  # an op's rule blocks (not in shadow)
    learns: bool  # a country to learn once the call is granted (new_country)
    ttl_ms: int  # how long the account's value must live at least
    ip_ttl_ms: int  # the caller IP's
    block_argv: list[Any] = field(default_factory=list)

    def rule_of(self, op: int) -> Rule:
        rule = self.rules[op - 1]
        assert rule is not None, "a bookkeeping op never fires"
        return rule


def with_block(plan: Plan | AuthPlan, steps: StepBuilder, account_id: str) -> list[str]:
    """The ledger's block step (built by the ledger) when an op may block; its keys."""
    if not plan.may_block:
        return [FK.value_key(account_id)] * 2  # unused; same slot as the rest
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


def split(rules: Sequence[Rule]) -> tuple[tuple[Rule, ...], tuple[Rule, ...], bool]:
    """A rule set as authorize uses it: its authorize rules (but per caller IP), its
    rules per caller IP, and whether it must read deny flags (needs_check)."""
    per_ip = tuple(
        r
        for r in rules
        if (r.kind == "velocity" and r.scope == "caller_ip") or refuses_caller_ip(r)
    )
    own = tuple(r for r in rules if r.at_authorize and r not in per_ip)
    return own, per_ip, needs_check(rules)


def refuses_caller_ip(rule: Rule) -> bool:
    """An identity_scan rule that refuses (not in shadow): authorize reads its deny flag in
    the caller IP's value (op 'p'). One that only alerts (the default) adds nothing to
    authorize: it counts on the Access-Rejects of unknown identities alone."""
    return rule.kind == "identity_scan" and rule.action is Action.REFUSE and not rule.shadow


def needs_check(rules: Sequence[Rule]) -> bool:
    """An account with an event rule that refuses must have its deny flags read (an
    identity_scan rule's flag is the caller IP's: its own op, split's per_ip)."""
    return any(
        not r.at_authorize
        and r.kind != "identity_scan"
        and r.action is Action.REFUSE
        and not r.shadow
        for r in rules
    )


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
    plan.add(None, "x", FK.value_key(acc), 0, cdr.call_id, ttl_ms=0)  # a live call ended
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
    """An Access-Reject of a known account: failed_attempts counts it, unless the rule
    refuses the identity already (fraud_events.lua 'f': the reject is that refusal's)."""
    plan.add(None, "u", FK.seen_key(account_id), SEEN_MS, "")
    member = reject_member(plan.identity, session_id)
    for rule in rules:
        if rule.kind == "failed_attempts":
            key = FK.log_key(account_id)
            plan.add(rule, "f", key, rule.window_ms, member, extra=rule.cooldown_ms)


def reject_member(identity: str, session_id: str) -> str:
    """What the account's event log keeps of an Access-Reject: its identity (its length
    first, in bytes: an identity or session id may hold any character) and its session
    id, so that `ctl fraud lift --identity` takes out that identity's failed attempts
    alone (fraud_events.lua fraud_lift)."""
    return f"f:{len(identity.encode())}:{identity}|{session_id}"


def stranger_ops(plan: Plan, rules: Sequence[Rule], identity: str, session_id: str) -> None:
    """An Access-Reject of an identity no account has: counted, alerts only."""
    for rule in rules:
        if rule.kind == "failed_attempts":
            alert_only = _alert_only(rule)
            key = FK.stranger_log_key(identity)
            plan.add(alert_only, "c", key, rule.window_ms, session_id)


def scan_ops(plan: Plan, rules: Sequence[Rule], caller_ip: str, identity: str) -> None:
    """An Access-Reject of an identity no account has, from ``caller_ip``: identity_scan
    counts the distinct identities the address tried (member: the identity, so a
    retransmission or a phone retrying its one wrong user counts once). A refusing rule
    over its limit writes its deny flag (its name alone: the plan's identity is "") in
    the caller IP's value, which authorize reads (op 'p')."""
    for rule in rules:
        if rule.kind == "identity_scan":
            key = FK.ip_scan_key(caller_ip)
            plan.add(rule, "c", key, rule.window_ms, identity, extra=rule.cooldown_ms)


def _alert_only(rule: Rule) -> Rule:
    """Nothing to refuse or block without an account: the rule can only alert."""
    if rule.action is Action.ALERT or rule.shadow:
        return rule
    return dataclasses.replace(rule, action=Action.ALERT)


# -- replies --------------------------------------------------------------------------


def decode(plan: Plan | AuthPlan, reply: Sequence[Any], by_name: dict[str, Rule]) -> Verdict:
    """A fraud_check / fraud_event reply as a Verdict."""
    head = reply[0]
    if (head == b"ok" or head == "ok") and not reply[3]:  # the common answer: no rule fired
        return ALLOWED
    outcome = _s(head)
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
