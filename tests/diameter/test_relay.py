"""ASR / RAR from a process without the peer's connection (a RADIUS worker) go
through Redis to the process that holds it, and its answer comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import running_frontend
from sessions_harness import EUR, add_account

from chargingd.core.config import RedisConfig
from chargingd.core.redisconn import EmbeddedRedis, connect
from chargingd.diameter import client as cl
from chargingd.diameter.dictionary import Cmd
from chargingd.diameter.relay import RelayClient, RelayServer, owner_key
from chargingd.sessions.ccapi import SessionRef


async def test_asr_and_rar_relayed_to_the_process_holding_the_link(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    async with running_frontend(redis, tmp_path) as running:
        await add_account(running.ledger, balance_micros=EUR, identities=("ani:+4930555000",))
        client = await open_client(running.port)
        c = cl.Call("relay-1", calling="+4930555000", called="tel:+4930123456")
        assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
        server = RelayServer(
            redis,
            running.frontend.initiated,
            peers_open=running.frontend.server.open_peer_names,
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(server.run(stop))
        try:
            # The owner announces itself within a poll.
            for _ in range(100):
                if await redis.get(owner_key("ims1")):
                    break
                await asyncio.sleep(0.02)
            remote = RelayClient(redis, timeout_s=3.0)  # what a worker's cut router holds
            ref = SessionRef("relay-1", "", "scphone", "ims1")
            assert await remote.change_timeout(ref, 0)
            assert await remote.disconnect(ref, "credit_cut")
            kinds = [m.command for m in client.server_requests]
            assert kinds == [Cmd.RE_AUTH, Cmd.ABORT_SESSION]
            assert server.served == 2
            # A peer nobody holds: no answer to wait for, a plain failure.
            assert not await remote.disconnect(SessionRef("x", "", "", "nobody"), "killed")
            client.answer_asr = 5012  # the peer refuses: the relay says so
            assert not await remote.disconnect(ref, "credit_cut")
        finally:
            stop.set()
            await asyncio.wait_for(serving, 5)
            await client.close()


async def test_relay_works_with_a_short_command_timeout(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path, caplog: Any
) -> None:
    """[redis] command_timeout_s = 0.5 (the daemon's client, core/redisconn.connect):
    the relay server's BLPOP of 1 s outlived the socket timeout, so every poll failed
    (TimeoutError, a warning each) and a queued ASR/RAR was
    never served; the client's wait for a reply raced its socket timeout the same way
    (2 s against 2 s by default). Both now wait in BLPOPs that end before it."""
    short = connect(RedisConfig(url=redis_server.url, command_timeout_s=0.5))
    async with running_frontend(redis, tmp_path) as running:
        await add_account(running.ledger, balance_micros=EUR, identities=("ani:+4930555000",))
        client = await open_client(running.port)
        c = cl.Call("relay-short", calling="+4930555000", called="tel:+4930123456")
        assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
        server = RelayServer(
            short, running.frontend.initiated, peers_open=running.frontend.server.open_peer_names
        )
        stop = asyncio.Event()
        serving = asyncio.create_task(server.run(stop))
        try:
            for _ in range(100):
                if await redis.get(owner_key("ims1")):
                    break
                await asyncio.sleep(0.02)
            remote = RelayClient(short, timeout_s=3.0)
            ref = SessionRef("relay-short", "", "scphone", "ims1")
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await remote.change_timeout(ref, 0)
            assert await remote.disconnect(ref, "credit_cut")
            assert loop.time() - started < 3.0
            assert [m.command for m in client.server_requests] == [Cmd.RE_AUTH, Cmd.ABORT_SESSION]
            assert server.served == 2
        finally:
            stop.set()
            await asyncio.wait_for(serving, 5)
            await client.close()
        # An owner that does not answer: "unanswered" after the client's own 1 s.
        quiet = RelayClient(short, timeout_s=1.0)
        started = loop.time()
        assert not await quiet.disconnect(ref, "credit_cut")
        assert 0.9 <= loop.time() - started < 2.0 and quiet.unanswered == 1
    assert "relay queue unavailable" not in caplog.text
    await short.aclose()


async def test_unanswered_relay_at_the_default_timeouts_is_a_plain_failure(
    redis_server: EmbeddedRedis, redis: aioredis.Redis
) -> None:
    """The defaults: [redis] command_timeout_s 2 s, [diameter] request_timeout_s 2 s.
    A relay its owner does not answer waited in one BLPOP of 2 s on a socket that
    times out at 2 s: TimeoutError (a traceback in the cutter's log), not "unanswered"."""
    client = connect(RedisConfig(url=redis_server.url))
    await redis.set(owner_key("ims1"), "gone:1")  # a process that no longer serves
    remote = RelayClient(client, timeout_s=2.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await remote.disconnect(SessionRef("s1", "", "gw", "ims1"), "killed") is False
    # one wait of 2 s (a second one would be >= 4 s; a loaded box adds up to ~1 s)
    assert 1.9 <= loop.time() - started < 3.9 and remote.unanswered == 1
    await client.aclose()
