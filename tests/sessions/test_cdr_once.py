"""A CDR is added to the stream once, however often its XADD is sent (store.append_cdr,
session_cdr_once.lua): the path of Redis Cluster, where the close's CDR and its closed
mark are two steps on two nodes.

The failure it prevents: the client sent the XADD, the master ran it (and replicated
it), the connection dropped before the reply, and redis-py sent the command again, on
the promoted replica: a second CDR of the call (seen in CI's cluster failover test).
Here a TCP proxy in front of a real redis-server drops the connection right after
Redis answered the first CDR's command, so the client's retry is the real one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from cdr_factory import make_cdr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.sessions.store import CDR_ONCE_TTL_S, SessionStore, cdr_once_key


class _DropFirstReply:
    """Forwards to Redis; the first reply to a command naming the CDR stream is
    swallowed and the client's connection closed (the command ran)."""

    def __init__(self, upstream: dict[str, Any]) -> None:
        self.upstream = upstream  # the client's connection kwargs: a path or a port
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if "path" in self.upstream:
            up_r, up_w = await asyncio.open_unix_connection(self.upstream["path"])
        else:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream["port"])
        try:
            while data := await reader.read(65536):
                up_w.write(data)
                await up_w.drain()
                reply = await up_r.read(65536)
                if CDR_STREAM.encode() in data and not self.dropped:
                    self.dropped += 1
                    return  # Redis ran it; the client never hears
                writer.write(reply)
                await writer.drain()
        finally:
            up_w.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def _entries(redis: Any) -> list[CDR]:
    return [CDR.unpack(f[b"cdr"]) for _, f in await redis.xrange(CDR_STREAM)]


async def test_a_retried_xadd_whose_first_send_ran_adds_one_cdr(redis: Redis) -> None:
    proxy = _DropFirstReply(redis.connection_pool.connection_kwargs)
    port = await proxy.start()
    # As the cluster client is configured (core.redisconn): sent again on a dropped
    # connection.
    client = Redis(
        host="127.0.0.1",
        port=port,
        retry=Retry(NoBackoff(), 2),
        retry_on_error=[RedisConnectionError],
    )
    try:
        store = SessionStore(client, session_ttl_s=3600, closed_ttl_s=60, batch_commands=False)
        await SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60).load_scripts()
        cdr = make_cdr(1)
        first = await store.append_cdr(cdr)
        assert proxy.dropped == 1  # the first send ran, its reply was lost, it was sent again
        assert await _entries(redis) == [cdr]
        # the marker holds the entry's id, kept CDR_ONCE_TTL_S
        key = cdr_once_key(cdr.pack())
        assert await redis.get(key) == first
        assert 0 < await redis.ttl(key) <= CDR_ONCE_TTL_S
        # the same bytes again (a close run again): the first entry's id, nothing added
        assert await store.append_cdr(cdr) == first
        # another CDR of the call (a correction's next revision) is added
        corrected = make_cdr(1, revision=1, cost_micros=cdr.cost_micros + 1)
        assert await store.append_cdr(corrected) != first
        assert await _entries(redis) == [cdr, corrected]
    finally:
        await client.aclose()
        await proxy.stop()


async def test_concurrent_sends_of_one_cdr_add_it_once(redis: Redis) -> None:
    store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, batch_commands=False)
    await store.load_scripts()
    cdrs = [make_cdr(i) for i in range(20)]
    ids = await asyncio.gather(*(store.append_cdr(c) for c in cdrs * 4))
    assert len(set(ids)) == 20
    assert sorted(c.call_id for c in await _entries(redis)) == sorted(c.call_id for c in cdrs)


def test_the_marker_is_in_the_streams_slot() -> None:
    """One script writes both keys: on a cluster they must share a slot."""
    for i in range(200):
        packed = make_cdr(i).pack()
        assert key_slot(cdr_once_key(packed).encode()) == key_slot(CDR_STREAM.encode())
