"""Merge the fraud keys of the version before the one value, once at start.

Before 5408b4e an account's authorize state was several keys: ``{a:ID}:fr:st`` (a
hash: since, deny:RULE[|IDENTITY] -> until ms, blocked_by, blocked_ms,
unblocked_by), ``{a:ID}:fr:live`` (a zset: session id -> ms its entry lapses) and
``{a:ID}:fr:cc`` (a hash: country -> ms of the last call). It is now one value,
``{a:ID}:fr:v`` (lua/fraud.lua). Without this, calls live across the upgrade were not
counted by ``concurrent`` and deny flags of refusing event rules were lifted.

``upgrade_fraud_keys`` scans every master (Redis Cluster: each primary) for the old
keys and merges each account's into its value in one script (lua/upgrade.lua: same
slot; a merge, so a value written meanwhile keeps what it has), then deletes them.
Idempotent; two daemons starting at once merge each account once. The old counters
(``:fr:log`` of authorize calls, ``:fr:id:*``, ``:fr:rg:*``, ``{fip:IP}:fr:log``) are
not converted: they expire within their windows (docs/fraud.md, Redis keys).
FraudEvents.start runs it (the main process) before counting events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio.cluster import RedisCluster

log = logging.getLogger("chargingd.fraud.upgrade")

OLD_PATTERNS = ("{a:*}:fr:st", "{a:*}:fr:live", "{a:*}:fr:cc")
SCAN_COUNT = 1000


@dataclass
class FraudUpgrade:
    accounts: int = 0  # accounts whose old keys were merged
    live: int = 0  # live calls merged
    deny: int = 0  # deny flags merged


async def upgrade_fraud_keys(redis: Any, now_ms: int, value_ttl_ms: int) -> FraudUpgrade:
    """Merge every account's old fraud keys into its value (see the module)."""
    tags: set[str] = set()
    for pattern in OLD_PATTERNS:
        scan: dict[str, Any] = {"match": pattern, "count": SCAN_COUNT}
        if isinstance(redis, RedisCluster):
            scan["target_nodes"] = RedisCluster.PRIMARIES
        async for raw in redis.scan_iter(**scan):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            tags.add(key[: key.rindex(":fr:")])
    done = FraudUpgrade()
    if not tags:
        return done
    lua = (resources.files("chargingd.fraud") / "lua" / "upgrade.lua").read_text()
    script = redis.register_script(lua)
    for tag in sorted(tags):
        keys = [f"{tag}:fr:v", f"{tag}:fr:st", f"{tag}:fr:live", f"{tag}:fr:cc"]
        live, deny, _ = await script(keys=keys, args=[now_ms, value_ttl_ms])
        done.accounts += 1
        done.live += int(live)
        done.deny += int(deny)
    log.warning(
        "fraud upgrade: merged the old fraud keys of %d accounts into their values"
        " (%d live calls, %d deny flags)",
        done.accounts,
        done.live,
        done.deny,
    )
    return done
