"""A rule set's authorize ops, worked out once per shape of call instead of per call.

Which ops a call gets depends on its rule set and its shape only (an identity or not,
a caller IP or not, which destination rules the number matches, a country or not,
which new_country rules exempt it): the account, identity, session, number and
country travel apart (fraud.lua builds the counter ids and ranges from them). For
each shape seen, a Template holds the ops as fraud.lua reads them (one msgpack array,
sent as it is: the script decodes it with cmsgpack, about 4 us less than the same
ops as JSON through cjson), their rules and whether one may block; a call only
picks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from chargingd.fraud import plan as P
from chargingd.fraud.destinations import Destination
from chargingd.fraud.rules import Rule
from chargingd.fraud.types import CallFacts

MAX_SHAPES = 256  # templates kept per rule set (a shape is a few booleans)
MAX_KEYS = 4096  # (identity, caller IP, country, type, high-risk flags) -> its template
Shape = tuple[bool, bool, tuple[bool, ...], bool, tuple[bool, ...]]
ACCOUNT, CALLER_IP = 1, 5  # the KEYS index of the value an op counts in (fraud.lua)


@dataclass(frozen=True)
class Template:
    """The ops of one shape of call: fraud.lua's JSON, their rules."""

    ops: bytes  # fraud.lua's flat msgpack array, 8 fields an op (compiled.counter_id's)
    rules: tuple[Rule | None, ...]
    may_block: bool
    learns: bool
    ttl_ms: int  # how long the account's value must live at least (its ops' longest)
    ip_ttl_ms: int  # the caller IP's
    # The plan of every call of this shape (one that may block: see Compiled.plan), built
    # with it (a functools.cached_property is no cache compiled: mypyc's classes have no
    # instance __dict__, a new plan came on every access)
    plan: P.AuthPlan


def counter_id(kind: str, slot: int, window_ms: int) -> str | int:
    """What fraud.lua names an op's counter by in the account's value, built here once
    instead of by the script on every call (a number's text costs Lua ~0.2 us): SLOT/WINDOW_S
    for the counts ('c', 'i', 'g': the script adds the identity or range), SLOT for the
    distinct numbers ('d'); the slot itself for the rest (unused). Equal to the text Lua
    makes of ``slot .. '/' .. (win / 1000)`` (windows are whole seconds)."""
    if kind in ("c", "i", "g"):
        assert window_ms % 1000 == 0, window_ms
        return f"{slot}/{window_ms // 1000}"
    if kind == "d":
        return str(slot)
    return slot


class Compiled:
    """The authorize ops of one rule set (its own rules and its rules per caller IP)."""

    def __init__(self, own: Sequence[Rule], per_ip: Sequence[Rule], live_ttl_ms: int) -> None:
        self.own = tuple(own)
        self.per_ip = tuple(per_ip)
        self.live_ttl_ms = live_ttl_ms
        self.dest_rules = tuple(r for r in own if r.kind == "destination")
        self.country_rules = tuple(r for r in own if r.kind == "new_country")
        self._templates: dict[Shape, Template] = {}
        self._by_call: dict[tuple[Any, ...], Template] = {}

    def plan(self, now_ms: int, facts: CallFacts, dest: Destination, with_ip: bool) -> P.AuthPlan:
        """This call's ops (per caller IP too when ``with_ip``). A call's shape follows
        from what the destination is (country, type, high-risk flags): the template is
        found by those, worked out once."""
        key = (
            bool(facts.identity),
            with_ip and bool(facts.caller_ip),
            dest.country,
            dest.kind,
            dest.high_risk_country,
            dest.high_risk_prefix,
        )
        t = self._by_call.get(key)
        if t is None:
            if len(self._by_call) >= MAX_KEYS:  # the oldest goes (not all at once)
                del self._by_call[next(iter(self._by_call))]
            t = self._by_call[key] = self._shaped(key[0], key[1], dest)
        if t.may_block:  # its block step is the call's own (with_block fills it in)
            return P.AuthPlan(now_ms, t.rules, t.ops, True, t.learns, t.ttl_ms, t.ip_ttl_ms)
        return t.plan

    def _shaped(self, identity: bool, ip: bool, dest: Destination) -> Template:
        country = dest.country
        shape: Shape = (
            identity,
            ip,
            tuple(bool(dest.reasons(r.match)) for r in self.dest_rules),
            bool(country),
            tuple(country in r.exempt_countries for r in self.country_rules),
        )
        t = self._templates.get(shape)
        if t is None:
            if len(self._templates) >= MAX_SHAPES:
                del self._templates[next(iter(self._templates))]
            t = self._templates[shape] = self.template(shape)
        return t

    def template(self, shape: Shape) -> Template:
        """The ops of a call of this shape, rule by rule."""
        ops, rules = [], []
        ttl = {ACCOUNT: P.KEY_MARGIN_MS, CALLER_IP: P.KEY_MARGIN_MS}
        for rule, kind, key, window, extra in self._wanted(shape):
            ttl[key] = max(ttl[key], window + P.KEY_MARGIN_MS)
            if rule is None:
                ops.append([kind, key, 0, window, 0, "x", "", extra])
            elif kind == "p":  # the rule's deny flag in the caller IP's value: 1 or 0
                ops.append([kind, key, rule.name, window, 0, rule.act, rule.name, extra])
            else:
                name = rule.name if rule.act in "rb" else ""  # the script names only these
                ops.append([kind, key, counter_id(kind, rule.slot, window), window, rule.limit,
                            rule.act, name, extra])  # fmt: skip
            rules.append(rule)
        packed: bytes = msgpack.packb([field for op in ops for field in op])
        kept = tuple(rules)
        may_block = any(r is not None and r.act == "b" for r in rules)
        learns = any(op[0] == "n" for op in ops)
        return Template(
            ops=packed,
            rules=kept,
            may_block=may_block,
            learns=learns,
            ttl_ms=ttl[ACCOUNT],
            ip_ttl_ms=ttl[CALLER_IP],
            plan=P.AuthPlan(0, kept, packed, may_block, learns, ttl[ACCOUNT], ttl[CALLER_IP]),
        )

    def _wanted(self, shape: Shape) -> list[tuple[Rule | None, str, int, int, int]]:
        """(rule or None, kind, value, window, extra) of each op."""
        has_identity, has_ip, dest_hits, has_country, exempt = shape
        dest_hit = dict(zip(self.dest_rules, dest_hits, strict=True))
        exempt_of = dict(zip(self.country_rules, exempt, strict=True))
        wanted: list[tuple[Rule | None, str, int, int, int]] = []
        for rule in self.own:
            kind = rule.kind
            if kind == "velocity" and rule.scope == "account":
                wanted.append((rule, "c", ACCOUNT, rule.window_ms, 0))
            elif kind == "velocity" and rule.scope == "identity" and has_identity:
                wanted.append((rule, "i", ACCOUNT, rule.window_ms, 0))
            elif kind == "concurrent":
                wanted.append((rule, "l", ACCOUNT, self.live_ttl_ms, 0))
            elif kind == "destination" and dest_hit[rule]:
                wanted.append((rule, "c", ACCOUNT, rule.window_ms, 0))
            elif kind == "new_country" and has_country:
                learner = None if exempt_of[rule] else rule
                wanted.append((learner, "n", ACCOUNT, rule.window_ms, 0))
            elif kind == "same_destination":
                wanted.append((rule, "g", ACCOUNT, rule.window_ms, rule.range_digits))
            elif kind == "distinct_destinations":
                wanted.append((rule, "d", ACCOUNT, rule.window_ms, 0))
        if has_ip:
            for rule in self.per_ip:
                if rule.kind == "identity_scan":  # refusing (plan.refuses_caller_ip): its
                    # deny flag, read, never written (window 0: no ttl of its own)
                    wanted.append((rule, "p", CALLER_IP, 0, 0))
                else:
                    wanted.append((rule, "c", CALLER_IP, rule.window_ms, 0))
        return wanted
