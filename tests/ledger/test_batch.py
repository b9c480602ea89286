"""The ledger's per-tick command batching and EVALSHA reload on NOSCRIPT, on a real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode
from chargingd.ledger import keys as K
from chargingd.ledger.batch import CommandBatcher


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "unbatched"])
async def test_scripts_reload_after_script_flush(redis: aioredis.Redis, batch: bool) -> None:
    ledger = Ledger(redis, batch_commands=batch)
    await ledger.load_scripts()
    await ledger.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=99, who="o")
    await redis.script_flush()
    grants = await asyncio.gather(
        *(ledger.reserve("a", f"s{i}", 10, lease_ms=60_000) for i in range(5))
    )
    assert [g.granted_micros for g in grants] == [10] * 5
    assert (await ledger.get_account("a")).reserved_micros == 50


async def test_concurrent_calls_share_pipelines(redis: aioredis.Redis) -> None:
    ledger = Ledger(redis)
    assert ledger._batcher is not None  # on by default for a single Redis
    await ledger.create_account(
        "a", mode=Mode.PREPAID, currency="EUR", balance_micros=10**9, who="o"
    )
    before = ledger._batcher.batches
    grants = await asyncio.gather(
        *(ledger.reserve("a", f"s{i}", 10, lease_ms=60_000) for i in range(100))
    )
    assert all(g.ok for g in grants)
    assert ledger._batcher.batches - before <= 3  # 100 reserves + 1 index write
    results = await asyncio.gather(*(ledger.release("a", f"s{i}", 7) for i in range(100)))
    assert sum(r.debited_micros for r in results) == 700
    acc = await ledger.get_account("a")
    assert (acc.reserved_micros, acc.debits_micros, acc.live_sessions) == (0, 700, 0)


@pytest.mark.parametrize("thin", [True, False], ids=["thin", "redis-py"])
async def test_early_pipeline_only_while_redis_idle(redis: aioredis.Redis, thin: bool) -> None:
    """The first `early` commands of a tick leave at once when Redis has nothing of the
    batcher's; the rest wait for the tick's end, in one pipeline (not one per `early`)."""
    batcher = CommandBatcher(redis, thin=thin, early=4)
    assert await batcher.submit(("SET", "n", "0")) == b"OK"  # a connection, now idle
    futures = [batcher.submit(("INCR", "n")) for _ in range(10)]
    assert batcher.batches == 2  # the SET's, then 4 INCRs before the tick ended
    assert sorted(await asyncio.gather(*futures)) == list(range(1, 11))
    assert batcher.batches == 3  # the other 6 together
    off = CommandBatcher(redis, thin=thin, early=0)  # [redis] batch_early = 0
    futures = [off.submit(("INCR", "n")) for _ in range(10)]
    assert off.batches == 0
    assert sorted(await asyncio.gather(*futures)) == list(range(11, 21))
    assert off.batches == 1
    waiting = [3]  # requests the frontend has read and no worker has taken up yet
    batcher.backlog = lambda: waiting[0]
    futures = [batcher.submit(("INCR", "n")) for _ in range(10)]
    assert batcher.batches == 3  # a backlog: no early pipeline, Redis idle or not
    assert sorted(await asyncio.gather(*futures)) == list(range(21, 31))
    waiting[0] = 0
    futures = [batcher.submit(("INCR", "n")) for _ in range(10)]
    assert batcher.batches == 5  # none waiting: early again
    assert sorted(await asyncio.gather(*futures)) == list(range(31, 41))


async def test_one_failing_command_does_not_fail_its_batch(redis: aioredis.Redis) -> None:
    batcher = CommandBatcher(redis)
    await redis.set("str", "x")
    ok1 = batcher.submit(("SET", "k1", "1"))
    bad = batcher.submit(("HGET", "str", "f"))  # WRONGTYPE
    ok2 = batcher.submit(("INCR", "k2"))
    assert await ok1 == b"OK"  # raw replies: no redis-py response callbacks
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bad
    assert await ok2 == 1
    assert batcher.batches == 1 and batcher.commands == 3


async def test_connection_loss_fails_every_caller(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, appendfsync="no")
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    try:
        ledger = Ledger(client)
        await ledger.create_account("a", mode=Mode.PREPAID, currency="EUR", who="o")
        server.stop()
        calls = [ledger.commit("a", f"s{i}", 5) for i in range(3)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, (RedisConnectionError, OSError)) for o in outcomes), outcomes
    finally:
        await client.aclose()
        server.stop()


async def test_hold_index_written_before_reserve(redis: aioredis.Redis) -> None:
    ledger = Ledger(redis, clock_ms=lambda: 1_000)
    await ledger.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=50, who="o")
    await ledger.reserve("a", "s1", 10, lease_ms=2_000)
    score = await redis.zscore(K.HOLD_INDEX_KEY, "a")
    assert score == 1_000 + 2_000 + ledger.hold_index_pad_ms
    # A shorter lease within the indexed horizon needs no new index write.
    await redis.zadd(K.HOLD_INDEX_KEY, {"a": 1})
    await ledger.reserve("a", "s2", 10, lease_ms=1_000)
    assert await redis.zscore(K.HOLD_INDEX_KEY, "a") == 1


def test_every_script_names_its_keys_and_argv_at_the_top() -> None:
    from importlib import resources

    from chargingd.ledger.base import _SCRIPTS

    lua = resources.files("chargingd.ledger") / "lua"
    for name in _SCRIPTS:
        head = (lua / f"{name}.lua").read_text().split("\n")[:12]
        assert head[0].startswith(f"-- {name}:"), name
        assert any("KEYS[1]" in line for line in head), name
        assert any("Returns" in line for line in head), name


async def test_the_running_loop_is_looked_up_once_while_it_runs(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncio.get_running_loop makes a getpid system call per call on CPython 3.11
    (one per authorize and accounting packet before): the batcher keeps its loop while
    it runs, and every group is still answered right."""
    batcher = CommandBatcher(redis)

    async def round_(n: int) -> list[list[object]]:
        groups = [
            batcher.submit_group([(("SET", f"k{i}", str(i)), None), (("GET", f"k{i}"), None)])
            for i in range(n)
        ]
        return await asyncio.gather(*groups)

    await round_(50)  # the connections this load needs are open
    looked_up = []
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        looked_up.append(1)
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    replies = await round_(50)
    more = await batcher.submit_group([(("GET", "k7"), None)])
    assert [r[1] for r in replies] == [str(i).encode() for i in range(50)]
    assert more == [b"7"]
    assert looked_up == []  # the kept loop: no look-up per group
