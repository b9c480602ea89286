"""The indexes of live sessions, read and written beside the records (sessions/store.py).

  {a:ACC}:calls        hash   the account's live session ids -> "" (a top-up, a block's cut)
  sess:seen:{GW}:N     zset   "ACC\\0SID" -> ms of the last packet seen: gateway GW's calls
                              in ``shards`` small zsets (N from the session id,
                              sessions/shards.py; GW their hash tag): the reaper's index
                              and the gateway's live calls (Accounting-On/Off, ctl
                              listings, monitoring), each gateway's read by one script
                              over its shards (lastseen_shards.lua)
  sess:gateways        set    the gateways that have last-seen shards (written when new)
  sess:shards          string the deployment's shard count (sessions/shards.py)

Before them: until 2026-12 one ``sess:lastseen`` zset, a ``sess:gw:GATEWAY`` set per
gateway and a set ``{a:ACC}:live``; then one zset per gateway ``sess:lastseen:GW``.
sessions/upgrade.py moves them at start; during a rolling or blue/green upgrade the old
daemons still serving keep writing them, so the reaper (and Accounting-On) moves the
entries of ``sess:lastseen`` and of every ``sess:lastseen:GW`` in each pass while they
exist (``drain_old_lastseen``: one pipeline of EXISTS when there is none), and
live_of_account reads ``{a:ACC}:live`` beside the hash.

``LiveIndexes`` is a part of SessionStore (its base class): the store's pipeline
(``_send``) and its record reads (``get``) are its own; the locators (live: fields of
``sess:lc:N``, and of ``sess:locs:N`` as older daemons write them; closed: strings
``sess:loc:SID``) are read and dropped here (sessions/shards.py).
"""

from __future__ import annotations

import heapq
from typing import Any

from chargingd.core.plain import plain_class
from chargingd.ledger.keys import account_tag, tag_of
from chargingd.sessions.record import LIVE, SessionRecord, member, split_member
from chargingd.sessions.shards import (
    DEFAULT_SHARDS,
    MERGE_MAX,
    locator_key,
    old_locator_key,
    over_shards,
    shard_key,
    shard_keys,
)
from chargingd.sessions.shards import lastseen_key as _lastseen_key

GATEWAYS = "sess:gateways"
# A locator or last-seen entry whose record is not there (no value) is dropped only when
# it is still so this long after it was first seen (or, for an entry, written): on Redis
# Cluster a create (SessionStore.create) sends its record and its indexes in one
# pipeline to different nodes, so an index can land before the record, by up to the
# create's round trip (at most the command timeout, 2 s by default). A closed record's
# are dropped at once (its record is there: no race).
GONE_GRACE_S = 5.0
OLD_LASTSEEN = "sess:lastseen"  # one zset for every gateway (before the per-gateway zsets)
MOVE_BATCH = 1000


def record_key(account_id: str, session_id: str) -> str:
    """The session record (sessions/store.py)."""
    return f"{tag_of(account_id)}:r:{session_id}"


def loc_key(session_id: str) -> str:
    """A closed call's locator (a string), or a live one's as older daemons wrote it."""
    return f"sess:loc:{session_id}"


def old_live_key(account_id: str) -> str:
    """The account's live session ids as the old daemons keep them (a set)."""
    return f"{account_tag(account_id)}:live"


def live_key(account_id: str) -> str:
    """The account's live session ids (a hash: Redis 7.0 keeps a small one as a
    listpack, ~30 bytes a call where a set of strings takes ~84)."""
    return f"{tag_of(account_id)}:calls"


def old_lastseen_key(gateway: str) -> str:
    """The last-seen zset of one gateway's live sessions as the daemons before the
    shards kept it."""
    return f"sess:lastseen:{gateway}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(gateway: str, reply: list[Any]) -> list[tuple[float, bytes, str]]:
    """lastseen_shards.lua's flat [shard, member, score, ...] as (score, member, the
    shard's key)."""
    return [
        (float(reply[i + 2]), reply[i + 1], shard_key(gateway, int(reply[i])))
        for i in range(0, len(reply), 3)
    ]


def register(known: set[str], gateway: str) -> list[tuple[Any, ...]]:
    """The registry write for ``gateway`` unless in ``known`` (the gateways this process
    has registered), which then holds it (LiveIndexes._register)."""
    if gateway in known:
        return []
    known.add(gateway)
    return [("SADD", GATEWAYS, gateway)]


# A plain Python class in the compiled build (core/plain.py): SessionStore, a plain
# class too, subclasses it, and tests replace its methods per instance.
@plain_class
class LiveIndexes:
    """The live-session indexes of SessionStore (see the module doc)."""

    redis: Any
    _gateways: set[str]  # gateways this process has registered in GATEWAYS
    shards: int = DEFAULT_SHARDS  # the deployment's (sessions/shards.py)
    _unlocate: Any  # session_unlocate.lua
    _located: dict[str, str]  # session id -> account id, as this process knows it

    def lastseen(self, gateway: str, session_id: str) -> str:
        """The last-seen shard of a call of ``gateway``."""
        return _lastseen_key(gateway, session_id, self.shards)

    def shard_keys(self, gateway: str) -> list[str]:
        return shard_keys(gateway, self.shards)

    @property
    def batched(self) -> bool:
        raise NotImplementedError  # SessionStore's: a single Redis

    def uncache(self, session_id: str) -> None:
        raise NotImplementedError  # SessionStore's: forget its held copies of a record

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        raise NotImplementedError  # SessionStore's pipeline

    async def get(self, account_id: str, session_id: str) -> SessionRecord | None:
        raise NotImplementedError  # SessionStore's record read

    def _register(self, gateway: str) -> list[tuple[Any, ...]]:
        """The registry write for a gateway this process has not registered yet."""
        return register(self._gateways, gateway)

    def registering(self, gateway: str) -> list[tuple[Any, ...]]:
        """Commands to send with a new call's writes (fused path): see _register."""
        return register(self._gateways, gateway)  # (not through _register: a call less)

    async def gateways(self) -> list[str]:
        """Every gateway with a last-seen zset. This process's own are written again
        first (a Redis that lost the registry but not the zsets is mended here)."""
        commands: list[tuple[Any, ...]] = []
        if self._gateways:
            commands.append(("SADD", GATEWAYS, *sorted(self._gateways)))
        commands.append(("SMEMBERS", GATEWAYS))
        *_, names = await self._send(commands)
        return sorted(_text(name) for name in names)

    def over_shards(self, gateway: str, *args: Any) -> tuple[Any, ...]:
        """lastseen_shards.lua over every shard of ``gateway`` (one command)."""
        return over_shards(self.shard_keys(gateway), *args)

    async def count_live(self) -> dict[str, int]:
        """Live sessions per gateway (the sizes of its last-seen shards together)."""
        names = await self.gateways()
        sizes = await self._send([self.over_shards(g, "count") for g in names])
        return {g: int(n) for g, n in zip(names, sizes, strict=True)}

    async def search(self, session_id: str, gateway: str | None = None) -> str | None:
        """The account of a live session without a locator: ZSCAN of its last-seen
        shard of ``gateway`` (None: of every gateway) for "*\\0SID". O(a shard's calls):
        for an operator's kill, and a packet of an echo_class client that came without
        its Class; remembered once found."""
        pattern = "*\0" + "".join("\\" + c if c in "*?[]\\" else c for c in session_id)
        gateways = await self.gateways() if gateway is None else [gateway]
        for name in gateways:
            key = self.lastseen(name, session_id)
            async for raw, _ in self.redis.zscan_iter(key, match=pattern, count=1000):
                account_id, sid = split_member(raw)
                if sid == session_id:
                    self.remember_locator(session_id, account_id)
                    return account_id
        return None

    async def due(self, index: str, until_ms: int, *, limit: int = 100) -> list[bytes]:
        """Members of ``index`` whose score is at most ``until_ms``, oldest first."""
        members: list[bytes] = await self.redis.zrangebyscore(
            index, "-inf", until_ms, start=0, num=limit
        )
        return members

    async def due_oldest(
        self, gateways: list[str], until_ms: int, *, limit: int = 100
    ) -> list[tuple[float, str, bytes]]:
        """The ``limit`` oldest entries of the gateways' last-seen shards together whose
        score is at most ``until_ms``, oldest first, as (score, shard, member): each
        gateway's ``limit`` oldest merged over its shards by one script (one command a
        gateway), then merged here (one busy gateway's stale calls do not starve
        another's older ones)."""
        if not gateways or limit <= 0:
            return []
        replies = await self._send(
            [self.over_shards(g, "oldest", until_ms, limit) for g in gateways]
        )
        # Ties in member order, as within one zset.
        entries = [
            entry
            for gateway, reply in zip(gateways, replies, strict=True)
            for entry in _entries(gateway, reply)
        ]
        return [(score, key, raw) for score, raw, key in heapq.nsmallest(limit, entries)]

    async def live_of_account(self, account_id: str) -> list[SessionRecord]:
        """The account's live sessions (its hash, and the set old daemons still write
        during an upgrade); an id whose record is gone is dropped."""
        key, old_key = live_key(account_id), old_live_key(account_id)
        ids, old_ids = await self._send([("HKEYS", key), ("SMEMBERS", old_key)])
        out = []
        for sid in sorted({*ids, *old_ids}):
            rec = await self.get(account_id, _text(sid))
            if rec is not None and rec.state == LIVE:
                out.append(rec)
            elif rec is None:
                await self._send([("HDEL", key, sid), ("SREM", old_key, sid)])
            elif sid in old_ids:
                await self._send([("SREM", old_key, sid)])  # closed by a new daemon
        return out

    async def live_of_gateway(
        self, gateway: str, *, limit: int = 0, now_ms: int = 0
    ) -> list[SessionRecord]:
        """The gateway's live sessions (``limit`` > 0: at most that many, oldest seen
        first); an entry whose record is gone is dropped from its shard if its score
        (when it was written) is ``GONE_GRACE_S`` or more before ``now_ms`` (a newer
        one may be a create's whose record is on its way; 0: none, the reaper's)."""
        if 0 < limit <= MERGE_MAX:  # merged by the script
            command = self.over_shards(gateway, "oldest", "+inf", limit)
        else:  # every shard's lowest, sorted here
            command = self.over_shards(gateway, "range", "+inf", limit if limit > 0 else -1)
        (reply,) = await self._send([command])
        entries = sorted(_entries(gateway, reply))
        out = []
        old_ms = now_ms - GONE_GRACE_S * 1000
        for score, raw, key in entries[:limit] if limit > 0 else entries:
            rec = await self.get(*split_member(raw))
            if rec is not None and rec.state == LIVE:
                out.append(rec)
            elif rec is None and score <= old_ms:
                await self.drop_entry(key, raw)
        return out

    async def drop_entry(self, index: str, raw: bytes) -> None:
        """Drop a last-seen entry whose record is gone (expired unclosed) or closed, its
        id from the account's live ids and its live locator (if it names this account):
        neither has an expiry, and the reaper (or Accounting-On) is what meets them when
        nobody tops the account up."""
        account_id, session_id = split_member(raw)
        await self._send(
            [
                ("ZREM", index, raw),
                ("HDEL", live_key(account_id), session_id),
                *self._unlocating(account_id, session_id),
            ]
        )

    async def all_live(self, *, limit: int = 10_000, now_ms: int = 0) -> list[SessionRecord]:
        """Every live session (via the gateways' last-seen shards), for the admin socket
        (``now_ms``: see live_of_gateway)."""
        out: list[SessionRecord] = []
        for gateway in await self.gateways():
            if len(out) >= limit:
                break
            out += await self.live_of_gateway(gateway, limit=limit - len(out), now_ms=now_ms)
        return out

    def locator(self, session_id: str) -> str:
        """The locator hash (shard) of a live call."""
        return locator_key(session_id, self.shards)

    def old_locator(self, session_id: str) -> str:
        """The locator hash of a live call as older daemons write it (sessions/shards.py)."""
        return old_locator_key(session_id, self.shards)

    def _unlocating(self, account_id: str, session_id: str) -> list[tuple[Any, ...]]:
        """Drop the call's locator fields (this version's and an older daemon's) that
        still name ``account_id``: one script on a single Redis, one per key on Redis
        Cluster (their slots differ)."""
        keys = (self.locator(session_id), self.old_locator(session_id))
        sha = self._unlocate.sha
        if self.batched:
            return [("EVALSHA", sha, 2, *keys, session_id, account_id)]
        return [("EVALSHA", sha, 1, key, session_id, account_id) for key in keys]

    def remember_locator(self, session_id: str, account_id: str) -> None:
        if len(self._located) >= 100_000:
            self._located.clear()
        self._located[session_id] = account_id

    async def locate(self, session_id: str, *, fresh: bool = False) -> str | None:
        """The account of a session: remembered by this process, or (``fresh``) read:
        its live locator (this version's field, else an older daemon's), else its
        string (a closed call's, or a live one's of a daemon before the shards)."""
        known = None if fresh else self._located.get(session_id)
        if known is not None:
            return known
        live, old, closed = await self._send(
            [
                ("HGET", self.locator(session_id), session_id),
                ("HGET", self.old_locator(session_id), session_id),
                ("GET", loc_key(session_id)),
            ]
        )
        raw = live if live is not None else old if old is not None else closed
        if raw is None:
            return None
        account_id: str = raw.decode()
        self.remember_locator(session_id, account_id)
        return account_id

    async def forget_locator(
        self, session_id: str, account_id: str = "", gateway: str = "", *, locator: bool = True
    ) -> None:
        """Drop a locator whose record is gone (and this process's copy of it): the
        string, and the live field if it names ``account_id`` (none given: whatever it
        names); with ``account_id`` and ``gateway``, its entry in that gateway's
        last-seen shard too (what search() finds a call by) and its id in the account's
        live ids. ``locator`` False: the locator is left (an echo_class call has none:
        one for this id is another call's)."""
        self._located.pop(session_id, None)
        self.uncache(session_id)
        commands: list[tuple[Any, ...]] = []
        if locator:
            commands.append(("DEL", loc_key(session_id)))
            if account_id:
                commands += self._unlocating(account_id, session_id)
            else:
                commands.append(("HDEL", self.locator(session_id), session_id))
                commands.append(("HDEL", self.old_locator(session_id), session_id))
        if account_id:
            key = self.lastseen(gateway, session_id)
            commands.append(("ZREM", key, member(account_id, session_id)))
            commands.append(("HDEL", live_key(account_id), session_id))
        if commands:
            await self._send(commands)

    async def find(self, session_id: str) -> SessionRecord | None:
        """A session by its id alone (operator kill): its locator, else (a call of an
        echo_class client has none) a search of the gateways' last-seen zsets."""
        account_id = await self.locate(session_id, fresh=True)
        if account_id is None:
            account_id = await self.search(session_id)
        return None if account_id is None else await self.get(account_id, session_id)

    async def drain_old_lastseen(self, gateways: list[str] | None = None) -> int:
        """Move the entries old daemons still write to ``sess:lastseen`` and to the
        unsharded ``sess:lastseen:GW`` (rolling upgrade) to the shards; when there is
        none, one EXISTS of them all (Redis Cluster: one per key, their slots differ).
        ``gateways``: the registry as just read (None: read it). Returns how many
        moved."""
        names = await self.gateways() if gateways is None else gateways
        olds = [OLD_LASTSEEN, *(old_lastseen_key(g) for g in names)]
        if self.batched:  # a single Redis: a multi-key EXISTS counts them at once
            (count,) = await self._send([("EXISTS", *olds)])
            if not count:
                return 0
        found = await self._send([("EXISTS", key) for key in olds])
        moved = 0
        for key, exists in zip(olds, found, strict=True):
            if exists:
                moved += (await move_old_lastseen(self.redis, self.shards, source=key))[0]
        return moved


async def move_old_lastseen(
    redis: Any, shards: int, *, source: str = OLD_LASTSEEN, batch: int = MOVE_BATCH
) -> tuple[int, int]:
    """Each entry of ``source`` (an older daemon's last-seen zset) whose record is live
    moves to its shard with its score (``ZADD GT``: a newer score written meanwhile
    stays; the gateway registered), the others are dropped. Idempotent, safe with two
    daemons at once. Returns (moved, dropped)."""
    moved = dropped = 0
    while True:
        entries = await redis.zrange(source, 0, batch - 1, withscores=True)
        if not entries:
            return moved, dropped
        ids = [split_member(raw) for raw, _ in entries]
        pipe = redis.pipeline(transaction=False)
        for account_id, session_id in ids:
            pipe.get(record_key(account_id, session_id))
        blobs = await pipe.execute()
        pipe = redis.pipeline(transaction=False)
        for (raw, score), (account_id, session_id), blob in zip(entries, ids, blobs, strict=True):
            rec = SessionRecord.unpack(account_id, session_id, blob) if blob else None
            if rec is None or rec.state != LIVE:
                dropped += 1
                pipe.hdel(live_key(account_id), session_id)
                pipe.srem(old_live_key(account_id), session_id)
                continue
            pipe.sadd(GATEWAYS, rec.gateway)
            key = _lastseen_key(rec.gateway, session_id, shards)
            pipe.zadd(key, {raw: int(score)}, gt=True)
            moved += 1
        await pipe.execute()
        await redis.zrem(source, *(raw for raw, _ in entries))
