"""The fused path: one round trip per credit-control step on a single Redis.

authorize = account check + reserve + live record + its indexes
(lua/session_authorize.lua), interim = commit + renewed hold + grant fields
(lua/session_renew.lua), stop = close lease + release (lua/session_close.lua). An
accounting packet of a call whose record this process holds is noted in the same
script (sessions/noting.py: renew with the note, lua/session_stop.lua, which also
writes the CDR and the close when the release debits what the closer built them for),
else by session_touch.lua first. Each
wraps the ledger's own scripts (chargingd/ledger/steps.py), and the ledger builds
their keys and arguments and decodes their replies, so money still moves only
through the ledger. Used only when the SessionStore batches (a single Redis): the
scripts name global keys beside the ``{a:ACC}`` slot. On Redis Cluster the service
takes the step-by-step path (Ledger calls, then SessionStore calls).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

from redis.exceptions import ResponseError

from chargingd.billing.cdr import CDR
from chargingd.fraud import Prepared, fragment
from chargingd.ledger import CommitResult, Grant, Ledger
from chargingd.ledger.steps import AccountCheck, ReserveStep, fused_source, session_deadline_ms
from chargingd.sessions.fusedlib import FRAUD_RESET, FusedLibrary, missing
from chargingd.sessions.noting import Noted
from chargingd.sessions.record import Layout, record_lua, unpack_known
from chargingd.sessions.recordspec import ADOPTED
from chargingd.sessions.store import (
    DEADLINES,
    SessionRecord,
    SessionStore,
    fin_key,
    live_key,
    record_key,
)

# how long a closer holds a call's close lease (s): session_close.lua's ARGV[2],
# session_stop.lua's STOP_LEASE_S
CLOSE_LEASE_S: Final = 30
# fraud_check's reply when no rule fired (session_authorize_fraud.lua leaves it out)
ALLOWED_REPLY: Final = (b"ok", 0, 0, (), b"")
# Where fraud.lua's functions read their KEYS and ARGV in session_authorize_fraud.lua's
# own call (its head; fraud.engine.LAYOUT's names): written into fraud.lua's code, so
# they read them in place (no copy into fraud.lua's own layout per call)
FRAUD_LAYOUT: Final = {
    "VALUE": 9, "ACCT": 1, "AUDIT": 4, "RECORD": 6, "IP": 11, "ANSWER": 10,
    "NOW": 17, "IDENTITY": 12, "SID": 2, "OPS": 13, "NUMBER": 14, "COUNTRY": 15,
    "REFUSAL": 1, "TTL": 8, "IP_TTL": 9, "HASH": 16, "BLOCK": 18,
}  # fmt: skip


# fraud.lua's fr_started (its fraud_seen calls it only when the call's record exists):
# is that record one the call's accounting Start adopted before its Access-Request came
# (FreeSWITCH's order: mod_radius_cdr's Start at routing, mod_xml_radius's radius_auth
# after it), live and of the call's client? Then the Access-Request is the call's first
# to the rules (counted, refused, admitted as a new call); an authorize's record (adopted
# 0: the record _authorize_adopted made its own too) is a retransmission's. The client:
# check.lua's ARGV[10] (fraud's CallFacts.client); in session_authorize_fraud.lua the
# record it would write (its ARGV[10], the last pair, credit_micros, to append).
_STARTED = """%s
local r = rec_unpack(raw)
return (r[$state] or 'live') == 'live' and r[$adopted] == %d and r[$client] == client
"""
_STARTED_STEP = "local raw, client = redis.call('GET', key), ARGV[10]"
_STARTED_FUSED = (
    "local raw = redis.call('GET', key)\n"
    "local client = rec_unpack(ARGV[10] .. cmsgpack.pack($credit_micros, 0))[$client]"
)


def started_lua(layout: Layout | None, *, fused: bool = False) -> str:
    """fraud.lua's fr_started for check.lua (Fraud.records), or, ``fused``, for
    session_authorize_fraud.lua: Lua defined after fraud.lua's fragment. Its record
    helpers defined in its own body (run only for a call with a record): a library's
    definitions run where cmsgpack is not yet there (sessions/fusedlib.py)."""
    text = _STARTED % (_STARTED_FUSED if fused else _STARTED_STEP, ADOPTED)
    body = record_lua(text, layout)
    return f"fr_started = function(key, ARGV)\n{body}end\n"


class FirstGrant:
    """What session_authorize.lua did. ``grant`` None: nothing reserved, because the
    account changed (status "") or is not active (its status and reason). Built per
    authorize: a plain class with its own __init__ (a dataclass's is interpreted even
    compiled), frozen (Final)."""

    __slots__ = ("created", "fraud", "grant", "reason", "status")

    def __init__(
        self,
        grant: Grant | None,
        created: int = -1,  # 1 record written, 0 one existed, -1 not written
        status: str = "",
        reason: str = "",
        fraud: Any = None,  # fraud_check's reply (Fraud.decided), when the rules ran
    ) -> None:
        self.grant: Final = grant
        self.created: Final = created
        self.status: Final = status
        self.reason: Final = reason
        self.fraud: Final = fraud

    def __repr__(self) -> str:
        return (
            f"FirstGrant(grant={self.grant!r}, created={self.created!r}, "
            f"status={self.status!r}, reason={self.reason!r}, fraud={self.fraud!r})"
        )


class Renewal:
    """What session_renew.lua did: the commit, the reserve (None: not run), applied;
    ``stale``: the record noted on was not the stored one (nothing done). Applied (the
    grant full, the record written), the script answers 1 and ``commit`` and
    ``grant_reply`` are None: its caller (grants.py) needs nothing else then. One per
    Interim: a plain class (a dataclass's __init__ is interpreted even compiled)."""

    __slots__ = ("applied", "commit", "grant_reply", "stale")

    def __init__(
        self,
        commit: CommitResult | None,
        grant_reply: list[Any] | None,
        applied: bool,
        stale: bool = False,
    ) -> None:
        self.commit: Final = commit
        self.grant_reply: Final = grant_reply
        self.applied: Final = applied
        self.stale: Final = stale


class Closing:
    """What session_close.lua did: status busy|gone|stale|ok, and its data. One per
    Stop: a plain class (a dataclass's __init__ is interpreted even compiled)."""

    __slots__ = (
        "answer_ms",
        "entry_id",
        "last_usage_s",
        "record",
        "release",
        "status",
        "stored",
    )

    def __init__(
        self,
        status: str,
        release: CommitResult | None = None,
        record: SessionRecord | None = None,
        last_usage_s: int = 0,
        answer_ms: int = 0,
        stored: bytes | None = None,
        entry_id: bytes | None = None,
    ) -> None:
        self.status: Final = status
        self.release: Final = release
        self.record: Final = record
        self.last_usage_s: Final = last_usage_s
        self.answer_ms: Final = answer_ms
        # the record's stored value as the script left it, when ``record`` is all of it
        # (the closed mark then writes the closed record whole: store.append_cdr_and_close)
        self.stored: Final = stored
        # the CDR's stream entry id when session_stop.lua made the close too (the CDR
        # XADDed, the record closed, out of the indexes): nothing left to write
        self.entry_id: Final = entry_id


class FusedPath:
    """The fused scripts, sent through the store's (shared) per-tick pipeline."""

    def __init__(self, store: SessionStore, ledger: Ledger) -> None:
        self.store = store
        self.ledger = ledger
        self.steps = ledger.steps
        lua = resources.files("chargingd.sessions") / "lua"
        # The plain authorize takes its per-process arguments from its own code
        # (_constants): 8 arguments fewer per call; a new call's full grant straight
        # (ledger/lua/reserve_first.lua).
        self._authorize, self.library = self._plain(first=True)
        # With the fraud rules ahead of it (session_authorize_fraud.lua).
        authorize = record_lua((lua / "session_authorize.lua").read_text(), store.layout)
        # its c: the plain authorize's per-process arguments (CONF) as ARGV.c (nested: its
        # reply as the wrapper reads it, not flat); a new
        # call's full grant straight (reserve_first.lua, with the account's fields the
        # wrapper's check read: ARGV.account)
        wrapped = (
            "local function session_authorize(KEYS, ARGV)\nlocal c, nested = ARGV.c, true\n"
            f"{authorize}\nend\n"
        )
        # REFUSAL_TTL: how long the rules remember a refusal (fraud.lua's ARGV[7], per
        # process: the ledger's, as Fraud.prepare sends it on the step-by-step path)
        refusal = f"local REFUSAL_TTL = {int(self.steps.refusal_ttl_ms)}\n"
        started = started_lua(store.layout, fused=True)
        definitions = (
            f"{fragment(FRAUD_LAYOUT)}\n{started}{wrapped}local CONF = {self._constants()}\n"
            f"{refusal}"
        )
        body = (lua / "session_authorize_fraud.lua").read_text()
        embeds = ("account_check", "check_packed", "reserve", "reserve_first", "status")
        source = fused_source(definitions + body, embeds)
        self._authorize_fraud = store.redis.register_script(source)
        store.scripts.append(self._authorize_fraud)
        # The same as a library (fusedlib.py: its definitions run once, not per call);
        # the script above when this Redis has no Functions.
        self.fraud_library = FusedLibrary(
            store.redis, fused_source(definitions, embeds), body, FRAUD_RESET
        )
        # The Interim's and the Stop's per-process arguments in their own code too
        # (_renew_constants, _stop_constants): 11 and 7 arguments, not 27 and 12.
        self._renew, self.renew_library = self._load(
            "session_renew", ("commit", "reserve"), "r", self._renew_constants()
        )
        self._close, self.close_library = self._load("session_close", ("release",), "c")
        self._stop, self.stop_library = self._load(
            "session_stop", ("release",), "s", self._stop_constants()
        )
        store.libraries.extend(self.libraries)

    def _load(
        self, name: str, embeds: tuple[str, ...], kind: str, conf: str = "", head: str = ""
    ) -> tuple[Any, FusedLibrary]:
        """The script for EVALSHA (a Redis without Functions) and the same code as a
        library (fusedlib.py), named ``chargingd_KIND_`` + its code's hash; ``conf``:
        Lua definitions of the per-process arguments (_constants, _renew_constants,
        _stop_constants), defined with the functions (a library's once, at its load);
        ``head``: Lua run first in the body (the plain authorize's ``c``)."""
        lua = resources.files("chargingd.sessions") / "lua"
        body = head + record_lua((lua / f"{name}.lua").read_text(), self.store.layout)
        definitions = conf
        redis = self.store.redis
        script = redis.register_script(fused_source(definitions + body, embeds))
        self.store.scripts.append(script)
        definitions = fused_source(definitions, embeds)
        library = FusedLibrary(redis, definitions, body, prefix=f"chargingd_{kind}_")
        return script, library

    def _plain(self, *, first: bool) -> tuple[Any, FusedLibrary]:
        """The plain authorize (session_authorize.lua), with ``first``: a new call's
        full grant by the ledger's straight-line reserve_first, else by the general
        account_check + reserve (the same keys, values and replies)."""
        embeds = ("account_check", "reserve", "reserve_first")
        conf = f"local CONF = {self._constants(first)}\n"
        # with ``nested`` false: the plain authorize answers a written record flat
        head = "local c, nested = CONF, false\n"
        return self._load("session_authorize", embeds, "a", conf, head)

    def general_reserve(self) -> None:
        """Every authorize by the general account_check + reserve, no straight-line
        first grant: the tests that compare both paths key by key. Before
        SessionStore.load_scripts (its libraries and scripts are the ones loaded)."""
        old = self.library
        self._authorize, self.library = self._plain(first=False)
        libraries = self.store.libraries
        libraries[libraries.index(old)] = self.library

    def _constants(self, first: bool = True) -> str:
        """The arguments of session_authorize.lua that are the same on every call of
        this process (its configuration: reserve.lua's ARGV[5..10] and [12], the
        record's ttl) as a Lua table (its c, ARGV.c): the caller sends the other 10
        (the account check packed in 2: StepBuilder.first_check). The values are in the
        script's code, so its name (a library's: its code's hash) and its sha change
        with them: two configurations or versions side by side each call their own,
        with the same keys (Redis Cluster never takes this path: sessions/service.py).
        A call's grant is always partial (as the step-by-step authorize's reserve):
        ``[ledger] partial_grants`` is Ledger.reserve's default for its direct callers,
        never a call's (docs/credit-control.md, "Partial grants")."""
        sample = self.steps.reserve("a", "s", 1, lease_ms=1, now_ms=0, partial=True)
        kept = [*sample.argv[4:10], sample.argv[11], self.store.session_ttl_s]
        values = ", ".join(_lua_text(_wire(v)) for v in kept)
        return "{" + values + f", first = {'true' if first else 'false'}" + "}"

    def _renew_constants(self) -> str:
        """session_renew.lua's per-process values (Lua definitions): RENEW_COMMIT,
        commit.lua's ARGV[4..7] (who, audit length, session ttl, 'cap'), and
        RENEW_RESERVE, reserve.lua's ARGV.c (its ARGV[5..10] and [12]: partial, new
        session '0', who, audit length, reclaims, audit of holds, refusal ttl): the same
        values as StepBuilder.commit and .reserve give an Interim (renew()), kept in the
        code, so the name and sha change with them (as _constants). The renewal is
        partial whatever ``[ledger] partial_grants`` says, as Grants.renew's (_constants)."""
        commit = self.steps.commit("a", "s", 0, now_ms=0, policy="cap").argv[3:7]
        step = self.steps.reserve(
            "a", "s", 1, lease_ms=1, now_ms=0, partial=True, new_session=False
        )
        reserve = [*step.argv[4:10], step.argv[11]]
        return (
            f"local RENEW_COMMIT = {_lua_table(commit)}\n"
            f"local RENEW_RESERVE = {_lua_table(reserve)}\n"
        )

    def _stop_constants(self) -> str:
        """session_stop.lua's per-process values (Lua definitions): STOP_LEASE_S, the
        close lease's seconds, and STOP_RELEASE, release.lua's ARGV[4..7] (who, audit
        length, session ttl, reclaims), as StepBuilder.release gives a Stop (stop())."""
        release = self.steps.release("a", "s", 0, now_ms=0).argv[3:7]
        lease = _lua_text(str(CLOSE_LEASE_S))
        kept = _lua_text(str(self.store.closed_ttl_s))
        return (
            f"local STOP_LEASE_S = {lease}\nlocal STOP_RELEASE = {_lua_table(release)}\n"
            f"local STOP_CLOSED_TTL_S = {kept}\n"
        )

    @property
    def libraries(self) -> tuple[FusedLibrary, ...]:
        """Every fused script's library (tests, start-up)."""
        return (
            self.library,
            self.fraud_library,
            self.renew_library,
            self.close_library,
            self.stop_library,
        )

    async def authorize(
        self,
        rec: SessionRecord,
        amount_micros: int,
        *,
        lease_ms: int,
        check: AccountCheck | None,
        fraud: Prepared | None = None,
        held_only: bool = False,
    ) -> FirstGrant:
        """Reserve ``amount`` for a new session; write ``rec`` when granted in full.

        With ``check``, first make sure the account still has that tariff, currency and
        identity and is active (else nothing is reserved). With ``fraud``, the fraud
        rules of the call run first in the same script: a refusing rule reserves
        nothing (FirstGrant.fraud holds their reply either way). ``held_only``: the
        record's credit_micros is what is held, not held + available (hold_all,
        own_timer: Authorizer._told_micros).
        """
        if fraud is not None and fraud.fetch:  # values this process does not know yet
            await fraud.fetched()  # read (one MGET), then evaluated here, not in Lua
        now_ms = self.ledger.clock_ms()
        acc, sid = rec.account_id, rec.session_id
        step = self.steps.reserve(
            acc,
            sid,
            amount_micros,
            lease_ms=lease_ms,
            now_ms=now_ms,
            deadline_ms=_deadline_ms(self.ledger),
        )
        keys = [*step.keys, record_key(acc, sid), live_key(acc)]
        # its last-seen shard appended; its locator's (None: none) placed below
        locator = self.store.new_call_keys(rec, keys)
        sha, library = self._authorize.sha, self.library
        # the per-process arguments are in the script (_constants); the account id and
        # the session's index member are derived there (from KEYS[7]: live_key)
        args = self.steps.first_args(step)
        args.append(rec.last_seen_ms or rec.auth_ms)
        args += self.steps.first_check(check)
        prefix = rec.pack(extra=1, omit=("credit_micros",), layout=self.store.layout)
        args.append(prefix)
        args.append(int(held_only))
        outcome = None if fraud is None else fraud.outcome
        if fraud is None:
            if locator is not None:
                keys.append(locator)
        else:
            sha, library, args = self._with_rules(fraud, keys, args, locator)
        # (_send_with_index's steps, here: one coroutine level fewer per authorize)
        commands = _commands(sha, keys, args, step, self.store.registering(rec.gateway), library)
        kept = fraud is not None and fraud.local is not None  # the rules' values kept here
        try:
            replies = await self.store.send(commands, errors=True)
            replied = self._reply(commands, replies, step, library)
            if replied is _RESEND:  # the library was not there: load it, send the call again
                replied = await self._resend(library, sha, keys, args, step, replies[_at(step)])
        except BaseException:
            if kept and fraud is not None:
                fraud.unknown()  # what the script did to the rules' values is not known
            raise
        if kept and fraud is not None:
            if outcome is None:  # the rules ran in Lua: the values it says are stored kept
                replied, told = replied
                fraud.learnt(told)
            elif _to_lua(fraud, replied):
                return await self.authorize(
                    rec, amount_micros, lease_ms=lease_ms, check=check, fraud=fraud,
                    held_only=held_only,
                )  # fmt: skip
        return self._granted(rec, replied, amount_micros, prefix, fraud, held_only=held_only)

    def _granted(
        self,
        rec: SessionRecord,
        replied: Any,
        amount_micros: int,
        prefix: bytes,
        fraud: Prepared | None,
        *,
        held_only: bool,
    ) -> FirstGrant:
        """What session_authorize's reply says (authorize's, after its send)."""
        acc, sid = rec.account_id, rec.session_id
        reply: Any
        created: Any
        verdict: list[Any]
        if type(replied) is int:  # a new call's full grant, straight: the available after
            reply, created, verdict = [b"ok", amount_micros, replied, 0], 1, []
        elif len(replied) == 5:  # a written record, answered flat (the plain authorize)
            reply, created, verdict = replied[:4], replied[4], []
        else:
            reply, created, *verdict = replied
        if reply == b"fraud":  # a rule refused: nothing reserved
            return FirstGrant(None, fraud=created)
        if isinstance(reply, bytes):  # b"stale" or b"inactive"
            if reply == b"stale":
                return FirstGrant(None)
            status, reason = created
            return FirstGrant(None, status=status.decode(), reason=reason.decode())
        if created == 1:
            self.store.remember_locator(sid, acc)
            # the record as the script completed it (held + available, or held only),
            # kept for the call's Start (SessionStore.cached; accounting.py notes it)
            credit = int(reply[1]) if held_only else int(reply[1]) + int(reply[2])
            head_size = rec.head_size(self.store.layout)
            self.store.cache_authorized(acc, sid, prefix, credit, head_size)
        grant = self.steps.grant(reply, acc, sid)
        return FirstGrant(grant, int(created), fraud=_verdict_of(verdict, fraud))

    async def renew(
        self,
        rec: SessionRecord,
        cost_micros: int,
        next_cost_micros: int,
        *,
        lease_ms: int,
        paid_usage_s: int,
        deadline_ms: int,
        noted: Noted | None = None,
    ) -> Renewal:
        """Commit ``cost`` (cumulative, capped at what the account can give), hold
        ``next_cost - debited`` for the next grant; ``deadline_ms`` (0: none) is the
        session's deadline when that hold is granted in full. ``noted``: ``rec`` is
        that packet noted on a held record: written here too, if still the stored one
        (else Renewal.stale, nothing done)."""
        now_ms = self.ledger.clock_ms()
        acc, sid = rec.account_id, rec.session_id
        commit = self.steps.commit(acc, sid, cost_micros, now_ms=now_ms, policy="cap")
        step = self.steps.reserve(acc, sid, 1, lease_ms=lease_ms, now_ms=now_ms, new_session=False)
        # the rest of commit.lua's and reserve.lua's ARGV are in the script's code
        # (_renew_constants): the checked id, cost, now and lease here
        argv = step.argv
        args = [argv[0], commit.argv[1], now_ms, argv[3], next_cost_micros, paid_usage_s]
        args += [rec.member, deadline_ms]
        keys = [*step.keys, record_key(acc, sid), DEADLINES]
        if noted is None:
            reply = await self._send_with_index(
                self._renew.sha, keys, args, step, None, self.renew_library
            )
            if type(reply) is int:  # applied
                return Renewal(None, None, True)
            reply, grant, _ = reply
            result = self.steps.commit_result(reply, acc)
            return Renewal(result, list(grant) if grant else None, False)
        held = max(next_cost_micros - cost_micros, 1)
        layout = self.store.layout
        # noted.after(layout, debited_micros=, held_micros=, paid_usage_s=, limited=0,
        # and deadline_ms= when not 0) without its keyword dict
        granted, after = noted.after_grant(layout, cost_micros, held, paid_usage_s, deadline_ms)
        args += [noted.before, after, noted.fields_map(layout)]
        seen = self.store.seen(acc, sid, rec.last_seen_ms, noted.gateway)
        reply = await self._send_with_index(
            self._renew.sha, keys, args, step, [seen], self.renew_library
        )
        if type(reply) is int:  # applied: the record is ``after``
            self.store.cache(granted, after)
            return Renewal(None, None, True)
        if len(reply) == 1:  # ['stale']
            return Renewal(None, None, False, stale=True)
        reply, grant, _ = reply
        self.store.uncache(sid)  # noted by the script: its own stored value
        result = self.steps.commit_result(reply, acc)
        return Renewal(result, list(grant) if grant else None, False)

    async def close(
        self, rec: SessionRecord, token: str, usage_s: int, final_cost_micros: int, *, policy: str
    ) -> Closing:
        """Take the close lease and release at ``final_cost`` (with the ledger's cap or
        debt ``policy``) if ``rec`` is still current."""
        acc, sid = rec.account_id, rec.session_id
        now_ms = self.ledger.clock_ms()
        release = self.steps.release(acc, sid, final_cost_micros, now_ms=now_ms, policy=policy)
        keys = [*release.keys, record_key(acc, sid), fin_key(acc, sid)]
        args: list[Any] = [token, CLOSE_LEASE_S, usage_s, rec.answer_ms, *release.argv]
        reply = await self._send_with_index(
            self._close.sha, keys, args, None, None, self.close_library
        )
        status = reply[0].decode()
        if status == "stale":
            return Closing(status, last_usage_s=int(reply[1]), answer_ms=int(reply[2]))
        if status != "ok":
            return Closing(status)
        record, known = unpack_known(acc, sid, reply[2])
        stored = reply[2] if known else None
        return Closing(status, self.steps.commit_result(reply[1], acc), record, stored=stored)

    async def stop(
        self,
        noted: Noted,
        token: str,
        final_cost_micros: int,
        *,
        policy: str,
        close: tuple[CDR, bytes] | None = None,
    ) -> Closing:
        """session_close's lease and release for a Stop noted on a held record
        (``noted.rec``, priced at ``final_cost``), with the note written, if that
        record is still the stored one: status ok, or stale|busy (nothing done).
        ``close``: the CDR and the closed record (its stored value) the caller built
        for the release it expects (``final_cost`` the session's whole debit, no
        overrun): when the release moved just that, the same script XADDs the CDR and
        makes the close's writes (Closing.entry_id, the CDR's stream entry); else the
        caller builds them from the release's reply (Closing.entry_id None)."""
        rec = noted.rec
        acc, sid = rec.account_id, rec.session_id
        now_ms = self.ledger.clock_ms()
        release = self.steps.release(acc, sid, final_cost_micros, now_ms=now_ms, policy=policy)
        keys = [*release.keys, record_key(acc, sid), fin_key(acc, sid)]
        after = noted.after(self.store.layout)[1]
        # release.lua's who, audit length, ttl and reclaims, and the lease's seconds,
        # are in the script's code (_stop_constants): the checked id, final cost (text,
        # '' none), now and policy here
        argv = release.argv
        args: list[Any] = [token, noted.before, after, argv[0], argv[1], now_ms, argv[7]]
        if close is not None:
            cdr, closed = close
            keys += self.store.closing_keys(rec)
            args += [cdr.pack(), cdr.charged_micros, closed, acc, rec.member]
        reply = await self._send_with_index(
            self._stop.sha, keys, args, None, None, self.stop_library
        )
        head = reply[0]
        if head == b"stale" or head == b"busy":  # nothing done
            return Closing(head.decode())
        # released: the reply is release.lua's own (not nested: round 17a)
        self.store.uncache(sid)  # closing
        result = self.steps.commit_result(reply, acc)
        if close is not None and len(reply) > 5:  # closed here: the CDR's entry id
            entry_id: bytes = reply[5]
            self.store.closed_here(rec, close[0], entry_id)
            return Closing("ok", result, rec, stored=after, entry_id=entry_id)
        return Closing("ok", result, rec, stored=after)

    async def _send_with_index(
        self,
        sha: str,
        keys: list[str],
        args: list[Any],
        step: ReserveStep | None,
        after: list[tuple[Any, ...]] | None = None,
        library: FusedLibrary | None = None,
    ) -> Any:
        """The script (by FCALL when ``library`` is given and this Redis has Functions),
        preceded in the same pipeline by the hold-index write a reserve ``step`` needs
        (and followed by ``after``: the gateway registry's write, when new)."""
        commands = _commands(sha, keys, args, step, after, library)
        replies = await self.store.send(commands, errors=True)
        reply = self._reply(commands, replies, step, library)
        if reply is _RESEND:
            assert library is not None
            return await self._resend(library, sha, keys, args, step, replies[_at(step)])
        return reply

    def _with_rules(
        self, fraud: Prepared, keys: list[str], args: list[Any], locator: str | None
    ) -> tuple[str, FusedLibrary, list[Any]]:
        """The authorize of a call with the fraud rules: its script, library and ARGV
        (KEYS completed in place)."""
        outcome = fraud.outcome
        if outcome is not None:
            # the rules as this process evaluated them (fraud/local.py): the plain
            # authorize writes their values while the stored ones are those it read
            if locator is not None:
                keys.append(locator)
            keys.append(fraud.value)
            if outcome.ip_expect is not None:
                keys.append(fraud.ip_value)
            args.extend(outcome.argv())  # (args is this call's own list)
            return self._authorize.sha, self.library, args
        # With the rules in Lua, the wrapper checks the account with these 2 arguments
        # (before the rules count the call; the ledger's check_packed.lua, its key the
        # reserve's KEYS[1]): session_authorize does not check it again.
        args = _with_rules(fraud, keys, args, locator)
        return self._authorize_fraud.sha, self.fraud_library, args

    def _reply(
        self,
        commands: list[tuple[Any, ...]],
        replies: list[Any],
        step: ReserveStep | None,
        library: FusedLibrary | None,
    ) -> Any:
        """The script's reply among _commands' replies; _RESEND when its library was
        not there (nothing of it ran, the others did): _resend sends it again."""
        before = _at(step)
        reply = replies[before]
        # Each command's own error reply: only the script's says whether it ran. An
        # error of a command around it (the index write, the registry's) is raised as
        # it is, never taken for a missing library: the FCALL may have run (money
        # moved) and must not be sent again.
        failed = next((r for r in replies if isinstance(r, ResponseError)), None)
        if failed is not None:
            fcall = commands[before][0] == "FCALL"  # as sent (not as available now)
            if failed is reply and library is not None and fcall and missing(reply):
                return _RESEND
            raise failed  # the first error, as a pipeline raises it
        if before and step is not None:
            self.steps.indexed(step)
        return reply

    async def _resend(
        self,
        library: FusedLibrary,
        sha: str,
        keys: list[str],
        args: list[Any],
        step: ReserveStep | None,
        lost: ResponseError,
    ) -> Any:
        """The library was not there (nothing ran; the commands around it did): load it,
        send the call again; again if it was lost once more in between, up to 5 times
        (a FUNCTION FLUSH or restart between the load and the resend; or the load this
        call waited for was the one of an earlier loss, sent before this one's flush)."""
        reply: Any = None
        missed: ResponseError | None = lost
        for _ in range(5):
            if missed is None:
                break
            await library.recover(missed)
            fcall = library.available
            again = (
                library.command(keys, args) if fcall else ("EVALSHA", sha, len(keys), *keys, *args)
            )
            missed = None
            try:
                (reply,) = await self.store.send([again])
            except ResponseError as exc:
                if not fcall or not missing(exc):
                    raise
                missed = exc
        if missed is not None:
            raise missed
        if step is not None and step.index is not None:
            self.steps.indexed(step)
        return reply


_RESEND: Final = object()  # FusedPath._reply: the library was not there


def _commands(
    sha: str,
    keys: list[str],
    args: list[Any],
    step: ReserveStep | None,
    after: list[tuple[Any, ...]] | None,
    library: FusedLibrary | None,
) -> list[tuple[Any, ...]]:
    """The script (by FCALL when ``library`` is given and this Redis has Functions),
    preceded by the hold-index write a reserve ``step`` needs and followed by ``after``."""
    if library is not None and library.available:
        # FusedLibrary.command's tuple, built here: fusedlib.py is interpreted, and
        # its method was an interpreted frame per authorize (round 9a)
        script = ("FCALL", library.name, len(keys), *keys, *args)
    else:
        script = ("EVALSHA", sha, len(keys), *keys, *args)
    index = None if step is None else step.index
    commands = [script] if index is None else [index, script]
    if after:
        commands.extend(after)
    return commands


def _at(step: ReserveStep | None) -> int:
    """Where the script's reply is among _commands' replies."""
    return 0 if step is None or step.index is None else 1


def _verdict_of(verdict: list[Any], fraud: Prepared | None) -> Any:
    """fraud_check's reply of a granted call: the script's, else this process's own
    evaluation (fraud/local.py), else the common one the wrapper leaves out ('ok',
    nothing fired); None without the rules."""
    if verdict:
        return verdict[0]
    if fraud is None:
        return None
    outcome = fraud.outcome
    return ALLOWED_REPLY if outcome is None else outcome.reply


def _to_lua(fraud: Prepared, replied: Any) -> bool:
    """The plain authorize's reply to a call with this process's evaluation of the
    rules: True when it is sent again: the values moved (nothing done; evaluated again
    here on the bytes the reply says, once, then the plain authorize again, else the
    rules' Lua), a record of the call exists (a retransmission, which fraud_seen answers
    without counting it: Lua), the ledger refused it (the rules count it and remember the
    refusal there: Lua); else the values are settled (written with a grant, or left as
    they were)."""
    if type(replied) is int:  # a new call granted in full, straight (written)
        fraud.decided_here(True)
        return False
    head = replied[0]
    if head == b"moved":  # evaluated again on the bytes it says, once; else in Lua
        fraud.moved(replied[1])
        return True
    if head == b"known":  # a retransmission (its record exists): fraud_seen's to answer
        fraud.to_lua(moved=False)
        return True
    if isinstance(head, list) and head[0] != b"ok":  # {reserve reply, -1}: refused
        fraud.to_lua(moved=False)
        return True
    # a new call granted: flat, created 1; {reply, -1} granted in part; else nothing
    written = len(replied) == 5 or (isinstance(head, list) and replied[1] == -1)
    fraud.decided_here(written)
    return False


def _with_rules(
    fraud: Prepared, keys: list[str], args: list[Any], locator: str | None
) -> list[Any]:
    """session_authorize_fraud.lua's ARGV (and KEYS): the locator's place in ARGV[1]
    (0: none), the rules' own after the authorize's, the locator last; + 100 when this
    process keeps the rules' values (fraud/local.py: the reply says them)."""
    args = [0, *args]
    fraud.add_fused(keys, args)  # the rules' own, after the authorize's
    if locator is not None:  # last: its place (KEYS[11] or [12]) in ARGV[1]
        args[0] = len(keys) + 1
        keys.append(locator)
    if fraud.local is not None:  # the reply says the rules' values after it
        args[0] += 100
    return args


def _deadline_ms(ledger: Ledger) -> int:
    """Ledger.new_session_deadline_ms without its interpreted frame (ledger/base.py is
    not compiled): the same compiled function, from the ledger's two values."""
    late_after_ms: int = ledger.late_after_ms
    offset_ms: int = ledger.redis_offset_ms
    return session_deadline_ms(late_after_ms, offset_ms)


def _wire(value: Any) -> str:
    """An argument as Redis passes it to a script (text)."""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _lua_table(values: list[Any]) -> str:
    """``values`` as a Lua table of their text as Redis passes arguments."""
    return "{" + ", ".join(_lua_text(_wire(v)) for v in values) + "}"


def _lua_text(value: str) -> str:
    """``value`` as a Lua string literal (every byte that is not a plain printable
    character as a decimal escape)."""
    out: list[str] = []
    for b in value.encode():
        ch = chr(b)
        plain = b < 128 and (ch.isalnum() or ch in " _.:-/@+")
        out.append(ch if plain else f"\\{b:03d}")
    return "'" + "".join(out) + "'"
