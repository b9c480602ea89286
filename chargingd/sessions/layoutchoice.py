"""Which layout of the session record a deployment writes ([sessions] compact_records;
docs/credit-control.md "Upgrading to compact records").

Daemons of versions before the COMPACT layout cannot read it, so the choice is the
deployment's, stored in Redis (``sess:layout``: "compact" or "legacy") like the shard
count (sessions/shards.py). A daemon configured true or false stores its choice; one
left unset follows the stored choice, and with none stored takes COMPACT on a new
Redis (no account and no session index: no daemon of an older version can be using
it) and LEGACY on one that an existing deployment uses (an older daemon may be
running: it would lose the calls it cannot read), until an operator sets true.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from chargingd.ledger.keys import ACCOUNTS_KEY
from chargingd.sessions.shards import SHARDS_KEY

log = logging.getLogger("chargingd.sessions")

LAYOUT_KEY: Final = "sess:layout"
COMPACT_VALUE: Final = "compact"
LEGACY_VALUE: Final = "legacy"
# Keys every deployment that has served anything holds (the ledger's account set, the
# sessions' shard count, written at first start since 2026-12-05): absent, Redis is new.
# One key a command: on Redis Cluster they live on different nodes.
DEPLOYMENT_KEYS: Final = (ACCOUNTS_KEY, SHARDS_KEY)


async def agree_compact(redis: Any, configured: bool | None, *, store: bool = False) -> bool:
    """Whether this process writes COMPACT records. ``store`` (the daemon's main
    process, at start): ``configured`` is stored as the deployment's choice, and with
    none configured or stored a new Redis takes COMPACT (stored) and an existing
    deployment's LEGACY (nothing stored: a warning says how). Otherwise (workers, which
    start after it; command-line tools, whose copy of the config may differ): nothing
    is stored, ``configured`` is taken as it is, else the stored choice, else LEGACY."""
    if configured is not None:
        if store:
            await redis.set(LAYOUT_KEY, COMPACT_VALUE if configured else LEGACY_VALUE)
        return configured
    stored = _text(await redis.get(LAYOUT_KEY))
    if stored is None:
        if not store:
            return False
        for key in DEPLOYMENT_KEYS:
            if await redis.exists(key):
                log.warning(
                    "session records stay in the legacy layout: this Redis holds an"
                    " existing deployment's data and no layout is chosen (%s); once every"
                    " daemon runs this version, set [sessions] compact_records = true"
                    " (~47 bytes less a call; docs/credit-control.md)",
                    LAYOUT_KEY,
                )
                return False
        await redis.set(LAYOUT_KEY, COMPACT_VALUE, nx=True)
        stored = _text(await redis.get(LAYOUT_KEY))
    if stored not in (COMPACT_VALUE, LEGACY_VALUE):
        log.error("%s holds %r, neither compact nor legacy: legacy written", LAYOUT_KEY, stored)
        return False
    return stored == COMPACT_VALUE


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
