"""Which record layout a deployment writes ([sessions] compact_records unset by default:
sessions/layoutchoice.py): COMPACT on a new Redis, LEGACY on one an existing deployment
uses until an operator says true, the choice stored for every daemon."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from chargingd.app.factory import Factory
from chargingd.core.config import config_from_dict
from chargingd.sessions.layoutchoice import LAYOUT_KEY, agree_compact
from chargingd.sessions.record import COMPACT, LEGACY


async def test_a_new_redis_takes_compact_and_stores_it(redis: aioredis.Redis) -> None:
    assert await agree_compact(redis, None, store=True) is True
    assert await redis.get(LAYOUT_KEY) == b"compact"
    assert await agree_compact(redis, None, store=True) is True  # the next daemon follows


@pytest.mark.parametrize("key", ["ledger:accounts", "sess:shards"])
async def test_an_existing_deployment_stays_legacy_until_told(
    redis: aioredis.Redis, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An older daemon may be serving this Redis: it cannot read COMPACT records."""
    if key == "ledger:accounts":
        await redis.sadd(key, "acc1")
    else:
        await redis.set(key, "128")
    with caplog.at_level(logging.WARNING, logger="chargingd.sessions"):
        assert await agree_compact(redis, None, store=True) is False
    assert await redis.get(LAYOUT_KEY) is None  # nothing chosen for the operator
    assert "set [sessions] compact_records = true" in caplog.text
    # Step 2 of the upgrade: one daemon configured true stores the choice ...
    assert await agree_compact(redis, True, store=True) is True
    assert await redis.get(LAYOUT_KEY) == b"compact"
    # ... which the daemons left unset follow from then on.
    assert await agree_compact(redis, None, store=True) is True


async def test_false_is_stored_and_followed(redis: aioredis.Redis) -> None:
    """Going back to an older version: false first, and every unset daemon follows."""
    assert await agree_compact(redis, None, store=True) is True
    assert await agree_compact(redis, False, store=True) is False
    assert await redis.get(LAYOUT_KEY) == b"legacy"
    assert await agree_compact(redis, None, store=True) is False


async def test_a_damaged_choice_writes_legacy(
    redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.set(LAYOUT_KEY, "tiny")
    with caplog.at_level(logging.ERROR, logger="chargingd.sessions"):
        assert await agree_compact(redis, None, store=True) is False
    assert "neither compact nor legacy" in caplog.text


async def test_workers_and_tools_only_read_the_choice(redis: aioredis.Redis) -> None:
    """A command-line tool's copy of the config must not choose for the deployment."""
    assert await agree_compact(redis, None) is False  # nothing stored: LEGACY
    assert await agree_compact(redis, True) is True  # its own setting, for itself
    assert await redis.get(LAYOUT_KEY) is None
    assert await agree_compact(redis, None, store=True) is True  # the daemon's main
    assert await agree_compact(redis, None) is True  # a worker follows it
    await redis.set(LAYOUT_KEY, "legacy")
    assert await agree_compact(redis, None) is False


@pytest.mark.parametrize(("existing", "layout"), [(False, COMPACT), (True, LEGACY)])
async def test_the_factory_builds_sessions_with_the_agreed_layout(
    redis: aioredis.Redis, existing: bool, layout: object
) -> None:
    if existing:
        await redis.sadd("ledger:accounts", "acc1")
    main = Factory(config_from_dict({}))
    assert main.cfg.sessions.compact_records is None
    await main.agree_records(redis, store=True)  # serve's main process, at start
    ledger = await main.open_ledger(redis)
    assert main.cfg.sessions.compact_records is (not existing)
    assert main.sessions(redis, ledger).store.layout is layout
    worker = Factory(config_from_dict({}))  # a worker, or a tool: reads the choice
    ledger = await worker.open_ledger(redis)
    assert worker.sessions(redis, ledger).store.layout is layout
