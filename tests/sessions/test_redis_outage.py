"""Redis unreachable: fail_closed refuses, fail_open accepts and spools, replay on return.

Each test runs its own real redis-server, stops it mid-test and starts it again on
the same directory (AOF), so the outage is real.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    T0_MS,
    Clock,
    RecordingCutter,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from chargingd.sessions.spool import Spool, SpoolFull
from chargingd.sessions.store import ORPHANS

PER_S = 10_000


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "r", appendfsync="always")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def own_redis(own_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_server.url)
    yield client
    await client.aclose()


async def test_fail_closed_refuses_with_system_error(
    own_server: EmbeddedRedis, own_redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(own_redis, clock)
    sessions = make_sessions(own_redis, ledger, clock, tmp_path / "data", RecordingCutter())
    await add_account(ledger)
    own_server.stop()
    answer = await sessions.authorize(call("s1"))
    assert isinstance(answer, Refused) and answer.code is RefusalCode.SYSTEM_ERROR


async def test_fail_open_accepts_spools_and_replays(
    own_server: EmbeddedRedis, own_redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(own_redis, clock)
    sessions = make_sessions(
        own_redis,
        ledger,
        clock,
        tmp_path / "data",
        RecordingCutter(),
        redis_failure_policy="fail_open",
        fail_open_timeout_s=120,
    )
    await add_account(ledger)
    live = call("live")
    assert isinstance(await sessions.authorize(live), Authorized)
    await sessions.account(usage(live, UsageKind.START, 0, T0_MS))

    own_server.stop()
    answer = await sessions.authorize(call("blind"))
    assert answer == Authorized(
        account_id="", session_timeout_s=120, interim_interval_s=60, credit_micros=0, currency=""
    )
    await sessions.account(usage(live, UsageKind.STOP, 30, T0_MS + 30_000))
    lines = sessions.spool.path.read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["authorize", "usage"]

    own_server.start()
    await sessions.reaper.run_once()
    (cdr,) = await read_cdrs(own_redis)
    assert (cdr.call_id, cdr.duration_s, cdr.cost_micros) == ("live", 30, 30 * PER_S)
    orphans = await own_redis.xrange(ORPHANS)
    assert [(f[b"reason"], f[b"call.session_id"]) for _, f in orphans] == [
        (b"fail_open_authorize", b"blind")
    ]
    assert not sessions.spool.path.exists()
    account = await ledger.get_account("acc1")
    assert (account.debits_micros, account.reserved_micros) == (30 * PER_S, 0)


def test_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=2)
    spool.append({"n": 1})
    spool.append({"n": 2})
    with pytest.raises(SpoolFull):
        spool.append({"n": 3})
    assert len(spool.path.read_text().splitlines()) == 2


async def test_spool_of_a_dead_process_is_replayed_once(tmp_path: Path) -> None:
    dead = Spool(tmp_path, max_entries=10, pid=2**22 + 12345)  # no such pid
    dead.append({"n": 1})
    dead.append({"n": 2})
    seen: list[int] = []

    async def handler(entry: dict[str, int]) -> None:
        seen.append(entry["n"])

    mine = Spool(tmp_path, max_entries=10)
    assert await mine.replay(handler) == 2  # type: ignore[arg-type]
    assert await mine.replay(handler) == 0  # type: ignore[arg-type]
    assert seen == [1, 2]
