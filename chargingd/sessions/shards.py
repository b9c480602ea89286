"""The last-seen index and the locators in shards: small zsets and hashes Redis keeps
as listpacks.

One zset per gateway of all its live calls (``sess:lastseen:GW``) costs ~138 bytes a
call once it passes 128 members (zset-max-listpack-entries): a skiplist node and a
dict entry per member. So each gateway's calls are spread over ``shards`` zsets
``sess:seen:{GW}:N``, N = crc32(session id) mod ``shards``: ~45 bytes a call while
each stays under 128 members (the default 128 shards keep ~10,000 live calls of one
gateway in listpacks; an empty shard costs nothing).

The gateway is the shards' hash tag: all of a gateway's shards are in one slot (on one
Redis Cluster node, as its single zset was), so a reader of a whole gateway sends ONE
script over its shards (lua/lastseen_shards.lua: the oldest due entries merged by
score, the count, the entries) instead of one command per shard: a reaper pass or a
monitoring sample costs a command per gateway, not ``shards`` of them. A gateway name
that would give no usable tag (empty, or holding ``}``) is keyed
``sess:seen:{~}:GW:N`` (tag ``~``; distinct from the gateway ``~``'s ``{~}:N``).

The shard count is fixed per deployment: the first daemon to start stores its
``[sessions] lastseen_shards`` in ``sess:shards`` (SET NX) and every daemon, and every
reader (assurance, the soak script), uses the stored value. A daemon configured
otherwise logs a warning and uses the stored one, so no call is indexed where the
others do not look. Changing it for a deployment means deleting ``sess:shards`` with
every daemon stopped: the next start stores the new value and moves every entry (and
every live locator, below) that is not in its shard (sessions/upgrade.py ``reshard``;
it runs at each start of a main process, so a start that stopped half-way through it
is finished by the next one).

The locators of live calls (session id -> account, for the clients that do not echo
the account in Class) are fields of ``LOCATOR_FACTOR`` x ``shards`` hashes
``sess:lc:N`` (N = crc32(session id) mod that count: 1,024 at the default 128), a
listpack each while it holds <= 512 fields (``hash-max-listpack-entries``), ~45 bytes
a call where a string key ``sess:loc:SID`` with its expiry took ~199. Their own count,
larger than the last-seen shards': every write and read of a listpack searches it
field by field (~135 instructions a field), and the locators are all the deployment's
calls in one set of shards (every gateway's), read by session id only (no reader
walks them): at 128 shards the kit's ~64,000 live calls made each ``HSET`` search
~250 fields on average (~39k instructions, ~15 % of an authorize's Redis work), at
1,024 ~31 (~9k); ~80 bytes of Redis per shard that holds a call (~8 bytes a call at
10,000 calls). A field has no expiry (Redis 7.0): a close drops it (and writes the
closed call's locator as a string with the closed record's lifetime, as before), and
so does whoever meets a record gone (the reaper, an Accounting-On, a packet).

Until 2026-12-06 the locators were fields of ``shards`` hashes ``sess:locs:N`` (N =
crc32 mod the last-seen count): an older daemon still writes and reads only those
during a rolling upgrade. So every reader takes the field of ``sess:lc:N``, else that
of ``sess:locs:N``, else the string; every drop (a close, an authorize undone, a
record met gone) drops both fields (each only if it names the call's account); the
old shards empty as their calls end. An older daemon does not read the new fields: a
packet of a new daemon's call that reaches it is found through its identity lookup,
which finds the same record (as before the shards, and for ``echo_class``); its
close leaves the new field (a closed record's locator is its string anyway): a new
daemon's next start drops it (sessions/upgrade.py ``reshard`` drops every new field
whose record is closed, or gone and still gone after indexes.py's GONE_GRACE_S), as a
packet that meets the record gone does.

The prefix is not ``sess:lastseen:`` so that no shard's name can be the name of an
older daemon's per-gateway zset (an IPv6 gateway ``fe80::1:2`` against shard 2 of
``fe80::1``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from redis.exceptions import NoScriptError

log = logging.getLogger("chargingd.sessions")

SHARDS_KEY = "sess:shards"  # the deployment's shard count (written once, SET NX)
DEFAULT_SHARDS = 128
MAX_SHARDS: Final = 4096
PREFIX: Final = "sess:seen:"
# The live calls' locators: sess:lc:N, LOCATOR_FACTOR x the shard count of them (not
# "sess:loc:N": an older string locator sess:loc:SID of a session id "5" would be shard
# 5's name). OLD_LOCATORS: sess:locs:N, one per last-seen shard, as daemons before
# 2026-12-06 write them (read and dropped beside the new ones).
LOCATORS: Final = "sess:lc:"
OLD_LOCATORS = "sess:locs:"
LOCATOR_FACTOR: Final = 8


def shard_of(session_id: str, shards: int) -> int:
    """The shard of a session: stable across processes, versions and restarts."""
    return zlib.crc32(session_id.encode()) % shards


# One gateway's shards in one script (see the module doc).
SHARDS_LUA = (
    resources.files("chargingd.sessions").joinpath("lua", "lastseen_shards.lua").read_text()
)
SHARDS_SHA = hashlib.sha1(SHARDS_LUA.encode()).hexdigest()
# 'oldest' merges in the script up to this limit; a bigger read takes 'range' (every
# shard's lowest, unsorted) and is sorted by the caller: no big sort blocks Redis.
MERGE_MAX = 1000


def _tagged(gateway: str) -> str:
    """The gateway's part of its shards' keys: ``{GW}`` (its hash tag), or for a name
    that would give an empty or cut tag, ``{~}:GW``."""
    if gateway and "}" not in gateway:
        return f"{{{gateway}}}"
    return f"{{~}}:{gateway}"


def shard_key(gateway: str, shard: int) -> str:
    prefix = _PREFIXES.get(gateway) if type(gateway) is str else None
    if prefix is None:
        prefix = _prefix(gateway)
    if 0 <= shard < MAX_SHARDS:
        return prefix + _NUMBERS[shard]
    return f"{prefix}{shard}"


# Gateway (exactly str) -> its shards' common prefix (``sess:seen:{GW}:``): a gateway's
# calls each build it again (an f-string and _tagged's, ~1,000 instructions per
# authorize and per accounting packet, round 12a). A deployment's gateways are few;
# cleared when full.
_PREFIXES: Final[dict[str, str]] = {}
_PREFIXES_MAX: Final = 10_000


def _prefix(gateway: str) -> str:
    """The common prefix of ``gateway``'s shards, remembered for an exact str."""
    prefix = f"{PREFIX}{_tagged(gateway)}:"
    if type(gateway) is str:  # (a subclass's hash and equality may be its own)
        if len(_PREFIXES) >= _PREFIXES_MAX:
            _PREFIXES.clear()
        _PREFIXES[gateway] = prefix
    return prefix


def sibling(key: str, shard: int) -> str:
    """The key of shard ``shard`` of the gateway whose shard ``key`` is."""
    return f"{key[: key.rindex(':') + 1]}{shard}"


def lastseen_key(gateway: str, session_id: str, shards: int = DEFAULT_SHARDS) -> str:
    """The last-seen zset (shard) of one call of ``gateway``."""
    return shard_key(gateway, shard_of(session_id, shards))


def locator_key(session_id: str, shards: int = DEFAULT_SHARDS) -> str:
    """The locator hash (shard) of a live call: field session id -> account id, one of
    ``LOCATOR_FACTOR`` x ``shards`` (the deployment's last-seen shard count)."""
    return f"{LOCATORS}{shard_of(session_id, shards * LOCATOR_FACTOR)}"


def call_keys(
    keys: list[str], gateway: str, session_id: str, shards: int, *, locator: bool
) -> str | None:
    """Append a new call's last-seen shard (lastseen_key) to ``keys``; with ``locator``,
    return its locator shard (locator_key), else None: the session id's crc32 taken once
    for both (an authorize's, round 12a)."""
    crc = zlib.crc32(session_id.encode())
    keys.append(shard_key(gateway, crc % shards))
    return f"{LOCATORS}{crc % (shards * LOCATOR_FACTOR)}" if locator else None


def close_keys(gateway: str, session_id: str, shards: int) -> tuple[str, str, str]:
    """lastseen_key, locator_key and old_locator_key of one call of ``gateway``: the
    session id's crc32 taken once for the three (a close's, round 13b)."""
    crc = zlib.crc32(session_id.encode())
    return (
        shard_key(gateway, crc % shards),
        f"{LOCATORS}{crc % (shards * LOCATOR_FACTOR)}",
        f"{OLD_LOCATORS}{crc % shards}",
    )


def old_locator_key(session_id: str, shards: int = DEFAULT_SHARDS) -> str:
    """The locator hash of a live call as daemons before 2026-12-06 write it (one per
    last-seen shard)."""
    return f"{OLD_LOCATORS}{shard_of(session_id, shards)}"


_NUMBERS: Final = [str(n) for n in range(MAX_SHARDS)]


def shard_keys(gateway: str, shards: int = DEFAULT_SHARDS) -> list[str]:
    """Every shard of one gateway's last-seen index, in shard order."""
    prefix = f"{PREFIX}{_tagged(gateway)}:"
    return [prefix + n for n in _NUMBERS[:shards]]


def over_shards(keys: list[str], *args: Any) -> tuple[Any, ...]:
    """The EVALSHA of lastseen_shards.lua over one gateway's shard ``keys``."""
    return ("EVALSHA", SHARDS_SHA, len(keys), *keys, *args)


async def count_per_gateway(
    redis: Any, gateways: list[str], shards: int, batcher: Any = None
) -> list[int]:
    """Live calls of each gateway (one script per gateway), for a reader without a
    SessionStore (monitoring). ``batcher``: the Ledger's CommandBatcher (single Redis:
    packed by hiredis, ~10x less client CPU than redis-py's pipeline for these
    ``shards``-key commands); None: one redis-py pipeline (Redis Cluster)."""
    commands = [over_shards(shard_keys(g, shards), "count") for g in gateways]
    if batcher is not None:

        def again(command: tuple[Any, ...]) -> Callable[[], Awaitable[Any]]:
            async def retry() -> Any:  # NOSCRIPT: a restarted or flushed Redis
                await redis.script_load(SHARDS_LUA)
                return await redis.execute_command(*command)

            return retry

        futures = batcher.submit_many([(c, again(c)) for c in commands])
        return [int(n) for n in await asyncio.gather(*futures)]
    for attempt in (1, 2):
        pipe = redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            return [int(n) for n in await pipe.execute()]
        except NoScriptError:
            if attempt == 2:
                raise
            await redis.script_load(SHARDS_LUA)
    raise AssertionError("unreachable")


def parse_shards(raw: Any, default: int = DEFAULT_SHARDS) -> int:
    """The shard count of ``sess:shards``'s value (``default`` if none or invalid)."""
    return _int(raw) or default


def _int(raw: Any) -> int | None:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= MAX_SHARDS else None


async def agree_shards(redis: Any, configured: int) -> tuple[int, bool]:
    """The deployment's shard count: ``configured`` if none is stored yet (stored now),
    else the stored one (a warning when it differs from ``configured``); and whether
    this call stored it (then entries of another count may need their move)."""
    stored_now = bool(await redis.set(SHARDS_KEY, configured, nx=True))
    stored = _int(await redis.get(SHARDS_KEY))
    if stored is None:
        log.error("%s holds no shard count in 1..%d: using %d", SHARDS_KEY, MAX_SHARDS, configured)
        return configured, False
    if stored != configured:
        log.warning(
            "[sessions] lastseen_shards = %d, but this deployment uses %d (%s): using %d",
            configured,
            stored,
            SHARDS_KEY,
            stored,
        )
    return stored, stored_now


async def stored_shards(redis: Any, default: int = DEFAULT_SHARDS) -> int:
    """The stored shard count, for a reader that writes nothing (``default`` if none)."""
    return parse_shards(await redis.get(SHARDS_KEY), default)
