"""A rule set's authorize ops, worked out once per shape of call instead of per call.

plan.check_ops and plan.ip_ops decide, rule by rule, which ops a call gets, which key
each counts in and what the script is told about it: the same for every call of a
rule set except the account, identity, caller IP, session, number and country. What
varies the op list itself is the call's shape (an identity or not, a caller IP or
not, which destination rules the number matches, a country or not, which
new_country rules exempt it): for each shape seen, a Template holds the ops as
fraud.lua reads them (JSON, up to the member), their rules and which key each uses;
a call fills in its keys and members. tests/fraud/test_compiled.py checks the plans
equal plan.check_ops' and plan.ip_ops' for calls of every shape.

A rule set with two same_destination rules is left to plan.check_ops: their ranges
may be one key for one number and two for another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chargingd.fraud import keys as FK
from chargingd.fraud import plan as P
from chargingd.fraud.destinations import Destination, number_range
from chargingd.fraud.rules import Rule
from chargingd.fraud.types import CallFacts
from chargingd.ledger.keys import account_tag

MAX_SHAPES = 256  # templates kept per rule set (a shape is a few booleans)
Shape = tuple[bool, bool, tuple[bool, ...], bool, tuple[bool, ...]]


@dataclass(frozen=True)
class Template:
    """The ops of one shape of call: which key each names (by what it is), their JSON
    up to the member, the member each takes, their rules."""

    keys: tuple[str, ...]  # "log", "id", "live", "cc", "rg", "ip": the call's keys in order
    heads: tuple[str, ...]  # fraud.lua's op JSON up to the member (ttl in place)
    members: tuple[str, ...]  # "sid", "number", "country", "acc_sid"
    kinds: tuple[str, ...]
    indexes: tuple[int, ...]
    rules: tuple[Rule | None, ...]
    may_block: bool


class Compiled:
    """The authorize ops of one rule set (its own rules and its rules per caller IP)."""

    def __init__(self, own: Sequence[Rule], per_ip: Sequence[Rule], live_ttl_ms: int) -> None:
        self.own = tuple(own)
        self.per_ip = tuple(per_ip)
        self.live_ttl_ms = live_ttl_ms
        self.dest_rules = tuple(r for r in own if r.kind == "destination")
        self.country_rules = tuple(r for r in own if r.kind == "new_country")
        ranges = [r.range_digits for r in own if r.kind == "same_destination"]
        self.range_digits = ranges[0] if ranges else 0
        self._templates: dict[Shape, Template] = {}

    @staticmethod
    def applies(own: Sequence[Rule]) -> bool:
        """Can this rule set's ops be compiled (else plan.check_ops)?"""
        return sum(r.kind == "same_destination" for r in own) <= 1

    def plan(self, now_ms: int, facts: CallFacts, dest: Destination, with_ip: bool) -> P.Plan:
        """The plan plan.check_ops (then plan.ip_ops when ``with_ip``) builds."""
        country = dest.country
        shape: Shape = (
            bool(facts.identity),
            with_ip and bool(facts.caller_ip),
            tuple(bool(dest.reasons(r.match)) for r in self.dest_rules),
            bool(country),
            tuple(country in r.exempt_countries for r in self.country_rules),
        )
        template = self._templates.get(shape)
        if template is None:
            if len(self._templates) >= MAX_SHAPES:
                self._templates.clear()
            template = self._templates[shape] = self._template(shape)
        acc, sid = facts.account_id, facts.session_id
        tag = account_tag(acc)
        names = {
            "log": f"{tag}:fr:log",
            "id": f"{tag}:fr:id:{facts.identity}",
            "live": f"{tag}:fr:live",
            "cc": f"{tag}:fr:cc",
            "ip": FK.ip_log_key(facts.caller_ip),
        }
        if "rg" in template.keys:
            names["rg"] = FK.range_key(acc, number_range(dest.number, self.range_digits))
        q = P._q
        values = {
            "sid": q(sid),
            "number": q(dest.number),
            "country": q(country),
            "acc_sid": q(f"{acc}|{sid}"),
        }
        plan = P.Plan(now_ms, facts.identity)
        plan.keys = [names[k] for k in template.keys]
        ops = [f"{h}{values[m]}]" for h, m in zip(template.heads, template.members, strict=True)]
        plan.ops = [
            (h, "", i, k) for h, i, k in zip(ops, template.indexes, template.kinds, strict=True)
        ]
        plan.rules = list(template.rules)
        plan.may_block = template.may_block
        plan.ops_json = "[" + ",".join(ops) + "]"
        return plan

    def _template(self, shape: Shape) -> Template:
        """The ops of a call of this shape, by plan.check_ops' and plan.ip_ops' rules."""
        wanted = self._wanted(shape)
        index: dict[str, int] = {}
        ttl: dict[str, int] = {}
        for _, _, key, window, _ in wanted:  # Plan.add: a key's longest ttl
            index.setdefault(key, P.FIRST_OP_KEY + len(index))
            ttl[key] = max(ttl.get(key, 0), window + P.KEY_MARGIN_MS)
        heads, seen = [], set()
        for rule, kind, key, window, _ in wanted:
            key_ttl = 0 if key in seen else ttl[key]
            seen.add(key)
            if rule is None:
                head = f'["{kind}",{index[key]},0,{window},0,"x","",{key_ttl},0,'
            else:
                name = P._q(rule.name) if rule.act in "rb" else '""'
                head = (
                    f'["{kind}",{index[key]},{rule.slot},{window},{rule.limit},"{rule.act}",'
                    f"{name},{key_ttl},0,"
                )
            heads.append(head)
        return Template(
            keys=tuple(index),
            heads=tuple(heads),
            members=tuple(w[4] for w in wanted),
            kinds=tuple(w[1] for w in wanted),
            indexes=tuple(index[w[2]] for w in wanted),
            rules=tuple(w[0] for w in wanted),
            may_block=any(w[0] is not None and w[0].act == "b" for w in wanted),
        )

    def _wanted(self, shape: Shape) -> list[tuple[Rule | None, str, str, int, str]]:
        """(rule or None, kind, key, window, member) of each op, as check_ops adds them."""
        has_identity, has_ip, dest_hits, has_country, exempt = shape
        dest_hit = dict(zip(self.dest_rules, dest_hits, strict=True))
        exempt_of = dict(zip(self.country_rules, exempt, strict=True))
        wanted: list[tuple[Rule | None, str, str, int, str]] = []
        for rule in self.own:
            kind = rule.kind
            if kind == "velocity" and rule.scope == "account":
                wanted.append((rule, "c", "log", rule.window_ms, "sid"))
            elif kind == "velocity" and rule.scope == "identity" and has_identity:
                wanted.append((rule, "c", "id", rule.window_ms, "sid"))
            elif kind == "concurrent":
                wanted.append((rule, "l", "live", self.live_ttl_ms, "sid"))
            elif kind == "destination" and dest_hit[rule]:
                wanted.append((rule, "c", "log", rule.window_ms, "sid"))
            elif kind == "new_country" and has_country:
                learner = None if exempt_of[rule] else rule
                wanted.append((learner, "n", "cc", rule.window_ms, "country"))
            elif kind == "same_destination":
                wanted.append((rule, "c", "rg", rule.window_ms, "sid"))
            elif kind == "distinct_destinations":
                wanted.append((rule, "d", "log", rule.window_ms, "number"))
        if has_ip:
            for rule in self.per_ip:
                if rule.kind == "velocity" and rule.scope == "caller_ip":
                    wanted.append((rule, "c", "ip", rule.window_ms, "acc_sid"))
        return wanted
