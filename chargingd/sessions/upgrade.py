"""Upgrade session records of the hash format to the msgpack record, once at start.

Before 6db408c a session record was a Redis hash ``{a:ACC}:s:SID`` of its fields by
their full names (integers as decimal strings, the ids included); it is now one
msgpack value ``{a:ACC}:r:SID`` (sessions/record.py). Nothing else of a session
changed its name: the live set ``{a:ACC}:live``, the locator ``sess:loc:SID`` (read as a
live call's locator beside the ``sess:locs:N`` fields since), the
deadline and last-seen indexes, the per-gateway sets, the close lease
``{a:ACC}:s:SID:fin`` and the ledger's holds are read as they were. So a call live
across the upgrade continues as it was once its record is converted: its Stop is
charged with the cut tolerance, a silent one is reaped, a pending deadline fires.

``upgrade_records`` scans every master (Redis Cluster: each primary) for the old
hashes and converts each in one script (session_upgrade.lua): same fields, same
expiry, a field at its default left out as the new code does; a record that exists
in the new format already is kept; the old hash is deleted. Two daemons starting at
once convert each record once (the script is atomic; the loser finds no hash).
The main process runs it before serving (app/serve.py).

``upgrade_lastseen`` (also at start, after it): the last-seen index was one
``sess:lastseen`` zset and a set ``sess:gw:GATEWAY`` per gateway; it is now one zset
per gateway ``sess:lastseen:GATEWAY`` and the registry ``sess:gateways``
(sessions/store.py). Each old entry of a live record moves to its gateway's zset
with its score (``ZADD GT``: a newer score written meanwhile stays), the others are
dropped, then the old gateway sets are deleted. Idempotent and safe with two daemons
at once (every step is a ZADD GT / ZREM / SADD of the same values). During a rolling
or blue/green upgrade the old daemons still serving keep writing ``sess:lastseen``:
the reaper moves its entries in each pass while it exists (indexes.py
``drain_old_lastseen``), and live_of_account reads the old ``{a:ACC}:live`` sets
beside the hashes; the old gateway sets (read by old daemons only) go at a start.
Since the shards (sessions/shards.py) the per-gateway zsets ``sess:lastseen:GATEWAY``
are older daemons' too: ``upgrade_lastseen`` moves their entries, and those of
``sess:lastseen``, to the shards ``sess:seen:{GATEWAY}:N`` the same way (the reaper again
in each pass while an older daemon writes them), and ``reshard`` (at each start: the
one that stored a new shard count may have stopped half-way) moves every entry, and
every live locator (``sess:lc:N``, 8 x as many shards; an older daemon's
``sess:locs:N``, one per last-seen shard), not in its shard; and it drops every
``sess:lc:N`` field whose record is closed or gone (an older daemon closing a new
daemon's call drops only its own kind of field: sessions/shards.py). A closed record's
field goes at once; a gone record's only if the record is still gone at a second look
``GONE_GRACE_S`` (sessions/indexes.py) after the first: on Redis Cluster a create's
locator can land before its record (other node, same pipeline), and a field dropped
then leaves the call without a locator. The start waits for that look only when some
record was gone, and only for what is left of the grace after the scan.

``upgrade_live_sets`` (at start too): an account's live session ids were a set
``{a:ACC}:live``; they are now a hash ``{a:ACC}:calls`` (SID -> "": Redis 7.0 keeps a
small hash as a listpack, a set of strings as a hashtable). Each old set is merged
into the hash in one script (same slot), then deleted. The hash has no expiry (closes
empty it; readers drop the ids of records gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
from redis.asyncio.cluster import RedisCluster

from chargingd.sessions.indexes import (
    GATEWAYS,
    GONE_GRACE_S,
    MOVE_BATCH,
    OLD_LASTSEEN,
    move_old_lastseen,
    old_lastseen_key,
    record_key,
)
from chargingd.sessions.record import CODES, FIELDS, LIVE, REQUIRED, split_member, state_of
from chargingd.sessions.shards import (
    DEFAULT_SHARDS,
    LOCATORS,
    OLD_LOCATORS,
    PREFIX,
    agree_shards,
    locator_key,
    old_locator_key,
    shard_of,
    sibling,
)
from chargingd.sessions.store import live_key

log = logging.getLogger("chargingd.sessions.upgrade")

OLD_PATTERN = "{a:*}:s:*"  # the old records; the close leases ({a:ACC}:s:SID:fin) are strings
_OLD_INFIX = "}:s:"
SCAN_COUNT = 1000
OLD_GATEWAY_SETS = "sess:gw:*"  # sess:gw:GATEWAY: set of "ACC\\0SID"
OLD_LIVE_SETS = "{a:*}:live"  # {a:ACC}:live: set of the account's live session ids
# KEYS[1] the old set, KEYS[2] the new hash (no expiry): merged, the set deleted.
_LIVE_SET_TO_HASH = """
if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return -1 end
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do redis.call('HSETNX', KEYS[2], id, '') end
redis.call('DEL', KEYS[1])
return #ids
"""


@dataclass
class UpgradeCounts:
    live: int = 0  # live records converted
    closed: int = 0  # closed records converted (late accounting reads them)
    kept_new: int = 0  # a new record of the same session existed: kept, old hash dropped
    foreign: int = 0  # hashes matching the pattern that are no session record: left alone

    @property
    def upgraded(self) -> int:
        return self.live + self.closed


def _spec() -> bytes:
    """field name -> [code, 1 if an integer, default] (no default: always stored)."""
    spec: dict[str, list[Any]] = {}
    for name, kind, default in FIELDS:
        if name not in CODES:
            continue  # the ids: in the key
        entry: list[Any] = [CODES[name], 1 if kind is int else 0]
        if name != "state" and default is not REQUIRED:
            entry.append(default)
        spec[name] = entry
    return msgpack.packb(spec, use_bin_type=True)  # type: ignore[no-any-return]


def new_key(old_key: str) -> tuple[str, str] | None:
    """``{a:ACC}:s:SID`` -> (``{a:ACC}:r:SID``, ``{a:ACC}:r:``); None when not of that form."""
    at = old_key.find(_OLD_INFIX)
    if not old_key.startswith("{a:") or at < 0:
        return None
    prefix = old_key[:at] + "}:r:"
    return prefix + old_key[at + len(_OLD_INFIX) :], prefix


async def upgrade_records(redis: Any) -> UpgradeCounts:
    """Convert every old hash record (see the module doc); the counts of what was done."""
    source = resources.files("chargingd.sessions").joinpath("lua", "session_upgrade.lua")
    script = redis.register_script(source.read_text())
    spec = _spec()
    counts = UpgradeCounts()
    scan: dict[str, Any] = {"match": OLD_PATTERN, "count": SCAN_COUNT, "_type": "hash"}
    if isinstance(redis, RedisCluster):
        scan["target_nodes"] = RedisCluster.PRIMARIES
    async for raw in redis.scan_iter(**scan):
        key = raw.decode() if isinstance(raw, bytes) else raw
        target = new_key(key)
        if target is None:
            counts.foreign += 1
            continue
        status, state = await script(keys=[key, target[0]], args=[spec, target[1]])
        status = status.decode() if isinstance(status, bytes) else status
        state = state.decode() if isinstance(state, bytes) else state
        if status == "upgraded":
            if state == "live":
                counts.live += 1
            else:
                counts.closed += 1
        elif status == "exists":
            counts.kept_new += 1
        elif status == "foreign":
            counts.foreign += 1
    return counts


async def upgrade_and_log(
    redis: Any, shards: int = DEFAULT_SHARDS, *, grace_s: float = GONE_GRACE_S
) -> UpgradeCounts:
    """upgrade_records then upgrade_lastseen, logged: what the operator reads after an
    upgrade. ``shards``: the configured last-seen shard count (the deployment's is
    agreed here, and every entry not in its shard of it moved: at each start, so that a
    reshard a start could not finish, killed or failing after it stored the count, is
    finished by the next one). ``grace_s``: reshard's (tests shorten it)."""
    shards, _ = await agree_shards(redis, shards)
    counts = await upgrade_records(redis)
    if counts.upgraded or counts.kept_new:
        log.info(
            "upgraded %d live session records (and %d closed ones) from the hash format",
            counts.live,
            counts.closed,
        )
    if counts.kept_new:
        log.warning(
            "%d old session records had a new record already: the new one kept",
            counts.kept_new,
        )
    if counts.foreign:
        log.warning(
            "%d keys like %s are no session record: left alone", counts.foreign, OLD_PATTERN
        )
    sets, ids = await upgrade_live_sets(redis)
    if sets:
        log.info("moved %d live session ids of %d accounts to their hashes", ids, sets)
    moved = await upgrade_lastseen(redis, shards)
    if moved.moved or moved.dropped or moved.gateway_sets:
        log.info(
            "moved %d last-seen entries to the last-seen shards (%d of gone or closed "
            "sessions dropped, %d old gateway sets deleted)",
            moved.moved,
            moved.dropped,
            moved.gateway_sets,
        )
    resharded = await reshard(redis, shards, grace_s=grace_s)
    if resharded:
        log.info("moved %d last-seen entries and locators to their shard of %d", resharded, shards)
    return counts


@dataclass
class LastSeenCounts:
    moved: int = 0  # entries of live records moved to their gateway's zset
    dropped: int = 0  # entries whose record is gone or closed
    gateway_sets: int = 0  # old sess:gw:* sets deleted


async def upgrade_lastseen(
    redis: Any, shards: int = DEFAULT_SHARDS, *, batch: int = MOVE_BATCH
) -> LastSeenCounts:
    """Move the old last-seen indexes to the shards (see the module doc)."""
    counts = LastSeenCounts()
    names = sorted(_text(g) for g in await redis.smembers(GATEWAYS))
    for source in [OLD_LASTSEEN, *(old_lastseen_key(g) for g in names)]:
        moved, dropped = await move_old_lastseen(redis, shards, source=source, batch=batch)
        counts.moved += moved
        counts.dropped += dropped
    scan: dict[str, Any] = {"match": OLD_GATEWAY_SETS, "count": SCAN_COUNT, "_type": "set"}
    if isinstance(redis, RedisCluster):
        scan["target_nodes"] = RedisCluster.PRIMARIES
    async for key in redis.scan_iter(**scan):
        counts.gateway_sets += int(await redis.delete(key))
    return counts


# KEYS[1] a locator shard   ARGV[1] session id   ARGV[2] account id: the field dropped
# if it still names that account (session_unlocate.lua's check, for one key).
_UNLOCATE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


async def reshard(redis: Any, shards: int, *, grace_s: float = GONE_GRACE_S) -> int:
    """Move every last-seen entry and every live locator that is not in its shard of
    ``shards`` (written with another shard count) to it: an entry's score kept (``ZADD
    GT``), a locator unless its shard has one of that id already (``HSETNX``); drop
    every locator field (of this version's kind) whose record is closed, and (after the
    remaining part of ``grace_s`` since it was seen, if any) whose record is still gone
    (GONE_GRACE_S: a create's record may land after its locator). Returns how many
    moved."""
    moved = 0
    async for raw in redis.scan_iter(**_scan(PREFIX + "{", "zset", redis)):
        key = _text(raw)
        entries = await redis.zrange(key, 0, -1, withscores=True)
        wrong = [
            (entry, sibling(key, shard_of(split_member(entry)[1], shards)), score)
            for entry, score in entries
        ]
        wrong = [(entry, target, score) for entry, target, score in wrong if target != key]
        for entry, target, score in wrong:
            await redis.zadd(target, {entry: int(score)}, gt=True)
            await redis.zrem(key, entry)
        moved += len(wrong)
    unlocate = redis.register_script(_UNLOCATE)
    gone: list[tuple[str, str]] = []  # (session id, account id): no record at the first look
    seen_at = 0.0  # when the last of them was seen so (time.monotonic)
    for prefix, where in ((LOCATORS, locator_key), (OLD_LOCATORS, old_locator_key)):
        async for raw in redis.scan_iter(**_scan(prefix, "hash", redis)):
            key = _text(raw)
            fields = await redis.hgetall(key)
            if prefix == LOCATORS:
                fields, missing = await _live_only(redis, unlocate, key, fields)
                if missing:
                    gone += missing
                    seen_at = time.monotonic()
            for sid, account_id in fields.items():
                target = where(_text(sid), shards)
                if target != key:
                    await redis.hsetnx(target, sid, account_id)
                    await redis.hdel(key, sid)
                    moved += 1
    if gone:
        await _drop_still_gone(redis, unlocate, gone, shards, seen_at + grace_s)
    return moved


async def _live_only(
    redis: Any, unlocate: Any, key: str, fields: dict[bytes, bytes]
) -> tuple[dict[bytes, bytes], list[tuple[str, str]]]:
    """The locator fields of ``key`` kept for now: those whose record is live, and
    those whose record is gone (no value: maybe a create's record still on its way),
    also returned as (session id, account id) to look at again; the others (closed, or
    no record) dropped (if they still name that account)."""
    pairs = [(_text(sid), _text(acc)) for sid, acc in fields.items()]
    blobs = await _records(redis, pairs)
    kept: dict[bytes, bytes] = {}
    gone: list[tuple[str, str]] = []
    for (sid, acc), (raw_sid, raw_acc), blob in zip(pairs, fields.items(), blobs, strict=True):
        if blob is None:
            gone.append((sid, acc))
            kept[raw_sid] = raw_acc
        elif blob and state_of(blob) == LIVE:
            kept[raw_sid] = raw_acc
        else:
            await unlocate(keys=[key], args=[sid, acc])
    return kept, gone


async def _drop_still_gone(
    redis: Any, unlocate: Any, gone: list[tuple[str, str]], shards: int, until: float
) -> None:
    """Look again, at ``until`` (time.monotonic) or now if later, at the records of the
    locators (``(session id, account id)``, each in its shard of ``shards`` by now)
    whose record was gone: drop each whose record is still gone, or closed by now."""
    wait_s = until - time.monotonic()
    log.info(
        "%d live locators have no session record: looked at again in %.1f s",
        len(gone),
        max(wait_s, 0.0),
    )
    if wait_s > 0:
        await asyncio.sleep(wait_s)
    for at in range(0, len(gone), MOVE_BATCH):
        batch = gone[at : at + MOVE_BATCH]
        for (sid, acc), blob in zip(batch, await _records(redis, batch), strict=True):
            if not blob or state_of(blob) != LIVE:
                await unlocate(keys=[locator_key(sid, shards)], args=[sid, acc])


async def _records(redis: Any, pairs: list[tuple[str, str]]) -> list[bytes | None]:
    """The stored records of (session id, account id) pairs, in one pipeline."""
    if not pairs:
        return []
    pipe = redis.pipeline(transaction=False)
    for sid, acc in pairs:
        pipe.get(record_key(acc, sid))
    blobs: list[bytes | None] = await pipe.execute()
    return blobs


def _scan(prefix: str, kind: str, redis: Any) -> dict[str, Any]:
    """scan_iter's arguments for the keys of ``prefix`` of type ``kind`` (every primary
    of a Redis Cluster)."""
    scan: dict[str, Any] = {"match": prefix + "*", "count": SCAN_COUNT, "_type": kind}
    if isinstance(redis, RedisCluster):
        scan["target_nodes"] = RedisCluster.PRIMARIES
    return scan


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def upgrade_live_sets(redis: Any) -> tuple[int, int]:
    """Merge every old live set into its account's hash (see the module doc); returns
    (sets converted, session ids moved)."""
    script = redis.register_script(_LIVE_SET_TO_HASH)
    scan: dict[str, Any] = {"match": OLD_LIVE_SETS, "count": SCAN_COUNT, "_type": "set"}
    if isinstance(redis, RedisCluster):
        scan["target_nodes"] = RedisCluster.PRIMARIES
    sets = ids = 0
    async for raw in redis.scan_iter(**scan):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if not key.startswith("{a:") or not key.endswith("}:live"):
            continue
        account_id = key[len("{a:") : -len("}:live")]
        moved = int(await script(keys=[key, live_key(account_id)]))
        if moved >= 0:
            sets += 1
            ids += moved
    return sets, ids
