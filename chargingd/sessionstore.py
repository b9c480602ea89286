"""Redis keys of live credit-control sessions (records, deadlines, staleness).

balance.py owns money; this module owns session metadata. Per-account keys carry the
``{a:ACCOUNT}`` hash tag (DESIGN invariant 5) so a future cluster-safe script can
touch a session and its account together; the global indexes (deadline zset,
last-seen zset, per-gateway sets, session locator) are separate keys.

Keys:
  {a:ACC}:s:SID        hash   the session record (fields: see SessionRecord)
  {a:ACC}:s:SID:fin    string closing lease (one closer writes the CDR)
  {a:ACC}:live         set    live session ids of the account
  sess:loc:SID         string account id of a session (accounting finds the record)
  sess:deadlines       zset   "ACC\\0SID" -> ms when its money runs out (or a cut is due)
  sess:lastseen        zset   "ACC\\0SID" -> ms of the last packet seen
  sess:gw:GATEWAY      set    "ACC\\0SID" of the gateway's live sessions
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from chargingd.cdr import CDR, CDR_STREAM
from chargingd.ledger_batch import CommandBatcher

DEADLINES = "sess:deadlines"
LASTSEEN = "sess:lastseen"
ORPHANS = "cdr:orphans"  # accounting no account could be found for (never lost)
ORPHANS_MAXLEN = 1_000_000

LIVE = "live"
CLOSED = "closed"


def record_key(account_id: str, session_id: str) -> str:
    return f"{{a:{account_id}}}:s:{session_id}"


def fin_key(account_id: str, session_id: str) -> str:
    return f"{{a:{account_id}}}:s:{session_id}:fin"


def live_key(account_id: str) -> str:
    return f"{{a:{account_id}}}:live"


def loc_key(session_id: str) -> str:
    return f"sess:loc:{session_id}"


def gateway_key(gateway: str) -> str:
    return f"sess:gw:{gateway}"


def member(account_id: str, session_id: str) -> bytes:
    """Index member naming one session; account ids never contain NUL."""
    return f"{account_id}\0{session_id}".encode()


def split_member(raw: bytes | str) -> tuple[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    account_id, _, session_id = text.partition("\0")
    return account_id, session_id


@dataclass(frozen=True)
class SessionRecord:
    """One call as sessions.py knows it; integers carry their unit in the name."""

    session_id: str
    account_id: str
    user_name: str
    caller: str  # E.164 where it could be normalised
    callee: str
    destination: str  # matched destination id
    plan: str  # tariff plan id
    currency: str
    gateway: str
    client: str
    auth_ms: int
    answer_ms: int = 0
    last_seen_ms: int = 0
    last_usage_s: int = 0
    debited_micros: int = 0  # cumulative cost committed so far
    held_micros: int = 0  # current hold (the grant beyond the debited cost)
    paid_usage_s: int = 0  # usage that debited + held money pays for
    limited: int = 0  # 1 when the last grant was partial (the session has a deadline)
    deadline_ms: int = 0
    cut_reason: str = ""  # "credit_cut" | "killed" | "" (why the cutter cut it)
    cut_attempts: int = 0
    cut_ms: int = 0  # when the first Disconnect-Request went out
    cut_ok: int = 0  # 1 once the gateway confirmed it
    adopted: int = 0  # 1 when accounting arrived without our authorize
    state: str = LIVE

    @property
    def member(self) -> bytes:
        return member(self.account_id, self.session_id)

    def to_mapping(self) -> dict[str, str | int]:
        # Not dataclasses.asdict: it deep-copies and costs ~100 us on the hot path.
        return {name: getattr(self, name) for name, _, _ in _FIELDS}

    @classmethod
    def from_raw(cls, raw: dict[bytes, bytes]) -> SessionRecord:
        """Decode a HGETALL reply; unknown fields (newer versions) are ignored."""
        values: dict[str, Any] = {}
        for name, key, is_int in _FIELDS:
            data = raw.get(key)
            if data is not None:
                values[name] = int(data) if is_int else data.decode()
        return cls(**values)


# (field name, its hash field as bytes, is an integer), in declaration order.
_FIELDS: tuple[tuple[str, bytes, bool], ...] = tuple(
    (f.name, f.name.encode(), f.type in ("int", int)) for f in dataclasses.fields(SessionRecord)
)


class SessionStore:
    """Typed access to the session keys; callers never build keys."""

    def __init__(
        self,
        redis: Redis,
        *,
        session_ttl_s: int,
        closed_ttl_s: int,
        batch_commands: bool | None = None,
    ) -> None:
        """``batch_commands``: send the hot-path commands of one loop tick as one
        pipeline (ledger_batch.CommandBatcher); default on unless Redis Cluster."""
        # Typed as Any: redis-py's reply types are unions of bytes/str/awaitables.
        self.redis: Any = redis
        self.session_ttl_s = session_ttl_s
        self.closed_ttl_s = closed_ttl_s
        lua = resources.files("chargingd").joinpath("lua")
        self._touch = redis.register_script(lua.joinpath("session_touch.lua").read_text())
        self._create = redis.register_script(lua.joinpath("session_create.lua").read_text())
        if batch_commands is None:
            batch_commands = isinstance(redis, Redis)
        self._batcher = CommandBatcher(redis) if batch_commands else None

    async def create(self, rec: SessionRecord) -> bool:
        """Write a new live record; False when one exists already (replayed authorize).

        One round trip: the record script and the global indexes together.
        """
        args: list[str | int] = [self.session_ttl_s, rec.session_id]
        for name, value in rec.to_mapping().items():
            args += [name, value]
        keys = [record_key(rec.account_id, rec.session_id), live_key(rec.account_id)]
        created, *_ = await self._send(
            [
                ("EVALSHA", self._create.sha, len(keys), *keys, *args),
                ("SET", loc_key(rec.session_id), rec.account_id, "EX", self.session_ttl_s),
                ("ZADD", LASTSEEN, rec.last_seen_ms or rec.auth_ms, rec.member),
                ("SADD", gateway_key(rec.gateway), rec.member),
            ]
        )
        return bool(created)

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Idempotent commands in one round trip, in order; scripts reloaded on NOSCRIPT.

        (redis-py's Script in a Pipeline costs a SCRIPT EXISTS round trip every time.)
        """
        if self._batcher is not None:
            futures = self._batcher.submit_many([(c, self._retry(c)) for c in commands])
            return list(await asyncio.gather(*futures))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            try:
                result: list[Any] = await pipe.execute()
                return result
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts()
        raise AssertionError("unreachable")

    def _retry(self, command: tuple[Any, ...]) -> Callable[[], Awaitable[Any]] | None:
        if command[0] != "EVALSHA":
            return None

        async def again() -> Any:
            await self._load_scripts()
            return await self.redis.execute_command(*command)

        return again

    async def _load_scripts(self) -> None:
        for script in (self._touch, self._create):
            await self.redis.script_load(script.script)

    async def locate(self, session_id: str) -> str | None:
        (raw,) = await self._send([("GET", loc_key(session_id))])
        return raw.decode() if raw is not None else None

    async def forget_locator(self, session_id: str) -> None:
        await self.redis.delete(loc_key(session_id))

    async def get(self, account_id: str, session_id: str) -> SessionRecord | None:
        raw = await self.redis.hgetall(record_key(account_id, session_id))
        if not raw or b"account_id" not in raw:
            return None
        return SessionRecord.from_raw(raw)

    async def find(self, session_id: str) -> SessionRecord | None:
        account_id = await self.locate(session_id)
        return None if account_id is None else await self.get(account_id, session_id)

    async def touch(
        self, account_id: str, session_id: str, *, usage_s: int, now_ms: int, answer_ms: int = 0
    ) -> tuple[str, int, SessionRecord | None]:
        """Raise last_usage_s to ``usage_s`` (never lower it), note the packet time.

        Returns (state, last_usage_s, the live record after the update or None); one
        script so concurrent or reordered packets cannot move the usage backwards.
        """
        key = record_key(account_id, session_id)
        (state, usage, flat), _ = await self._send(
            [
                ("EVALSHA", self._touch.sha, 1, key, usage_s, now_ms, answer_ms),
                # XX: no-op once closed (or claimed by the reaper).
                ("ZADD", LASTSEEN, "XX", now_ms, member(account_id, session_id)),
            ]
        )
        if state != LIVE.encode():
            return state.decode(), int(usage), None
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return LIVE, int(usage), SessionRecord.from_raw(raw)

    async def update(self, rec: SessionRecord, **fields: str | int) -> None:
        """Overwrite some fields of a live record (grant, deadline, cut state)."""
        await self.redis.hset(record_key(rec.account_id, rec.session_id), mapping=fields)

    async def set_deadline(self, rec: SessionRecord, deadline_ms: int) -> None:
        await self.update(rec, deadline_ms=deadline_ms)
        await self.redis.zadd(DEADLINES, {rec.member: deadline_ms})

    async def clear_deadline(self, rec: SessionRecord) -> None:
        await self.update(rec, deadline_ms=0, limited=0)
        await self.redis.zrem(DEADLINES, rec.member)

    async def due(self, index: str, until_ms: int, *, limit: int = 100) -> list[bytes]:
        """Members of ``index`` whose score is at most ``until_ms``, oldest first."""
        members: list[bytes] = await self.redis.zrangebyscore(
            index, "-inf", until_ms, start=0, num=limit
        )
        return members

    async def claim(self, index: str, raw_member: bytes) -> bool:
        """Take one due entry: exactly one caller across all daemons gets True (ZREM)."""
        return bool(await self.redis.zrem(index, raw_member))

    async def acquire_close(self, rec: SessionRecord, token: str, *, lease_s: int = 30) -> bool:
        """The right to close (write the CDR of) a session; a crashed closer's lease expires."""
        return bool(
            await self.redis.set(
                fin_key(rec.account_id, rec.session_id), token, nx=True, ex=lease_s
            )
        )

    async def mark_closed(self, rec: SessionRecord, **fields: str | int) -> None:
        """Close the record (kept closed_ttl_s so replays find it) and drop it from indexes."""
        key = record_key(rec.account_id, rec.session_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={**fields, "state": CLOSED})
        pipe.expire(key, self.closed_ttl_s)
        pipe.srem(live_key(rec.account_id), rec.session_id)
        pipe.expire(loc_key(rec.session_id), self.closed_ttl_s)
        pipe.zrem(DEADLINES, rec.member)
        pipe.zrem(LASTSEEN, rec.member)
        pipe.srem(gateway_key(rec.gateway), rec.member)
        pipe.delete(fin_key(rec.account_id, rec.session_id))
        await pipe.execute()

    async def live_of_account(self, account_id: str) -> list[SessionRecord]:
        ids = await self.redis.smembers(live_key(account_id))
        out = []
        for sid in sorted(ids):
            rec = await self.get(account_id, sid.decode())
            if rec is not None and rec.state == LIVE:
                out.append(rec)
        return out

    async def live_of_gateway(self, gateway: str) -> list[SessionRecord]:
        members = await self.redis.smembers(gateway_key(gateway))
        out = []
        for raw in sorted(members):
            rec = await self.get(*split_member(raw))
            if rec is not None and rec.state == LIVE:
                out.append(rec)
            elif rec is None:
                await self.redis.srem(gateway_key(gateway), raw)
        return out

    async def all_live(self, *, limit: int = 10_000) -> list[SessionRecord]:
        """Every live session (via the last-seen index), for the admin socket."""
        members = await self.redis.zrange(LASTSEEN, 0, limit - 1)
        out = []
        for raw in members:
            rec = await self.get(*split_member(raw))
            if rec is not None and rec.state == LIVE:
                out.append(rec)
        return out

    async def append_cdr(self, cdr: CDR) -> bytes:
        """XADD the rated CDR to the stream the exporter drains (field "cdr", msgpack)."""
        entry_id: bytes = await self.redis.xadd(CDR_STREAM, {"cdr": cdr.pack()})
        return entry_id

    async def record_orphan(self, fields: dict[str, str]) -> None:
        """Accounting that matches no account: kept in a stream with its reason."""
        await self.redis.xadd(ORPHANS, fields, maxlen=ORPHANS_MAXLEN, approximate=True)
