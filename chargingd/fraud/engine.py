"""The fraud rules at work: evaluate an authorize, count call events, block and unblock.

``check`` runs the authorize rules of one call in one script (lua/check.lua) sent in
the Ledger's per-tick pipeline; the sessions' fused authorize script can run the same
Lua in its own round trip instead (``prepare`` gives it the keys and arguments, and
``decided`` takes the reply). ``cdr`` and ``refused`` count call events
(lua/event.lua). A rule that blocks changes the account's status through the ledger's
own status script, in the script that decided it; the cut of the account's live calls
and the alerts follow here, off the request path (never awaited by authorize).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import resources
from typing import Any, Final

import msgpack

from chargingd.alerts import Alerts
from chargingd.billing.cdr import CDR
from chargingd.core.chain import chained
from chargingd.core.config import DEFAULT_PLAN_ID
from chargingd.core.config.fraud import DEFAULT_MATCH, FraudConfig
from chargingd.core.ratelog import RateLimitedLog
from chargingd.fraud import keys as FK
from chargingd.fraud import plan as P
from chargingd.fraud.compiled import Compiled, counter_id
from chargingd.fraud.destinations import Classifier, Destination
from chargingd.fraud.local import NB, LocalRules, Outcome, _bucket
from chargingd.fraud.report import alert_for, rule_incident_key
from chargingd.fraud.rules import Action, Rule, RuleBook
from chargingd.fraud.types import ALLOWED, CallFacts, Decision, Verdict
from chargingd.ledger import Account, AccountNotActive, Ledger, Status, UnknownAccount
from chargingd.ledger.steps import fused_source

log = logging.getLogger("chargingd.fraud")

UNBLOCK_FROM = ("blocked/fraud",)
VALUE_KEYS: Final = 65_536  # accounts whose value's key Fraud keeps built
_UNREADABLE = "fraud rules evaluated in Lua: a value could not be read here"
_FETCH_FAILED = "fraud rules evaluated in Lua: their values could not be read first"
# A rule set as authorize uses it (Fraud._split): its own rules, its rules per caller
# IP, whether it reads deny flags, its compiled ops, its per-IP ops alone
Split = tuple[tuple[Rule, ...], tuple[Rule, ...], bool, Compiled, Compiled]
CutAccount = Callable[[str], Awaitable[int]]


class Prepared:
    """One authorize's fraud arguments, for a caller that runs fraud_check in its own
    script: ``keys``/``argv`` as fraud.lua documents them (check.lua, admit.lua); the
    fused authorize takes only what it does not have already (``add_fused``). Built
    per authorize: a plain class with its own __init__ (a dataclass's is interpreted
    even compiled), holding the pieces: the lists of either layout are built when
    asked (the fused call never builds check.lua's)."""

    __slots__ = (
        "block_keys",
        "destination",
        "engine",
        "facts",
        "fetch",
        "ip_value",
        "learn",
        "local",
        "now_ms",
        "outcome",
        "plan",
        "record_key",
        "refusal_ttl_ms",
        "retried",
        "rules",
        "value",
    )

    def __init__(
        self,
        facts: CallFacts,
        destination: Destination,
        plan: P.AuthPlan,
        rules: tuple[Rule, ...],
        now_ms: int,
        value: str,  # the account's value (FK.value_key)
        ip_value: str,  # the caller IP's value; ``value`` when no per-IP op counts
        block_keys: list[str],  # the block step's two (P.with_block), [] none may block
        record_key: Callable[[str, str], str],  # Fraud.record_key (check.lua's KEYS[4])
        refusal_ttl_ms: int,  # check.lua's ARGV[7]
        learn: bool = True,  # a country to learn once granted (check.lua: not known lately)
    ) -> None:
        self.facts = facts
        self.destination = destination
        self.plan = plan
        self.rules = rules
        self.now_ms = now_ms
        self.value = value
        self.ip_value = ip_value
        self.block_keys = block_keys
        self.record_key = record_key
        self.refusal_ttl_ms = refusal_ttl_ms
        self.learn = learn
        # the rules evaluated by this process (local.py; None: in Redis's Lua), and
        # their outcome for this call (None: not evaluated here, the values not known)
        self.local: LocalRules | None = None
        self.outcome: Outcome | None = None
        self.fetch = False  # a value not known here: Fraud.fetch reads it first
        self.engine: Fraud | None = None  # set by Fraud.localize: evaluates it again
        self.retried = False  # evaluated again once after finding the values moved

    def learnt(self, told: Sequence[Any]) -> None:
        """What the rules' values are after the script that ran them in Lua (sent with
        ARGV[1] + 100: session_authorize_fraud.lua), kept for this process's next calls."""
        local = self.local
        assert local is not None
        local.counters["lua"] += 1
        local.learnt(self.value, told[0])
        if self.ip_value != self.value:
            local.learnt(self.ip_value, told[1])

    def decided_here(self, written: bool) -> None:
        """The plain authorize ran with this process's evaluation (outcome): its values
        written (the call granted), or left as they were (an account found inactive or
        changed; a retransmission goes to Lua: fused._to_lua): the bytes it started from
        are what is stored."""
        local, outcome = self.local, self.outcome
        assert local is not None and outcome is not None
        if written:
            local.counters["local"] += 1
            return
        local.values.put(self.value, outcome.expect)
        if outcome.ip_expect is not None:
            local.values.put(self.ip_value, outcome.ip_expect)

    async def fetched(self) -> None:
        """Read the values ``Fraud.localize`` did not know, then evaluate the call here
        (Fraud.fetch)."""
        engine = self.engine
        if engine is not None:
            await engine.fetch(self)

    def moved(self, told: Sequence[Any]) -> bool:
        """The plain authorize found the values moved (another daemon or worker, a CDR's
        event, an unblock) and said what is stored: kept, and the call evaluated again
        here on them, once (True: decided here, the plain authorize again); moved a
        second time, or not decided here: the rules' Lua decides it (False)."""
        local, engine = self.local, self.engine
        assert local is not None
        local.counters["moved"] += 1
        if self.retried or engine is None or len(told) < 2:
            self.outcome = None
            return False
        self.retried = True
        local.learnt(self.value, told[0])
        if self.ip_value != self.value:
            local.learnt(self.ip_value, told[1])
        engine._evaluate_here(self, local)  # sets self.outcome (None: not decided here)
        return self.outcome is not None

    def to_lua(self, moved: bool) -> None:
        """The plain authorize did not write this process's evaluation: the values had
        moved (another writer), or the ledger refused the call (the rules' bookkeeping
        of a refused call is fraud.lua's): the call goes to the rules' Lua, which says
        what the values are after it."""
        local = self.local
        assert local is not None
        if moved:
            local.counters["moved"] += 1
        self.outcome = None

    def unknown(self) -> None:
        """The script's outcome is not known (an error, a lost reply): the values too."""
        if self.local is not None:
            self.local.values.drop(self.value)
            self.local.values.drop(self.ip_value)

    @property
    def keys(self) -> list[str]:
        """fraud.lua's KEYS (check.lua): the value, the block step's two (the value
        twice when none may block), the call's record, the caller IP's value, the
        call's remembered answer."""
        facts, value = self.facts, self.value
        block = self.block_keys or [value, value]
        record = self.record_key(facts.account_id, facts.session_id)
        return [
            value,
            *block,
            record,
            self.ip_value,
            FK.answer_key(facts.account_id, facts.session_id),
        ]

    @property
    def argv(self) -> list[Any]:
        """fraud.lua's ARGV (check.lua)."""
        facts, plan, dest = self.facts, self.plan, self.destination
        # (dest.number is facts.callee; dest.member its P.member_hash, cached with it)
        argv: list[Any] = [self.now_ms, facts.identity, facts.session_id, plan.ops]
        argv += [facts.callee, dest.country, self.refusal_ttl_ms, plan.ttl_ms, plan.ip_ttl_ms]
        argv += [facts.client, dest.member, *plan.block_argv]
        return argv

    def add_fused(self, keys: list[str], argv: list[Any]) -> None:
        """Append the rules' KEYS and ARGV that session_authorize_fraud.lua does not have
        already. KEYS: the value, the answer key, the caller IP's value (when it is not
        the account's); the block step's two are the reserve's (the account's acct and
        audit keys). ARGV: identity, ops, number, country, the number's hash, now, then
        the block step's when a rule may block (the session id is the reserve's, the
        refusal's ttl REFUSAL_TTL, the values' ttls worked out from the ops by the
        script: fraud.lua's fraud_ttls; fraud.lua's 10th unused)."""
        facts, plan, dest = self.facts, self.plan, self.destination
        value = self.value
        keys.append(value)
        keys.append(FK.answer_key(facts.account_id, facts.session_id))
        if self.ip_value != value:
            keys.append(self.ip_value)
        argv += [facts.identity, plan.ops, facts.callee, dest.country, dest.member, self.now_ms]
        if plan.block_argv:
            argv += plan.block_argv


# Where fraud.lua's authorize functions read their KEYS and ARGV (its $F_ places): as
# check.lua's call (Prepared.keys, Prepared.argv), the event rules' block step and the
# caller IP's own script hold them; the fused authorize's call has its own
# (sessions/fused.py FRAUD_LAYOUT). Key places: the account's value, the block step's
# acct and audit keys, the call's record, the caller IP's value, the call's answer key;
# ARGV places: now, identity, session id, ops, number, country, the refusal's ttl, the
# two values' ttls, the number's hash, the block step's first.
LAYOUT: Final = {
    "VALUE": 1, "ACCT": 2, "AUDIT": 3, "RECORD": 4, "IP": 5, "ANSWER": 6,
    "NOW": 1, "IDENTITY": 2, "SID": 3, "OPS": 4, "NUMBER": 5, "COUNTRY": 6,
    "REFUSAL": 7, "TTL": 8, "IP_TTL": 9, "HASH": 11, "BLOCK": 12,
}  # fmt: skip


# fraud.lua's line after the helpers of the value (what the scripts off the authorize path
# use): fragment(value_only=True) is the file up to it.
VALUE_END = "-- @@ END OF THE VALUE'S HELPERS @@"


def fragment(layout: dict[str, int] = LAYOUT, *, value_only: bool = False) -> str:
    """lua/fraud.lua: fraud_seen, fraud_check, fraud_admit, fraud_save, fraud_event... as
    Lua functions (the ledger's status.lua must be embedded ahead of it:
    ledger.steps.fused_source), its authorize functions reading their KEYS and ARGV at
    ``layout``'s places (written in as numbers), after plan.KEY_MARGIN_MS as its Lua
    constant (fraud_ttls: the values' ttls worked out from the ops as compiled.py works
    them out). ``value_only``: the helpers of the value alone (up to VALUE_END)."""
    text = (resources.files("chargingd.fraud") / "lua" / "fraud.lua").read_text()
    if value_only:
        text = text[: text.index(VALUE_END)]
    missing = set(LAYOUT) - set(layout)
    if missing:
        raise ValueError(f"fraud.lua layout without {sorted(missing)}")
    text = re.sub(r"\$F_([A-Z_]+)", lambda m: str(int(layout[m.group(1)])), text)
    return f"local KEY_MARGIN_MS = {int(P.KEY_MARGIN_MS)}\n{text}"


def events_fragment() -> str:
    """lua/fraud_events.lua: fraud_note, fraud_unblock, fraud_lift and fraud_event (after
    fragment(value_only=True): an EVALSHA defines every function of its script again on
    each run, so these scripts leave out the authorize rules' part of fraud.lua)."""
    return (resources.files("chargingd.fraud") / "lua" / "fraud_events.lua").read_text()


class Fraud:
    """The fraud rules of one process; state in Redis, so every daemon sees the same."""

    def __init__(
        self,
        cfg: FraudConfig,
        *,
        redis: Any,
        ledger: Ledger,
        alerts: Alerts | None,
        clock_ms: Callable[[], int],
        live_ttl_s: int,
        single_redis: bool,
    ) -> None:
        """``live_ttl_s``: how long a call counts as live when its CDR never comes (the
        longest a session lives); ``single_redis``: one script may name keys of any
        slot (else per-IP counts go in a script of their own)."""
        self.cfg = cfg
        self.redis = redis
        self.ledger = ledger
        self.alerts = alerts
        self.clock_ms = clock_ms
        self.live_ttl_ms = live_ttl_s * 1000
        self.single_redis = single_redis
        self.book = RuleBook(cfg)
        # shared_destination rules (counted per number from the CDRs, across accounts)
        self._shared = tuple(r for r in self.book.base if r.kind == "shared_destination")
        self.classifier = Classifier(cfg.high_risk_countries, cfg.high_risk_prefixes, matched(cfg))
        self.cut_account: CutAccount | None = None  # set by sessions: cut live calls
        # set by sessions: the key of a call's session record (a call the ledger granted:
        # its repeats are not counted again); without, none is known
        self.record_key: Callable[[str, str], str] = FK.no_record_key
        longest = max((r.window_ms for r in self.book.base), default=0)
        self.value_ttl_ms = max(longest, self.live_ttl_ms) + P.KEY_MARGIN_MS
        lua = resources.files("chargingd.fraud") / "lua"

        def load(name: str, *, events: bool = False, started: str = "") -> Any:
            # off the authorize path: the value's helpers alone, then the events' Lua;
            # ``started``: Lua setting fr_started (Fraud.records)
            body = f"{fragment(value_only=True)}\n{events_fragment()}" if events else fragment()
            body += "\n" + started + (lua / f"{name}.lua").read_text()
            return redis.register_script(fused_source(body, ("status",)))

        self._load = load
        self._check = load("check")
        self._ip_script = load("check_ip")
        self._admit = load("admit")
        self._event = load("event", events=True)
        self._note = load("note", events=True)
        self._unblock = load("unblock", events=True)
        self._lift = load("lift", events=True)
        self._tasks: set[asyncio.Task[Any]] = set()
        # rule set (by identity: RuleBook keeps each) -> P.split of it
        self._splits: dict[int, tuple[tuple[Rule, ...], Split]] = {}
        # the last rule set's split: every account has the same set unless overridden
        self._last_rules: tuple[Rule, ...] = ()
        self._last_split: Split | None = None
        # account id -> its value's key (FK.value_key), the oldest dropped first
        self._value_keys: dict[str, str] = {}
        self.counters = {"checked": 0, "refused": 0, "blocked": 0, "events": 0, "fired": 0}
        # the authorize rules evaluated here, on the values kept (the fused authorize only)
        self.local = LocalRules(cfg.local_values) if cfg.local_values > 0 else None
        self._unreadable = RateLimitedLog(log)  # a line per interval, not per call

    def records(self, record_key: Callable[[str, str], str], started: str) -> None:
        """Set by sessions: the key of a call's session record (a call the ledger
        granted: its repeats are not counted again), and ``started``, Lua that sets
        fraud.lua's fr_started in check.lua's layout (which records are no authorize's:
        a call its accounting Start adopted, whose Access-Request came after it, is new
        to the rules)."""
        self.record_key = record_key
        self._check = self._load("check", started=started)

    async def load_scripts(self) -> None:
        scripts = (self._check, self._ip_script, self._admit, self._event, self._note)
        for script in (*scripts, self._unblock, self._lift):
            await self.redis.script_load(script.script)

    # -- authorize ----------------------------------------------------------------------

    def prepare(self, facts: CallFacts, *, with_ip: bool = True) -> Prepared | None:
        """The arguments of this call's authorize rules; None when no rule needs Redis."""
        rules = self.book.rules_for(facts.account_id, facts.tariff or DEFAULT_PLAN_ID)
        _, per_ip, must_check, compiled, _ = self._split(rules)
        dest = self.classifier.classify(facts.callee)
        now = self.clock_ms()
        ip = with_ip and bool(per_ip) and bool(facts.caller_ip)
        plan = compiled.plan(now, facts, dest, ip)
        # Per-IP rules in their own script (Redis Cluster) still need this one first:
        # it tells a retransmission (fraud_seen), which they must not count again.
        ip_apart = not with_ip and bool(per_ip) and bool(facts.caller_ip)
        if not plan.rules and not must_check and not ip_apart:
            return None
        acc = facts.account_id
        value = self._value_key(acc)
        block = P.with_block(plan, self.ledger.steps, acc) if plan.may_block else []
        ip_value = FK.ip_value_key(facts.caller_ip) if ip else value
        refusal_ttl = self.ledger.steps.refusal_ttl_ms
        return Prepared(
            facts, dest, plan, rules, now, value, ip_value, block, self.record_key, refusal_ttl
        )

    def _value_key(self, account_id: str) -> str:
        """FK.value_key, kept per account (a look-up where building it cost ~1k
        instructions per authorize); up to VALUE_KEYS, the oldest dropped first."""
        keys = self._value_keys
        key = keys.get(account_id)
        if key is None:
            if len(keys) >= VALUE_KEYS:  # the oldest goes (not all at once)
                del keys[next(iter(keys))]
            key = keys[account_id] = FK.value_key(account_id)
        return key

    def status(self) -> dict[str, int]:
        """The counters `ctl status` shows (summed over the workers): the rules' own, and
        where the authorize rules were decided (here, or in Redis's Lua: the values not
        known here, changed by another writer, a refusal), how many values are kept, and
        how many calls here fraud/_local.c evaluated."""
        out = dict(self.counters)
        local = self.local
        if local is not None:
            out["decided_here"] = local.counters["local"]
            out["decided_in_lua"] = local.counters["lua"]
            out["moved_elsewhere"] = local.counters["moved"]
            out["values_kept"] = len(local.values)
            out["values_fetched"] = local.counters["fetched"]  # read before a first call
            out["evaluated_in_c"] = local.by_c  # fraud/_local.c (0: not built, or declined)
        return out

    def localize(self, prepared: Prepared) -> None:
        """Evaluate the call's rules here when this process knows its values (the fused
        authorize, single Redis: session_authorize_fraud.lua writes the outcome only
        while they are still stored; docs/fraud-cost.md "Seventeenth round"). A value it does
        not know yet: ``prepared.fetch`` set, nothing evaluated (``fetch`` reads it)."""
        local = self.local
        if local is None:
            return
        prepared.local = local
        prepared.engine = self
        known = local.values.known  # (its dict: two look-ups, not two method calls)
        if prepared.value not in known or prepared.ip_value not in known:
            prepared.fetch = True
            return
        self._evaluate_here(prepared, local)

    async def fetch(self, prepared: Prepared) -> None:
        """The values of a call ``localize`` did not know, read (one MGET in this tick's
        pipeline), then the call evaluated here: a GET costs Redis ~5k instructions where
        the rules in Lua cost ~160k (the account's first call in this process: after each
        start, and for accounts past ``local_values``). A value another call of this
        process learnt meanwhile is kept (its evaluation is the newer). Redis failing:
        nothing learnt, the rules in Lua decide the call (and say what is stored)."""
        local = prepared.local
        if local is None or not prepared.fetch:
            return
        prepared.fetch = False
        values = local.values
        keys = [
            k for k in dict.fromkeys((prepared.value, prepared.ip_value)) if values.raw(k) is None
        ]
        if keys:
            try:
                got = await self._send_command(("MGET", *keys))
            except Exception as exc:  # the rules in Lua decide it, as before
                self._unreadable.failure(_FETCH_FAILED, exc)
                return
            local.counters["fetched"] += len(keys)
            for key, raw in zip(keys, got, strict=True):
                if values.raw(key) is None:  # another call's evaluation is the newer
                    local.learnt(key, raw)
        self._evaluate_here(prepared, local)

    def _evaluate_here(self, prepared: Prepared, local: LocalRules) -> None:
        facts, dest = prepared.facts, prepared.destination
        try:
            prepared.outcome = local.evaluate(
                prepared.plan,
                prepared.now_ms,
                prepared.value,
                prepared.ip_value,
                facts.identity,
                facts.session_id,
                facts.callee,
                dest.country,
                dest.member,
            )
        except Exception as exc:  # a value this port cannot read: Lua decides, and says it
            self._unreadable.failure(_UNREADABLE, exc, trace=True)
            prepared.unknown()
            prepared.outcome = None

    def _split(self, rules: tuple[Rule, ...]) -> Split:
        """P.split of a rule set, its compiled ops and its per-IP ops alone (Redis
        Cluster), worked out once per set (authorize runs it every call)."""
        last = self._last_split
        if rules is self._last_rules and last is not None:
            return last
        found = self._splits.get(id(rules))
        if found is None or found[0] is not rules:
            if len(self._splits) >= 10_000:  # the oldest goes (not all at once)
                del self._splits[next(iter(self._splits))]
            own, per_ip, must_check = P.split(rules)
            compiled = Compiled(own, per_ip, self.live_ttl_ms)
            ip_alone = Compiled((), per_ip, self.live_ttl_ms)
            found = self._splits[id(rules)] = (rules, (own, per_ip, must_check, compiled, ip_alone))
        self._last_rules = rules
        self._last_split = found[1]
        return found[1]

    async def check(self, facts: CallFacts) -> Verdict:
        """Evaluate the authorize rules of one call (counting it) and admit it when they
        allow it (sessions, with a reserve in between: ``evaluate``, then ``admit``)."""
        verdict, prepared = await self.evaluate(facts)
        if verdict.allowed and not verdict.again and prepared is not None:
            await self.admit(prepared)
        return verdict

    async def evaluate(self, facts: CallFacts) -> tuple[Verdict, Prepared | None]:
        """Evaluate the authorize rules of one call (counting it; live when allowed:
        ``forget`` it if it is not granted after all), and its arguments for ``admit``
        once it is granted. A call already answered (a retransmission) is not counted
        again: Verdict.again (fraud.lua fraud_seen)."""
        prepared = self.prepare(facts, with_ip=self.single_redis)
        verdict = ALLOWED
        if prepared is not None:
            reply = await self._send(self._check, prepared.keys, prepared.argv)
            verdict = self.decided(prepared, reply)
            if len(reply) > 5 and not int(reply[5]):  # its country is known: no admit
                prepared.learn = False  # (this call's own)
        if self.single_redis or verdict.again or not verdict.allowed:
            return verdict, prepared
        # Redis Cluster: the per-IP counts in their own slot, once the account's check
        # found the call new; their refusal is remembered in the account's slot.
        ip_verdict = await self._check_ip(facts)
        if not ip_verdict.allowed and ip_verdict.rule is not None:
            how = "block" if ip_verdict.decision is Decision.BLOCK else "refuse"
            await self._note_call(
                facts.account_id, facts.session_id, f"{how}|{ip_verdict.rule.name}"
            )
            return ip_verdict, prepared
        return verdict, prepared

    async def admit(self, prepared: Prepared) -> None:
        """The call ``evaluate`` allowed was granted: its country known for
        ``new_country`` (the fused script learns it after its reserve, in its own run;
        ``evaluate`` counted the call live already)."""
        if prepared.learn and prepared.plan.learns:
            await self._send(self._admit, prepared.keys, prepared.argv)

    def decided(self, prepared: Prepared, reply: Sequence[Any]) -> Verdict:
        """The verdict of a fraud_check reply; alerts and the cut follow in the
        background."""
        head = reply[0]
        if (head == b"ok" or head == "ok") and not reply[3]:  # the common answer
            self.counters["checked"] += 1  # nothing fired: no alert, no cut
            return ALLOWED
        deny = reply[0] in (b"deny", "deny", b"again", "again")  # the rule is named
        by_name = {r.name: r for r in prepared.rules} if deny else {}
        verdict = P.decode(prepared.plan, reply, by_name)
        self.counters["checked"] += 1
        self._after(verdict, prepared.facts.account_id, prepared.facts, prepared.destination)
        return verdict

    async def _check_ip(self, facts: CallFacts) -> Verdict:
        """Redis Cluster: the per-IP counts in their own slot; a block there blocks the
        account through the Ledger."""
        rules = self.book.rules_for(facts.account_id, facts.tariff or DEFAULT_PLAN_ID)
        ip_alone = self._split(rules)[4]
        dest = self.classifier.classify(facts.callee)
        now = self.clock_ms()
        plan = ip_alone.plan(now, facts, dest, True)
        if not plan.rules:
            return ALLOWED
        keys = [FK.ip_value_key(facts.caller_ip)] * 6
        argv = [now, facts.identity, facts.session_id, plan.ops, dest.number, ""]
        argv += [self.ledger.steps.refusal_ttl_ms, plan.ip_ttl_ms, plan.ip_ttl_ms, 0, 0]
        reply = await self._send(self._ip_script, keys, argv)
        verdict = P.decode(plan, reply, {r.name: r for r in plan.rules if r is not None})
        if verdict.decision is Decision.BLOCK and verdict.rule is not None:
            verdict = await self._block_by_ledger(facts.account_id, verdict)
        self._after(verdict, facts.account_id, facts, dest)
        return verdict

    async def _block_by_ledger(self, account_id: str, verdict: Verdict) -> Verdict:
        rule = verdict.rule
        assert rule is not None
        before = await self.ledger.get_account(account_id)
        after = await self.ledger.set_status(
            account_id,
            Status.BLOCKED,
            who="fraud",
            why=f"fraud rule {rule.name}",
            reason="fraud",
            only_from=P.BLOCK_FROM,
        )
        now = before.status is Status.ACTIVE and after.status is Status.BLOCKED
        return Verdict(Decision.BLOCK, rule, verdict.fired, blocked_now=now)

    async def forget(self, account_id: str, session_id: str) -> None:
        """A call ``check`` admitted was not granted after all: not live (and its
        repeats go to the ledger, which refused it)."""
        await self._note_call(account_id, session_id, "forget")

    async def _note_call(self, account_id: str, session_id: str, what: str) -> None:
        value = FK.value_key(account_id)
        keys = [value, FK.answer_key(account_id, session_id)]
        argv = [self.clock_ms(), session_id, what, self.ledger.steps.refusal_ttl_ms]
        argv += [self.value_ttl_ms]
        if self.local is None:
            await self._send(self._note, keys, argv)
            return
        # the value's bytes after it: the account's next call decided here (local.py)
        self.local.learnt(value, await self._send(self._note, keys, [*argv, 1]))

    # -- call events ----------------------------------------------------------------------

    async def cdr(self, cdr: CDR, event_id: str) -> Verdict:
        """Count one CDR (once per call and revision, whatever re-delivers it: not by
        its stream ``event_id``): the call is no longer live; spend, short calls,
        unanswered calls and the answer ratio (a corrected revision: what changed)."""
        if not cdr.account_id:
            return ALLOWED
        # spend caps in the account's currency (the CDR's): 50 EUR is not 50 JPY
        rules = self.book.in_currency(cdr.account_id, cdr.tariff, cdr.currency)
        counted_as = P.cdr_event_id(cdr) if cdr.call_id else f"cdr:{event_id}"
        plan = P.Plan(self.clock_ms(), "", event_id=counted_as, currency=cdr.currency)
        P.cdr_ops(plan, rules, cdr)
        verdict = await self._event_verdict(plan, cdr.account_id, rules)
        self._after(verdict, cdr.account_id, None, None, call=cdr.call_id, currency=cdr.currency)
        if self._shared and cdr.callee:
            await self._shared_destination(cdr)
        return verdict

    async def _shared_destination(self, cdr: CDR) -> None:
        """shared_destination: the CDR's account among those that called its number (range)
        within the window, when the number is risky by the rule's match (a Wangiri callback
        wave: many customers calling back, once each, the premium number that rang them).
        Per number, off the account's slot: its own script; the base rules (one number,
        many accounts: no override applies). Alerts only, one incident per rule and range."""
        dest = self.classifier.classify(cdr.callee)
        for rule in self._shared:
            if not dest.reasons(rule.match):
                continue
            number = dest.number
            cut = max(len(number) - rule.range_digits, 2)
            subject = number[:cut]
            plan = P.Plan(self.clock_ms(), "")
            key = FK.destination_callers_key(subject)
            plan.add(rule, "c", key, rule.window_ms, cdr.account_id)
            value = FK.destination_value_key(subject)
            keys = P.head_keys(plan, value, [value, value])
            reply = await self._send(self._event, keys, plan.argv())
            verdict = P.decode(plan, reply, {})
            self._after(verdict, subject, None, dest, call=cdr.call_id)

    async def refused(
        self,
        account_id: str | None,
        identity: str,
        session_id: str,
        tariff: str = "",
        caller_ip: str = "",
        tried: Sequence[str] = (),
    ) -> Verdict:
        """Count one Access-Reject (failed_attempts): of an account (a refusing rule
        refuses this identity's calls for its cooldown), with its tariff's overrides as
        authorize and the CDRs take them ("" = the default plan's), or of an identity no
        account has (alerts only; and identity_scan of its ``caller_ip``: ``scan``, by
        every identity its lookup ``tried``, else ``identity``)."""
        now = self.clock_ms()
        if account_id is None:
            if not identity:
                return ALLOWED
            if caller_ip:
                # all of them: a scan whose first lookup's identity is fixed (a lookup
                # by ANI first, the scanner's one calling number) and whose next varies
                # (the extensions tried) is a scan of distinct identities all the same
                await self.scan(caller_ip, "\n".join(tried) or identity, session_id)
            rules = self.book.base
            plan = P.Plan(now, identity)
            P.stranger_ops(plan, rules, identity, session_id)
            if not plan.ops:
                return ALLOWED
            state = FK.stranger_value_key(identity)
            keys = P.head_keys(plan, state, [state, state])
            reply = await self._send(self._event, keys, plan.argv())
            verdict = P.decode(plan, reply, {})
            self._after(verdict, identity, None, None, call=session_id)
            return verdict
        rules = self.book.rules_for(account_id, tariff or DEFAULT_PLAN_ID)
        plan = P.Plan(now, identity, event_id=f"rej:{session_id}")
        P.refusal_ops(plan, rules, account_id, session_id)
        verdict = await self._event_verdict(plan, account_id, rules)
        self._after(verdict, account_id, None, None, call=session_id)
        return verdict

    async def scan(self, caller_ip: str, identity: str, session_id: str) -> Verdict:
        """Count an identity no account has (the identities one Access-Request's lookup
        tried, one per line), tried from ``caller_ip`` (identity_scan: the distinct ones in
        the window, a SIPVicious-style scan of extensions). A refusing
        rule over its limit writes its deny flag in the IP's value for its cooldown:
        authorize refuses every call from there (known accounts' too: op 'p') until then,
        or until `ctl fraud lift --caller-ip`. Alerts: one incident per rule and IP.
        Of the base rules (no account: no override applies to the count)."""
        rules = [r for r in self.book.base if r.kind == "identity_scan"]
        if not rules:
            return ALLOWED
        plan = P.Plan(self.clock_ms(), "")  # "": the deny flag is the whole IP's
        P.scan_ops(plan, rules, caller_ip, identity)
        value = FK.ip_value_key(caller_ip)
        keys = P.head_keys(plan, value, [value, value])
        argv = plan.argv()
        if self.local is not None:  # the IP value's bytes after it (event.lua ARGV[8])
            argv[7] = 1
        reply = await self._send(self._event, keys, argv)
        if self.local is not None and len(reply) > 5:
            self.local.learnt(value, reply[5])
        verdict = P.decode(plan, reply, {r.name: r for r in rules})
        self._after(verdict, caller_ip, None, None, call=session_id)
        return verdict

    async def _event_verdict(self, plan: P.Plan, account_id: str, rules: Sequence[Rule]) -> Verdict:
        block_keys = P.with_block(plan, self.ledger.steps, account_id)
        value = FK.value_key(account_id)
        keys = P.head_keys(plan, value, block_keys)
        argv = plan.argv()
        if self.local is not None:  # the value's bytes after it (event.lua ARGV[8])
            argv[7] = 1
        reply = await self._send(self._event, keys, argv)
        self.counters["events"] += 1
        if self.local is not None and len(reply) > 5:
            self.local.learnt(value, reply[5])
        return P.decode(plan, reply, {r.name: r for r in rules})

    # -- operators --------------------------------------------------------------------------

    async def unblock(self, account_id: str, *, who: str, why: str) -> Account:
        """Make an account blocked by a fraud rule active again; its counts start over
        (what the rules counted before now is ignored) and its incidents are resolved.
        AccountNotActive when it is not blocked by a fraud rule (nothing changed)."""
        before = await self.ledger.get_account(account_id)
        if (before.status, before.status_reason) != (Status.BLOCKED, "fraud"):
            reason = f" ({before.status_reason})" if before.status_reason else ""
            raise AccountNotActive(
                f"account {account_id!r} is {before.status}{reason},"
                " not blocked by a fraud rule: nothing changed"
            )
        account = await self.ledger.set_status(
            account_id, Status.ACTIVE, who=who, why=why, only_from=UNBLOCK_FROM
        )
        keys = [FK.value_key(account_id), FK.events_key(account_id)]
        await self._unblock(keys=keys, args=[self.clock_ms(), who, self.value_ttl_ms])
        # Every configured rule, not only the base set: an override may enable a rule
        # for this account (or its tariff) that the base set leaves out, or an
        # account's tariff may have changed since the rule fired.
        await self._resolve(account_id, who=who, why=why)
        log.warning("fraud: account %s unblocked by %s: %s", account_id, who, why)
        return account

    async def lift(
        self, account_id: str | None, *, identity: str = "", who: str, why: str
    ) -> dict[str, Any]:
        """End early what the rules refuse an active account, or one identity of it.

        By the account's id: its deny flags (failed_attempts of any identity, spend...)
        cleared and its counts started over as an unblock starts them (a velocity refusal
        ends too), its incidents resolved. By ``identity``: that identity's alone (its
        deny flags, its counts per identity, its failed attempts in the account's count),
        the incidents of the rules that refused it resolved unless they still refuse
        another identity or the account; what still refuses the whole account (an account
        deny flag, a per-account count over its limit) is left and returned as
        ``account_refusals`` (only a lift of the account ends it). An audit entry
        ``fraud_lift`` in the account's trail (with the identity). An identity no account
        has: its failed-attempt count cleared, its incidents resolved. UnknownAccount for
        an account id no account has; AccountNotActive for an account a rule blocked
        (``unblock``)."""
        only = ""
        if account_id is None:
            found = await self.ledger.find_account(identity)
            if found is None:
                return await self._lift_stranger(identity, who=who, why=why)
            account_id, only = found, identity
        now = self.clock_ms()
        step = self.ledger.steps.audit(account_id, now_ms=now, who=who, why=why)
        keys = [FK.value_key(account_id), *step.keys, FK.log_key(account_id)]
        keys.append(FK.events_key(account_id))
        reply = await self._lift(keys=keys, args=[*step.argv, self.value_ttl_ms, only])
        outcome = _text(reply[0])
        if outcome == "unknown":
            raise UnknownAccount(f"no account {account_id!r}")
        if outcome == "blocked":
            raise AccountNotActive(
                f"account {account_id!r} is blocked by a fraud rule: `ctl fraud unblock`"
                " makes it active again; nothing changed"
            )
        lifted = [f for f in _text(reply[1]).split(",") if f]
        if not only:
            await self._resolve(account_id, who=who, why=why)
            log.warning(
                "fraud: refusals of account %s lifted by %s (%s): %s",
                account_id,
                who,
                ", ".join(lifted) or "none in force, counts start over",
                why,
            )
            return {"id": account_id, "identity": identity, "lifted": lifted}
        account = await self.ledger.get_account(account_id)
        rules = self.book.rules_for(account_id, account.tariff or DEFAULT_PLAN_ID)
        value = await self.value(account_id)
        refusing = account_refusals(value, rules, now)
        deny = value.get("d")
        still = {  # rules that still refuse the account or another identity
            str(f).partition("|")[0]
            for f, until in (deny.items() if isinstance(deny, dict) else ())
            if isinstance(until, int) and until > now
        }
        for rule in rules:  # the rules that refuse an identity: failed_attempts, per identity
            name = rule.name
            mine = rule.kind == "failed_attempts" or (
                rule.kind == "velocity" and rule.scope == "identity"
            )
            if mine and name not in still and self.alerts is not None:
                await self.alerts.resolve(rule_incident_key(name, account_id), who=who, why=why)
        log.warning(
            "fraud: refusals of identity %s (account %s) lifted by %s (%s)%s: %s",
            only,
            account_id,
            who,
            ", ".join(lifted) or "none in force, its counts start over",
            "; the account's still in force: " + ", ".join(r["rule"] for r in refusing)
            if refusing
            else "",
            why,
        )
        return {
            "id": account_id,
            "identity": identity,
            "lifted": lifted,
            "account_refusals": refusing,
        }

    async def lift_caller_ip(self, ip: str, *, who: str, why: str) -> dict[str, Any]:
        """End what the rules per caller IP hold against ``ip`` (a ``velocity`` rule with
        scope caller_ip that refuses: while its callers keep retrying, refused attempts
        count and the address stays refused, every account behind it, an SBC's or a
        PBX's public address too): its counts start over and its incidents are resolved.
        No account's own counts or refusals change (``lift ACCOUNT`` is for those).
        ValueError for a text that is no IP address."""
        shown = _address(ip)
        key = FK.ip_value_key(shown)
        # its value (velocity counts, identity_scan's deny flag) and the unknown
        # identities it tried (identity_scan's count: left, the next one refused it again)
        had = bool(await self.redis.delete(key, FK.ip_scan_key(shown)))
        if self.local is not None:
            self.local.values.drop(key)  # this process's copy (the others' meet the change)
        await self._resolve(shown, who=who, why=why)
        log.warning(
            "fraud: counts of caller IP %s %s by %s: %s",
            shown,
            "cleared" if had else "(none kept) cleared",
            who,
            why,
        )
        return {"id": "", "identity": "", "caller_ip": shown, "lifted": ["counts"] if had else []}

    async def caller_ip_state(self, ip: str) -> tuple[str, dict[str, str]]:
        """What the rules per caller IP hold against ``ip`` (its address as kept, and
        state_fields of its value: deny flags (an identity_scan rule's refusal, until
        ms), since; ``unknown_identities``: how many it tried within the scan rules'
        windows, as kept (at most a rule's limit + 1)). ValueError: no IP address."""
        shown = _address(ip)
        value = unpack_value(await self.redis.get(FK.ip_value_key(shown)))
        out = state_fields(value)
        tried = await self.redis.zcard(FK.ip_scan_key(shown))
        if tried:
            out["unknown_identities"] = str(tried)
        return shown, out

    async def _lift_stranger(self, identity: str, *, who: str, why: str) -> dict[str, Any]:
        """An identity no account has: refused as unknown, never by a rule (its rules
        alert): its count starts over, its incidents are resolved."""
        await self.redis.delete(FK.stranger_log_key(identity), FK.stranger_value_key(identity))
        await self._resolve(identity, who=who, why=why)
        log.warning(
            "fraud: counts of identity %s (no account) cleared by %s: %s", identity, who, why
        )
        return {"id": "", "identity": identity, "lifted": []}

    async def _resolve(self, subject: str, *, who: str, why: str) -> None:
        """Resolve the incidents of every configured rule about ``subject``."""
        if self.alerts is None:
            return
        for name in self.book.slots:
            await self.alerts.resolve(rule_incident_key(name, subject), who=who, why=why)

    async def state(self, account_id: str) -> dict[str, str]:
        """The account's fraud state: blocked_by, blocked_ms, since, unblocked_by,
        deny:RULE flags (until ms), live calls, countries called."""
        return state_fields(await self.value(account_id))

    async def refused_call(self, account_id: str, session_id: str) -> bool:
        """Did a rule refuse this call? Its answer, as remembered for its
        retransmissions (fraud.lua fr_add_recent: in the value, else in its own key)."""
        now = self.clock_ms()
        value = await self.value(account_id)
        recent = value.get("r")
        entry = recent.get(session_id) if isinstance(recent, dict) else None
        what: Any = None
        if isinstance(entry, list) and len(entry) == 2 and entry[1] > now:
            what = entry[0]
        elif (value.get("ro") or 0) > now:
            what = await self.redis.get(FK.answer_key(account_id, session_id))
            what = what.decode() if isinstance(what, bytes) else what
        return isinstance(what, str) and what != "known"

    async def value(self, account_id: str) -> dict[str, Any]:
        """The account's value as fraud.lua keeps it ({} none)."""
        raw = await self.redis.get(FK.value_key(account_id))
        return unpack_value(raw)

    # -- after a verdict ----------------------------------------------------------------------

    def _after(
        self,
        verdict: Verdict,
        subject: str,
        facts: CallFacts | None,
        dest: Destination | None,
        *,
        call: str = "",
        currency: str = "",
    ) -> None:
        """Alerts for what fired (``currency``: the account's, a CDR's); the cut of a
        freshly blocked account's calls."""
        if verdict.decision is not Decision.ALLOW:
            self.counters["refused"] += 1
        for fired in verdict.fired:
            self.counters["fired"] += 1
            if self.alerts is not None:
                kind, key, summary, details = alert_for(
                    fired, verdict, subject, facts, dest, currency
                )
                self.alerts.raise_soon(
                    kind,
                    severity=fired.rule.severity,
                    incident=key,
                    summary=summary,
                    details=details,
                    call=call or (facts.session_id if facts else ""),
                )
        if verdict.blocked_now:
            self.counters["blocked"] += 1
            rule = verdict.rule.name if verdict.rule else "?"
            log.warning("fraud: account %s blocked by rule %s", subject, rule)
            self._spawn(self._cut(subject))

    async def _cut(self, account_id: str) -> None:
        if self.cut_account is None:
            log.error("fraud: no call cutter attached: live calls of %s not cut", account_id)
            return
        try:
            cut = await self.cut_account(account_id)
        except Exception:  # the block stands; the next renewal of each call is refused
            log.exception("fraud: cutting the calls of blocked account %s failed", account_id)
            return
        log.warning("fraud: cut %d live calls of blocked account %s", cut, account_id)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the cuts started so far and the alerts raised (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.alerts is not None:
            await self.alerts.settle()

    # -- sending -----------------------------------------------------------------------------

    async def _send(self, script: Any, keys: list[str], argv: list[Any]) -> Any:
        """EVALSHA in this tick's pipeline (shared with the ledger and sessions)."""
        batcher = self.ledger.batcher
        if batcher is None:
            return await script(keys=keys, args=argv)
        command = ("EVALSHA", script.sha, len(keys), *keys, *argv)
        return await batcher.submit(command, retry=lambda: script(keys=keys, args=argv))

    async def _send_command(self, command: tuple[Any, ...]) -> Any:
        batcher = self.ledger.batcher
        if batcher is None:
            return await self.redis.execute_command(*command)
        return await batcher.submit(command)


def matched(cfg: FraudConfig) -> tuple[str, ...]:
    """Every item a destination rule of ``cfg`` may match (overrides never change a
    rule's match): the number types the classifier must tell apart."""
    out: set[str] = set()
    for rule in cfg.rules:
        if rule.kind in ("destination", "shared_destination"):
            out.update(rule.match or DEFAULT_MATCH)
    return tuple(sorted(out))


def unpack_value(raw: bytes | None) -> dict[str, Any]:
    """A value of fraud.lua (cmsgpack), strings decoded."""
    if raw is None:
        return {}
    value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    return value if isinstance(value, dict) else {}


def state_fields(value: dict[str, Any]) -> dict[str, str]:
    """What ``ctl fraud state`` shows of a value."""
    out: dict[str, str] = {}
    for field, name in (("s", "since"), ("b", "blocked_by"), ("bm", "blocked_ms")):
        if value.get(field):
            out[name] = str(value[field])
    if value.get("ub"):
        out["unblocked_by"] = str(value["ub"])
    deny = value.get("d")
    for rule, until in deny.items() if isinstance(deny, dict) else ():
        out[f"deny:{rule}"] = str(until)
    live = value.get("l")
    if isinstance(live, dict) and live:
        out["live_calls"] = str(len(live))
    countries = value.get("c")
    if isinstance(countries, dict) and countries:
        out["countries"] = ",".join(sorted(countries))
    return out


def account_refusals(
    value: dict[str, Any], rules: Sequence[Rule], now: int
) -> list[dict[str, Any]]:
    """What refuses every call of the account at ``now`` whatever its identity (what
    `ctl fraud lift --identity` leaves in force): the account's own deny flags (spend,
    short_calls, asr, failed_attempts of its unanswered calls: until when), and its
    refusing `velocity` (per account) and `concurrent` counts that the next call would
    take past their limit (the count, the limit). A rule in shadow refuses nothing."""
    out: list[dict[str, Any]] = []
    deny = value.get("d")
    for field, until in sorted(deny.items()) if isinstance(deny, dict) else ():
        if "|" not in str(field) and isinstance(until, int) and until > now:
            out.append({"rule": str(field), "until_ms": until})
    counters = value.get("w")
    live = value.get("l")
    for rule in rules:
        if rule.shadow or rule.action is Action.ALERT or not rule.at_authorize:
            continue
        if rule.kind == "velocity" and rule.scope == "account":
            cid = counter_id("c", rule.slot, rule.window_ms)
            w = dict(counters) if isinstance(counters, dict) else {}
            # the next call's count: this counter as fraud.lua counts it, on a copy
            width = -(-rule.window_ms // NB)
            stored = w.get(cid)
            if isinstance(stored, (list, tuple)) and stored:
                width = int(stored[0])
            count = _bucket(w, cid, now, rule.window_ms, width) - 1
            if count + 1 > rule.limit:
                window_s = rule.window_ms // 1000
                out.append(
                    {"rule": rule.name, "count": count, "limit": rule.limit, "window_s": window_s}
                )
        elif rule.kind == "concurrent":
            count = sum(
                1
                for lapse in (live.values() if isinstance(live, dict) else ())
                if lapse * 1000 > now
            )
            if count + 1 > rule.limit:
                out.append({"rule": rule.name, "count": count, "limit": rule.limit})
    return out


def _address(ip: str) -> str:
    """``--caller-ip`` as the rules key it (ipaddress's text); ValueError: not one."""
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        raise chained(ValueError(f"--caller-ip {ip!r}: not an IP address"), None) from None


def _text(value: Any) -> str:
    """A script's reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
