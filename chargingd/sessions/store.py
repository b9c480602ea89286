"""Redis keys of live credit-control sessions (records, deadlines, staleness).

ledger/ledger.py owns money; this module owns session metadata. Per-account keys carry the
``{a:ACCOUNT}`` hash tag (DESIGN invariant 5) so a future cluster-safe script can
touch a session and its account together; the global indexes (deadline zset,
per-gateway last-seen zsets and their registry, session locator) are separate keys.

Keys:
  {a:ACC}:r:SID        string the session record: a msgpack map (sessions/record.py)
  {a:ACC}:s:SID:fin    string closing lease (one closer writes the CDR)
  {a:ACC}:calls        hash   live session ids of the account -> "" (a hash, not a set:
                              Redis 7.0 keeps a small hash as a listpack, ~30 bytes
                              a call where a set of strings takes ~84). No expiry
                              (none written per authorize): a close or discard removes
                              its id; an id whose record expired unclosed is removed
                              by whichever meets it first: the reaper (its last-seen
                              entry stays until then), Accounting-On, live_of_account,
                              a packet finding the record missing. So the hash
                              empties, and goes, with the account's calls
  sess:lc:N            hash   SID -> account id of a live session (accounting finds the
                              record), N from the SID (sessions/shards.py: 8 x the
                              last-seen shard count; older daemons' sess:locs:N,
                              one per last-seen shard, read and dropped too); not
                              written for clients whose gateways echo the account in
                              RADIUS Class (echo_class: SessionStore.needs_locator).
                              No expiry: a close drops the field (only if it names
                              this account: ids collide across gateways), and so does
                              whoever meets the record gone (the reaper, Accounting-On,
                              a packet)
  sess:loc:SID         string account id of a closed session (a late Stop finds its
                              record), kept as long as the closed record; the live
                              calls' locators of daemons before the shards
  sess:deadlines       zset   "ACC\\0SID" -> ms when its money runs out (or a cut is due)
  sess:seen:{GW}:N     zset   "ACC\\0SID" -> ms of the last packet seen: a gateway's calls
                              in small zsets (shards, N from the session id, the
                              gateway their hash tag: sessions/shards.py), the reaper's
                              index and the gateway's live calls together
  sess:gateways        set    the gateways that have last-seen shards (written when new)
  sess:shards          string the deployment's shard count (stored at first start)
The indexes' reads and writes are in sessions/indexes.py (a base of SessionStore).
Before them one ``sess:lastseen`` zset and a ``sess:gw:GATEWAY`` set per gateway (until
2026-12), then one zset ``sess:lastseen:GW`` per gateway: sessions/upgrade.py moves
them at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib import resources
from importlib.abc import Traversable
from typing import Any, ClassVar

import redis.exceptions
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.plain import plain_class
from chargingd.core.redisconn import CLUSTER_UNAVAILABLE
from chargingd.ledger.batch import CommandBatcher
from chargingd.ledger.keys import tag_of
from chargingd.ledger.steps import Step, fused_source
from chargingd.sessions.ccapi import account_class
from chargingd.sessions.indexes import (
    GATEWAYS,
    LiveIndexes,
    live_key,
    loc_key,
    record_key,
)
from chargingd.sessions.record import (
    CLOSED,
    LIVE,
    Layout,
    SessionRecord,
    fields_map,
    layout_of,
    member,
    msgpack_int,
    record_lua,
    split_member,
    unpack_known,
)
from chargingd.sessions.shards import (
    DEFAULT_SHARDS,
    SHARDS_LUA,
    agree_shards,
    call_keys,
    close_keys,
    lastseen_key,
)

# What "Redis unreachable" looks like from redis-py (timeouts included: the command
# may still run later, when a stalled Redis resumes), and a cluster that serves the
# key's slot nowhere right now (CLUSTERDOWN while a shard fails over, a slot
# migration's redirections exhausted: core.redisconn.CLUSTER_UNAVAILABLE).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    *CLUSTER_UNAVAILABLE,
)

DEADLINES = "sess:deadlines"
ORPHANS = "cdr:orphans"  # accounting no account could be found for (never lost)
ORPHANS_MAXLEN = 1_000_000
# Accounting of a leg that is not a call of its own (FreeSWITCH's bridge B-legs: their
# A-leg is the call): kept apart from cdr:orphans, so one entry per bridged call never
# pushes out of that stream the unbilled usage an operator must look at; recent only.
LEGS = "cdr:legs"
LEGS_MAXLEN = 100_000

MAX_HELD = 50_000  # live records whose stored value a process keeps (SessionStore.cache)
# records of the calls authorized last, kept for their Start (SessionStore.cached): at
# most this many (~0.55 KB each: the session id, a tuple and the record's bytes; ~55 MB
# at most per process). Sized for the calls authorized and not yet answered: 100,000
# is 5,000 call attempts a second ringing 20 s (a burst of redials after an outage, a
# televoting peak); a Start past it takes session_touch.lua (~2x Redis's work). It was
# 50,000, below the kit's 60,000 authorizations before its first Start.
FRESH_MAX = 100_000
INVALID = "invalid"  # touch refused a usage longer than the time since authorize
FOREIGN = "foreign"  # touch found another client's call of the session id: nothing changed
# How long append_cdr remembers a CDR it added (session_cdr_once.lua), so that the same
# bytes sent again (the client's retry after a dropped connection or a timeout, a close
# run again after a failover) add nothing: well past a close lease (30 s), the client's
# retries, reaper passes and a failover's spool replays. ~200 bytes of the stream's
# master per CDR for that long (60 MB at 1,000 calls/s), cluster only; a resend later
# than that is one row in the billing database still (UNIQUE (source, call_id)).
CDR_ONCE_TTL_S = 300


def cdr_once_key(packed: bytes) -> str:
    """The marker of one CDR's bytes, in the CDR stream's slot (its hash tag is the
    stream's whole name)."""
    return f"{{{CDR_STREAM}}}:once:{hashlib.blake2b(packed, digest_size=16).hexdigest()}"


# How far a reported usage may run ahead of (now - authorize): clock skew, delays.
USAGE_SLACK_S = 300


class AccountInactive(Exception):
    """An authorize's record write found the account no longer active: nothing written."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"account not active ({status}/{reason}): record not written")
        self.status = status
        self.reason = reason


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LateWrite(Exception):
    """An authorize's record write ran after its deadline and wrote nothing."""

    code: ClassVar[str] = "late_write"


def _register_script(redis: Redis, lua: Traversable, layout: Layout, name: str) -> Any:
    """A session script (sessions/lua/NAME.lua, its $fields replaced) registered."""
    return redis.register_script(record_lua(lua.joinpath(f"{name}.lua").read_text(), layout))


def fin_key(account_id: str, session_id: str) -> str:
    return f"{tag_of(account_id)}:s:{session_id}:fin"


def _needs_locator(echo_class: frozenset[str], rec: SessionRecord) -> bool:
    """SessionStore.needs_locator."""
    return rec.client not in echo_class or not account_class(rec.account_id)


class _Again:
    """A script's command sent once more after NOSCRIPT (SessionStore._again): the
    batcher's retry of an EVALSHA. A native object (compiled) where a functools.partial
    of the bound method cost ~1,200 instructions per EVALSHA sent (round 12a)."""

    __slots__ = ("command", "store")

    def __init__(self, store: SessionStore, command: tuple[Any, ...]) -> None:
        self.store = store
        self.command = command

    def __call__(self) -> Awaitable[Any]:
        return self.store._again(self.command)


def _retry(store: SessionStore, command: tuple[Any, ...]) -> Callable[[], Awaitable[Any]] | None:
    """The batcher's retry of ``command`` after NOSCRIPT: a script's (EVALSHA) only."""
    if command[0] != "EVALSHA":
        return None
    return _Again(store, command)


# A plain Python class in the compiled build too (core/plain.py): its base LiveIndexes
# is interpreted, and tests replace one of its methods on an instance (a step slowed or
# broken).
@plain_class
class SessionStore(LiveIndexes):
    """Typed access to the session keys; callers never build keys."""

    def __init__(
        self,
        redis: Redis,
        *,
        session_ttl_s: int,
        closed_ttl_s: int,
        batch_commands: bool | None = None,
        batcher: CommandBatcher | None = None,
        echo_class: frozenset[str] = frozenset(),
        shards: int = DEFAULT_SHARDS,
        compact_records: bool = False,
    ) -> None:
        """``shards``: the configured last-seen shard count (load_scripts agrees it with
        the deployment's, sessions/shards.py). ``echo_class``: the clients whose
        accounting names the account (RADIUS Class): their authorized calls get no
        locator. ``batch_commands``: send the hot-path commands of one loop tick as one
        pipeline (ledger.batch.CommandBatcher); default on unless Redis Cluster.
        ``batcher``: that pipeline, shared with the Ledger (one per tick for both).
        ``compact_records``: write records in the COMPACT layout (sessions/record.py;
        read: both); default LEGACY, which every version reads (a daemon's is the
        deployment's choice: sessions/layoutchoice.py)."""
        # Typed as Any: redis-py's reply types are unions of bytes/str/awaitables.
        self.redis: Any = redis
        self.session_ttl_s = session_ttl_s
        self.closed_ttl_s = closed_ttl_s
        self.echo_class = echo_class
        self.shards = shards
        self.layout: Layout = layout_of(compact_records)
        lua = resources.files("chargingd.sessions").joinpath("lua")
        load = functools.partial(_register_script, redis, lua, self.layout)
        self._touch = load("session_touch")
        # The record write of an authorize checks the account through the ledger's own
        # account_check.lua (embedded).
        body = record_lua(lua.joinpath("session_create.lua").read_text(), self.layout)
        self._create = redis.register_script(fused_source(body, ("account_check",)))
        self._set = load("session_set")
        self._note = load("session_note")
        self._claim_until = load("session_claim_until")
        self._unlease = load("session_unlease")
        self._unlocate = load("session_unlocate")
        self._cdr_once = load("session_cdr_once")
        self.scripts: list[Any] = [
            redis.register_script(SHARDS_LUA),  # LiveIndexes.over_shards
            self._unlocate,
            self._cdr_once,
            self._touch,
            self._create,
            self._set,
            self._note,
            self._claim_until,
            self._unlease,
        ]
        # The fused scripts' Functions libraries (sessions/fusedlib.py), loaded at start
        # too: a Redis without Functions is known before the first call.
        self.libraries: list[Any] = []
        self._loading: asyncio.Future[None] | None = None
        if batch_commands is None:
            batch_commands = isinstance(redis, Redis)
        if batch_commands and batcher is None:
            batcher = CommandBatcher(redis)
        self._batcher = batcher if batch_commands else None
        # session id -> account id: fixed for a session's life; a stale entry is noticed
        # (touch finds no record) and dropped. Saves the locator GET per accounting packet.
        self._located: dict[str, str] = {}
        # Gateways this process has registered in GATEWAYS (SADD once, not per call).
        self._gateways: set[str] = set()
        # session id -> (account id, the record's stored value as this process last read
        # or wrote it, that value decoded): what the next accounting packet of the call
        # is priced from, in one script that checks the value is still the stored one
        # (sessions/noting.py). Single Redis only (the fused scripts); any write through
        # session_set drops it. ~1.3 KB a call: at most MAX_HELD calls.
        self._records: dict[str, tuple[str, bytes, SessionRecord]] = {}
        # session id -> (account id, the stored value an authorize wrote but for its
        # credit pair, the credit the script appended): the records the fused
        # authorize wrote, decoded when their Start asks (cached()). Atomic values
        # only (the collector stops tracking such tuples: a full table costs it
        # nothing), at most FRESH_MAX, the oldest dropped one by one as new ones come
        # (an OrderedDict: no pause to free a whole generation at once): the calls
        # authorized last are the ones whose Start comes next.
        self._fresh: OrderedDict[str, tuple[str, bytes, int, int]] = OrderedDict()
        # Told of each CDR this store writes, with its stream entry id (the KPI feeder of
        # this process: KpiFeeder.remember, so it need not decode the entry again).
        self.cdr_written: Callable[[bytes, CDR], None] | None = None

    @property
    def batched(self) -> bool:
        """True on a single Redis: one pipeline per tick, fused cross-slot scripts allowed."""
        return self._batcher is not None

    def needs_locator(self, rec: SessionRecord) -> bool:
        """False when the call's accounting will name its account (the client echoes
        the Access-Accept's Class, and the account fits in one)."""
        return _needs_locator(self.echo_class, rec)

    def new_call_keys(self, rec: SessionRecord, keys: list[str]) -> str | None:
        """A new call's index keys for the fused authorize, in one call (lastseen,
        needs_locator and locator were three, round 12a): its last-seen shard appended
        to ``keys``; its locator shard returned when it needs_locator, else None (the
        session id's crc32 taken once)."""
        locator = _needs_locator(self.echo_class, rec)
        return call_keys(keys, rec.gateway, rec.session_id, self.shards, locator=locator)

    def cached(self, session_id: str) -> tuple[str, bytes, SessionRecord] | None:
        """(account id, stored value, decoded) of a live record as this process last saw
        it."""
        held = self._records.get(session_id)
        if held is not None:
            return held
        fresh = self._fresh.pop(session_id, None)
        if fresh is None:
            return None
        account_id, prefix, credit, head_size = fresh
        # session_authorize.lua's record: the prefix, then cmsgpack.pack(code, credit)
        stored = prefix + self.layout.credit_micros + msgpack_int(credit)
        rec, known = unpack_known(account_id, session_id, stored)
        if not known:  # (never: this version wrote it)
            return None
        if head_size:  # the record's packed head, after the map header (fixmap, map16)
            start = 1 if prefix[0] < 0x90 else 3
            rec.keep_head(prefix[start : start + head_size], self.layout)
        self.cache(rec, stored)
        return account_id, stored, rec

    def cache_authorized(
        self,
        account_id: str,
        session_id: str,
        prefix: bytes,
        credit_micros: int,
        head_size: int = 0,
    ) -> None:
        """Remember a record the fused authorize wrote: ``prefix`` its stored value (in
        this store's layout) but for the credit_micros pair the script appends, and that
        credit (single Redis only: the fused scripts). ``head_size``: the prefix starts
        (after its map header) with the record's packed head of that size
        (SessionRecord.head_size): the Start's record keeps it, and its pack does not
        write those fields again."""
        if self._batcher is None:
            return
        fresh = self._fresh
        fresh[session_id] = (account_id, prefix, credit_micros, head_size)
        if len(fresh) > FRESH_MAX:
            fresh.popitem(last=False)

    def cache(self, rec: SessionRecord, stored: bytes) -> None:
        """Remember a live record and its stored value (single Redis only: the fused
        scripts)."""
        if self._batcher is None:
            return
        records = self._records
        sid = rec.session_id
        if len(records) >= MAX_HELD and sid not in records:
            # The tenth held longest goes, not all: a wipe sent every live call's next
            # packet to the read path at once, again each time a process holding more
            # than MAX_HELD calls filled up (a dict keeps insertion order).
            for old in list(itertools.islice(records, MAX_HELD // 10 or 1)):
                del records[old]
        records[sid] = (rec.account_id, stored, rec)

    def uncache(self, session_id: str) -> None:
        self._records.pop(session_id, None)
        self._fresh.pop(session_id, None)

    async def write_noted(
        self,
        account_id: str,
        session_id: str,
        before: bytes,
        after: bytes,
        rec: SessionRecord,
        now_ms: int,
        gateway: str,
    ) -> bool:
        """session_note.lua: ``after`` (``rec`` with a packet noted on ``before``: noting.py)
        written while ``before`` is still the stored value, with the packet's last-seen
        write (as touch sends it); False when another value is stored (nothing written,
        the caller takes the touch path)."""
        written, _ = await self.send(
            [
                ("EVALSHA", self._note.sha, 1, record_key(account_id, session_id), before, after),
                self.seen(account_id, session_id, now_ms, gateway),
            ]
        )
        if written != 1:
            self.uncache(session_id)
            return False
        self.cache(rec, after)
        return True

    def seen(self, account_id: str, session_id: str, now_ms: int, gateway: str) -> tuple[Any, ...]:
        """The last-seen write of an accounting packet from ``gateway`` (XX: no-op once
        closed, or claimed by the reaper; a packet from another gateway than the
        record's moves nothing: see touch)."""
        key = self.lastseen(gateway, session_id)
        return ("ZADD", key, "XX", now_ms, member(account_id, session_id))

    async def create(
        self,
        rec: SessionRecord,
        *,
        deadline_ms: int = 0,
        active: Step | None = None,
        locator: bool = True,
    ) -> bool:
        """Write a new live record; False when one exists already (replayed authorize).

        One round trip: the record script and the global indexes together (the indexes
        are harmless without the record: readers skip members whose record is gone, and
        drop them only once still gone GONE_GRACE_S later, since on Redis Cluster the
        indexes' nodes may answer before the record's: sessions/indexes.py).
        ``deadline_ms`` (Redis's clock, 0 none): a later run writes nothing (LateWrite).
        ``active`` (the ledger's StepBuilder.active_check): only while the account is
        active, else AccountInactive and nothing written. ``locator``: write
        its locator (False: the gateway names the account in its accounting).
        """
        args: list[str | int | bytes] = [self.session_ttl_s, rec.session_id, deadline_ms]
        args.append(rec.pack(layout=self.layout))
        keys = [record_key(rec.account_id, rec.session_id), live_key(rec.account_id)]
        if active is not None:
            keys += active.keys
            args += active.argv
        self.remember_locator(rec.session_id, rec.account_id)
        locating = [("HSET", self.locator(rec.session_id), rec.session_id, rec.account_id)]
        created, *_ = await self.send(
            [
                ("EVALSHA", self._create.sha, len(keys), *keys, *args),
                *(locating if locator else ()),
                (
                    "ZADD",
                    self.lastseen(rec.gateway, rec.session_id),
                    rec.last_seen_ms or rec.auth_ms,
                    rec.member,
                ),
                *self._register(rec.gateway),
            ]
        )
        if created == -1:
            raise LateWrite(f"session {rec.session_id} written after its deadline")
        if isinstance(created, list):  # the account is no longer active
            status, reason = (_text(v) for v in [*created[1:], b"", b""][:2])
            raise AccountInactive(status, reason)
        return bool(created)

    async def discard(self, rec: SessionRecord) -> None:
        """Forget a record that never became a call (an authorize undone): no CDR."""
        self._located.pop(rec.session_id, None)
        self.uncache(rec.session_id)
        await self.send(
            [
                ("DEL", record_key(rec.account_id, rec.session_id)),
                ("HDEL", live_key(rec.account_id), rec.session_id),
                ("DEL", loc_key(rec.session_id)),
                *self._unlocating(rec.account_id, rec.session_id),
                ("ZREM", DEADLINES, rec.member),
                ("ZREM", self.lastseen(rec.gateway, rec.session_id), rec.member),
            ]
        )

    async def _send(self, commands: list[tuple[Any, ...]], *, errors: bool = False) -> list[Any]:
        """Commands in one round trip, in order (see send): LiveIndexes's."""
        return await self.send(commands, errors=errors)

    async def send(self, commands: list[tuple[Any, ...]], *, errors: bool = False) -> list[Any]:
        """Idempotent commands in one round trip, in order; scripts reloaded on NOSCRIPT.

        A command's error reply fails only that command; the others ran. ``errors``: such
        an error (a ResponseError) is that command's result, not raised (the fused path
        tells an FCALL that did not run from the commands around it that failed).
        (redis-py's Script in a Pipeline costs a SCRIPT EXISTS round trip every time.)
        """
        if self._batcher is not None:
            # One future for the commands (a future per command, and an await of
            # each, were ~3,000 instructions a command: round 19a): their outcomes in
            # order, each error in its place; the caller learns the first one.
            outcomes = await self._batcher.submit_group([(c, _retry(self, c)) for c in commands])
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    if errors and isinstance(outcome, ResponseError):
                        continue  # this command's own error, its result
                    raise outcome
            return outcomes
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            try:
                result: list[Any] = await pipe.execute(raise_on_error=not errors)
            except NoScriptError:
                if attempt == 2:
                    raise
            else:
                if attempt == 2 or not any(isinstance(r, NoScriptError) for r in result):
                    return result
            await self._load_scripts()
        raise AssertionError("unreachable")

    async def _again(self, command: tuple[Any, ...]) -> Any:
        """A script's command once more, after NOSCRIPT: the scripts loaded first."""
        await self._load_scripts()
        return await self.redis.execute_command(*command)

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every session script (at start; NOSCRIPT reloads them anyway), and
        take the deployment's last-seen shard count (sessions/shards.py)."""
        self.shards, _ = await agree_shards(self.redis, self.shards)
        await self._load_scripts()
        for library in self.libraries:
            # e.g. out of memory: loaded at its first call ('Function not found') then
            with contextlib.suppress(redis.exceptions.ResponseError):
                await library.load()

    async def _load_scripts(self) -> None:
        """One load at a time: the many requests that meet NOSCRIPT together (a restarted
        or flushed Redis) wait for the same load instead of each loading every script."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load_all())
        await asyncio.shield(self._loading)

    async def _load_all(self) -> None:
        for script in self.scripts:
            await self.redis.script_load(script.script)

    async def get(self, account_id: str, session_id: str) -> SessionRecord | None:
        raw = await self.redis.get(record_key(account_id, session_id))
        if not raw:
            return None
        return SessionRecord.unpack(account_id, session_id, raw)

    async def touch(
        self,
        account_id: str,
        session_id: str,
        *,
        usage_s: int,
        now_ms: int,
        answer_ms: int = 0,
        nas_session_id: str = "",
        call_origin: str = "",
        gateway: str = "",
        client: str = "",
        answer_move_ms: int = 0,
    ) -> tuple[str, int, SessionRecord | None]:
        """Raise last_usage_s to ``usage_s`` (never lower it), note the packet time.

        Returns (state, last_usage_s, the live record after the update or None); one
        script so concurrent or reordered packets cannot move the usage backwards.
        State INVALID (nothing changed): ``usage_s`` exceeds the time since authorize
        plus USAGE_SLACK_S, a broken or lying gateway. ``nas_session_id`` and
        ``call_origin`` (non-empty) are noted for the Disconnect-Request (Cisco POD).
        ``gateway``: the packet's, whose last-seen zset is moved forward (a packet from
        another gateway than the record's moves nothing: the reaper reads the record's
        last_seen_ms before it reaps, so it only costs the reaper a look). ``client``
        (non-empty): a record of another client is not touched (state FOREIGN).
        ``answer_move_ms``: the answer an Interim says, to which a Start's answer moves
        (later only: sessions/noting.py answer_moved, the same rule).
        """
        key = record_key(account_id, session_id)
        args = (usage_s, now_ms, answer_ms, USAGE_SLACK_S, nas_session_id, call_origin, client,
                answer_move_ms)  # fmt: skip
        (state, usage, blob), _ = await self.send(
            [
                ("EVALSHA", self._touch.sha, 1, key, *args),
                self.seen(account_id, session_id, now_ms, gateway),
            ]
        )
        if state != LIVE.encode():
            self.uncache(session_id)
            return state.decode(), int(usage), None
        rec, known = unpack_known(account_id, session_id, blob)  # one decode for both
        if self._batcher is not None and known:
            self.cache(rec, blob)
        return LIVE, int(usage), rec

    def _setting(
        self,
        rec: SessionRecord,
        fields: dict[str, str | int],
        ttl_s: int = 0,
        *,
        unlocate: tuple[str, str] | None = None,
        whole: tuple[bytes, bytes] | None = None,
    ) -> tuple[Any, ...]:
        """session_set.lua: merge ``fields`` into the record if it exists (``ttl_s`` > 0:
        and expire it then; 0 keeps its expiry). ``unlocate`` (single Redis: other
        slots): the call's live locators (this version's and an older daemon's:
        locator, old_locator), whose fields naming the record's account it drops.
        ``whole``: (the stored value the caller knows, the new value): the new value
        written as it is while the stored one is still that (no merge in Lua)."""
        return _set_command(self, rec, fields, ttl_s, unlocate, whole)

    async def update(self, rec: SessionRecord, **fields: str | int) -> None:
        """Overwrite some fields of a live record (grant, deadline, cut state); a record
        that is gone stays gone."""
        await self.send([self._setting(rec, fields)])

    async def set_grant(
        self,
        rec: SessionRecord,
        fields: dict[str, int],
        *,
        deadline_ms: int | None,
        index_ms: int = 0,
    ) -> None:
        """Grant fields and the deadline in one round trip: ``deadline_ms`` > 0 sets it,
        0 clears it (and ``limited``), None leaves it. ``index_ms``: the deadline
        index's score when later than the deadline (a cutter's claim)."""
        fields = dict(fields)
        if deadline_ms is not None:
            fields["deadline_ms"] = deadline_ms
        if deadline_ms == 0:
            fields["limited"] = 0
        commands: list[tuple[Any, ...]] = [self._setting(rec, dict(fields))]
        if deadline_ms:
            commands.append(("ZADD", DEADLINES, max(deadline_ms, index_ms), rec.member))
        elif deadline_ms == 0:
            commands.append(("ZREM", DEADLINES, rec.member))
        await self.send(commands)

    async def set_deadline(self, rec: SessionRecord, deadline_ms: int) -> None:
        await self.update(rec, deadline_ms=deadline_ms)
        await self.redis.zadd(DEADLINES, {rec.member: deadline_ms})

    async def clear_deadline(self, rec: SessionRecord) -> None:
        await self.update(rec, deadline_ms=0, limited=0)
        await self.redis.zrem(DEADLINES, rec.member)

    async def claim_until(self, index: str, raw_member: bytes, due_ms: int, retry_ms: int) -> bool:
        """Take one due entry by moving its score to ``retry_ms`` (exactly one caller gets
        True): unlike ZREM, a claimer that dies leaves the entry to be retried then."""
        moved = await self._claim_until(keys=[index], args=[raw_member, due_ms, retry_ms])
        return bool(moved)

    async def acquire_close(self, rec: SessionRecord, token: str, *, lease_s: int = 30) -> bool:
        """The right to close (write the CDR of) a session; a crashed closer's lease expires."""
        return bool(
            await self.redis.set(
                fin_key(rec.account_id, rec.session_id), token, nx=True, ex=lease_s
            )
        )

    async def release_close(self, rec: SessionRecord, token: str) -> None:
        """Give back a close lease this caller holds (another's is left alone)."""
        await self._unlease(keys=[fin_key(rec.account_id, rec.session_id)], args=[token])

    async def mark_closed(self, rec: SessionRecord, **fields: str | int) -> None:
        """Close the record (kept closed_ttl_s so replays find it) and drop it from indexes."""
        await self.send(self._closing(rec, fields))

    async def append_cdr_and_close(
        self,
        cdr: CDR,
        rec: SessionRecord,
        fields: dict[str, str | int],
        stored: bytes | None = None,
        closed: SessionRecord | None = None,
    ) -> None:
        """XADD the CDR, then mark the record closed: one round trip on a single Redis
        (sent in this order on one connection, so the crash window stays the documented
        one); two steps on Redis Cluster, where a pipeline is split by node.
        ``stored``: ``rec``'s stored value (all of ``rec``: unpack_known) as the caller
        last read or wrote it, and ``closed``: ``rec`` with ``fields`` (and the state
        CLOSED): the closed record is then written whole while ``stored`` is still the
        stored value, else ``fields`` merged as without them. Then ``cdr_written`` is
        told the CDR and its entry id."""
        if self._batcher is None:
            entry_id = await self.append_cdr(cdr)
            await self.mark_closed(rec, **fields)
        else:
            xadd = ("XADD", CDR_STREAM, "*", "cdr", cdr.pack())
            # (_closing's function: a native call, not a method's by name)
            replies = await self.send([xadd, *_closing_writes(self, rec, fields, stored, closed)])
            entry_id = replies[0]
        if self.cdr_written is not None:
            self.cdr_written(entry_id, cdr)

    def closing_keys(self, rec: SessionRecord) -> list[str]:
        """The keys of the close's writes beside the record's and the close lease's,
        for session_stop.lua's close (single Redis): the account's live ids, the call's
        last-seen shard and live locator shards, the CDR stream, the deadline index,
        and the closed call's locator when it needs one (the writes _closing_writes
        sends itself otherwise)."""
        sid = rec.session_id
        seen, locator, old_locator = close_keys(rec.gateway, sid, self.shards)
        keys = [live_key(rec.account_id), seen, locator, old_locator, CDR_STREAM, DEADLINES]
        if _needs_locator(self.echo_class, rec):
            keys.append(loc_key(sid))
        return keys

    def closed_here(self, rec: SessionRecord, cdr: CDR, entry_id: bytes) -> None:
        """session_stop.lua made the close (closing_keys): forget the call as
        _closing_writes does, and tell ``cdr_written`` the CDR and its entry id."""
        sid = rec.session_id
        self._located.pop(sid, None)
        self._records.pop(sid, None)
        self._fresh.pop(sid, None)
        if self.cdr_written is not None:
            self.cdr_written(entry_id, cdr)

    def _closing(
        self,
        rec: SessionRecord,
        fields: dict[str, str | int],
        stored: bytes | None = None,
        closed: SessionRecord | None = None,
    ) -> list[tuple[Any, ...]]:
        """The close's writes: the record closed, out of the indexes; its live locator
        becomes a string kept as long as the closed record (a late Stop finds it); a
        call without a locator (echo_class) gets none (one for this id would be
        another client's call). ``stored``, ``closed``: see append_cdr_and_close."""
        return _closing_writes(self, rec, fields, stored, closed)

    async def append_cdr(self, cdr: CDR) -> bytes:
        """XADD the rated CDR to the stream the exporter drains (field "cdr", msgpack),
        once: the same bytes sent again within CDR_ONCE_TTL_S (the client retries a
        command whose connection dropped; on a cluster the master that ran it may have
        replicated it before it died) return the first entry's id and add nothing."""
        packed = cdr.pack()
        entry_id: bytes = await self._cdr_once(
            keys=[CDR_STREAM, cdr_once_key(packed)], args=[packed, CDR_ONCE_TTL_S]
        )
        return entry_id

    async def record_orphan(self, fields: dict[str, str]) -> None:
        """Accounting that matches no account: kept in a stream with its reason."""
        await self.redis.xadd(ORPHANS, fields, maxlen=ORPHANS_MAXLEN, approximate=True)

    async def record_leg(self, fields: dict[str, str]) -> None:
        """Accounting of a leg whose call is charged by its other leg (LEGS)."""
        await self.redis.xadd(LEGS, fields, maxlen=LEGS_MAXLEN, approximate=True)


def _set_command(
    store: SessionStore,
    rec: SessionRecord,
    fields: dict[str, str | int],
    ttl_s: int,
    unlocate: tuple[str, str] | None,
    whole: tuple[bytes, bytes] | None,
) -> tuple[Any, ...]:
    """SessionStore._setting, a native call from the close's writes (the store is a
    plain class: a method call by name, and its keyword arguments parsed, per Stop)."""
    sid = rec.session_id
    key = record_key(rec.account_id, sid)
    store._records.pop(sid, None)  # uncache: its stored value changes
    store._fresh.pop(sid, None)
    merged = fields_map(fields, store.layout)
    sha: str = store._set.sha
    if unlocate is not None:
        command: tuple[Any, ...] = (
            "EVALSHA",
            sha,
            3,
            key,
            unlocate[0],
            unlocate[1],
            ttl_s,
            merged,
            sid,
            rec.account_id,
        )
    else:
        command = ("EVALSHA", sha, 1, key, ttl_s, merged)
    if whole is None:
        return command
    if unlocate is None:
        command += ("", "")  # (ARGV[3..4]: no locator shards named)
    return (*command, whole[0], whole[1])


def _closing_writes(
    store: SessionStore,
    rec: SessionRecord,
    fields: dict[str, str | int],
    stored: bytes | None,
    closed: SessionRecord | None,
) -> list[tuple[Any, ...]]:
    """SessionStore._closing, a native call (see _set_command): the store's attributes
    read once, its methods (needs_locator, _setting, _unlocating) by their functions."""
    acc, sid = rec.account_id, rec.session_id
    store._located.pop(sid, None)
    # Single Redis: the record's script drops the live locator too (one script);
    # Redis Cluster: the locator's shard is in another slot, a script of its own.
    one_script = store._batcher is not None
    closed_ttl_s: int = store.closed_ttl_s
    fields = {**fields, "state": CLOSED}
    # lastseen, locator and old_locator from one crc32 of the id (three: round 13b)
    seen, locator, old_locator = close_keys(rec.gateway, sid, store.shards)
    unlocate = (locator, old_locator) if one_script else None
    # The closed record whole (session_set.lua writes it as it is while ``stored``
    # is still the stored value: no decode and re-encode in Lua, -53k of Redis's
    # instructions a Stop, round 14a), else the fields merged
    whole = None
    if stored is not None and closed is not None:
        whole = (stored, closed.pack(layout=store.layout))
    marked = _set_command(store, rec, fields, closed_ttl_s, unlocate, whole)
    locating = [] if one_script else store._unlocating(acc, sid)
    if _needs_locator(store.echo_class, rec):
        locating.append(("SET", loc_key(sid), acc, "EX", closed_ttl_s))
    who = rec.member
    return [
        marked,
        ("HDEL", live_key(acc), sid),
        *locating,
        ("ZREM", DEADLINES, who),
        ("ZREM", seen, who),
        ("DEL", fin_key(acc, sid)),
    ]


__all__ = [
    "CLOSED",
    "DEADLINES",
    "FOREIGN",
    "GATEWAYS",
    "INVALID",
    "LEGS",
    "LIVE",
    "ORPHANS",
    "REDIS_DOWN",
    "USAGE_SLACK_S",
    "AccountInactive",
    "LateWrite",
    "SessionRecord",
    "SessionStore",
    "fin_key",
    "lastseen_key",
    "live_key",
    "loc_key",
    "member",
    "record_key",
    "split_member",
]
