"""Upgrade session records of the hash format to the msgpack record, once at start.

Before 6db408c a session record was a Redis hash ``{a:ACC}:s:SID`` of its fields by
their full names (integers as decimal strings, the ids included); it is now one
msgpack value ``{a:ACC}:r:SID`` (sessions/record.py). Nothing else of a session
changed its name: the live set ``{a:ACC}:live``, the locator ``sess:loc:SID``, the
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
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

import msgpack
from redis.asyncio.cluster import RedisCluster

from chargingd.sessions.record import CODES, SessionRecord

log = logging.getLogger("chargingd.sessions.upgrade")

OLD_PATTERN = "{a:*}:s:*"  # the old records; the close leases ({a:ACC}:s:SID:fin) are strings
_OLD_INFIX = "}:s:"
SCAN_COUNT = 1000


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
    for f in dataclasses.fields(SessionRecord):
        if f.name not in CODES:
            continue  # the ids: in the key
        entry: list[Any] = [CODES[f.name], 1 if f.type in ("int", int) else 0]
        if f.name != "state" and f.default is not dataclasses.MISSING:
            entry.append(f.default)
        spec[f.name] = entry
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


async def upgrade_and_log(redis: Any) -> UpgradeCounts:
    """upgrade_records, logged: what the operator reads after an upgrade."""
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
    return counts
