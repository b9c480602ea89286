"""ASR / RAR from a process without the peer's connection (a RADIUS worker) go
through Redis to the process that holds it, and its answer comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import running_frontend
from sessions_harness import EUR, add_account

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
