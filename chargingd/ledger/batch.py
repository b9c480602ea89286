"""Send the ledger commands issued in one event-loop tick as one pipeline.

A pipeline also leaves early, before the tick ends, once it holds ``early`` commands
while Redis has none of this batcher's pipelines in hand (every connection idle):
otherwise, with every request of a burst waiting on one pipeline, the daemon and Redis
take turns (each idle while the other works: the kit's single worker was ~75 % busy at
32 outstanding). Early, Redis works on the first requests while the daemon prepares
the rest. At most one early pipeline per idle spell, so a busy Redis still gets one
pipeline per tick (more, smaller pipelines cost both sides syscalls); and none while the
frontend has a backlog (``backlog``: requests read while every worker task is busy): a
saturated daemon gains nothing from overlap and would only pay for more pipelines. ``[redis]
batch_early`` (docs/performance.md "Round 9").

PERFORMANCE.md: one awaited redis-py call costs ~57 us of client CPU, a pipelined one
~22 us. Concurrent requests of the RADIUS hot path each await their own script call;
this collects the calls made during one loop iteration and sends them in one
round trip (non-transactional: each script stays atomic on its own). Order within a
batch is preserved, so "index the hold, then reserve" still holds on one connection.
Only for a single Redis (a cluster pipeline splits by node and loses that order).
Commands are packed by hiredis and written on one pooled connection: a thin one
(ledger.thin: an asyncio protocol whose hiredis.Reader resolves the batch's futures in
order, no coroutine per reply) unless the client's settings need redis-py's (TLS,
RESP3, a credential provider), where the replies are read in order with
``read_response`` (redis-py's own Pipeline packs in pure Python).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chargingd.core.chain import chained
from chargingd.ledger.thin import (
    CommandNotSent,
    Entry,
    Group,
    Retry,
    Slot,
    ThinPool,
    Waiter,
    packable,
)

try:  # hiredis packs a command in C; redis-py's asyncio packer is pure Python (~15 us)
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _pack = None  # type: ignore[assignment]

__all__ = ["CommandBatcher", "CommandNotSent", "Retry"]


class CommandBatcher:
    """Queue commands; flush them as one pipeline on the next loop iteration (or early:
    see the module's docstring, ``early`` and ``backlog``)."""

    def __init__(
        self, redis: Redis, max_batch: int = 512, *, thin: bool = True, early: int = 16
    ) -> None:
        self.redis = redis
        self.max_batch = max_batch
        self.early = early  # 0: only at the tick's end (or max_batch)
        # The frontend's requests waiting for a worker (None: not known, taken as 0).
        self.backlog: Callable[[], int] | None = None
        self._queue: list[Entry] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self.batches = 0  # counters for benchmarks and status
        self.commands = 0
        # The thin connections (None: redis-py's, for settings they do not speak).
        self.thin = ThinPool.for_client(redis, self._retry) if thin else None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it queues on (_running)

    def _running(self) -> asyncio.AbstractEventLoop:
        """The running loop: the one kept while it runs (asyncio.get_running_loop makes a
        getpid system call on every call in CPython 3.11: one per authorize and per
        accounting packet, ~0.3 us; a loop's own is_running is a field read). Another
        loop (a test's next one) is looked up again once the kept one stopped."""
        loop = self._loop
        if loop is None or not loop.is_running():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def submit(self, command: tuple[Any, ...], retry: Retry = None) -> asyncio.Future[Any]:
        """Queue one command; its future resolves to the reply (or the error)."""
        return self.submit_many([(command, retry)])[0]

    def submit_many(
        self, commands: list[tuple[tuple[Any, ...], Retry]]
    ) -> list[asyncio.Future[Any]]:
        """Queue commands that must go out together, in this order, on one connection."""
        loop = self._running()
        futures: list[asyncio.Future[Any]] = []
        for command, retry in commands:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append((command, future, retry))
            futures.append(future)
        queued = len(self._queue)
        if queued >= self.max_batch or (0 < self.early <= queued and self._redis_idle()):
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return futures

    def submit_group(
        self, commands: list[tuple[tuple[Any, ...], Retry]]
    ) -> asyncio.Future[list[Any]]:
        """submit_many's commands with one future for all of them: it resolves, once
        every command's outcome is known, to their replies in order, each command's
        error (a ResponseError, NOSCRIPT after its retry, a lost connection) in its
        place as the exception; it is cancelled when any of them is."""
        loop = self._running()
        future: asyncio.Future[list[Any]] = loop.create_future()
        group = Group(future, len(commands))
        queue = self._queue
        index = 0
        for command, retry in commands:
            queue.append((command, Slot(group, index), retry))
            index += 1
        if not index:
            future.set_result([])
            return future
        queued = len(queue)
        if queued >= self.max_batch or (0 < self.early <= queued and self._redis_idle()):
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _redis_idle(self) -> bool:
        """No pipeline of this batcher in Redis's hands or on its way there (a task
        still opening its connection, redis-py's exchange, a NOSCRIPT retry), and no
        backlog of requests behind this tick's."""
        for task in self._inflight:  # (a finished one's discard may still be pending)
            if not task.done():
                return False
        thin = self.thin
        if thin is not None and len(thin.open) != len(thin.idle):
            return False
        backlog = self.backlog
        return backlog is None or backlog() == 0

    def _flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        self.batches += 1
        self.commands += len(batch)
        if self.thin is not None:
            conn = self.thin.take()
            if conn is not None:  # the common case: no task, no coroutine
                conn.send(batch)
                return
            send = self._send_thin(batch)
        else:
            send = self._send(batch)
        task = self._running().create_task(send)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send_thin(self, batch: list[Entry]) -> None:
        """Open a thin connection (none idle), then write the batch on it."""
        assert self.thin is not None
        try:
            conn = await self.thin.connect()
        except asyncio.CancelledError:
            for _, future, _ in batch:
                future.cancel()
            raise
        except Exception as exc:  # CommandNotSent: the batch never left
            _fail(batch, exc)
            return
        conn.send(batch)

    def close(self) -> None:
        """Drop the thin connections; batches in flight on them are cancelled (their
        futures too: replies may still be in flight). The client's aclose does it too."""
        if self.thin is not None:
            self.thin.close()

    async def _send(self, batch: list[Entry]) -> None:
        pool = self.redis.connection_pool
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:
            _fail(batch, CommandNotSent(str(exc)) if isinstance(exc, RedisConnectionError) else exc)
            return
        try:
            await self._exchange(conn, batch)
        except asyncio.CancelledError:
            await conn.disconnect(nowait=True)  # replies may still be in flight
            for _, future, _ in batch:
                future.cancel()
            raise
        except Exception as exc:  # connection lost, timeout: every caller learns it
            await conn.disconnect(nowait=True)
            _fail(batch, exc)
        finally:
            await pool.release(conn)

    async def _exchange(self, conn: Any, batch: list[Entry]) -> None:
        """Write every command at once, then read the replies in order."""
        if _pack is not None:
            try:
                data = b"".join([_pack(c) for c, _, _ in batch])
            except Exception:  # a command that cannot be packed fails alone (packable)
                batch, data = packable(batch)
            await conn.send_packed_command(data)
        else:
            await conn.send_packed_command([p for c, _, _ in batch for p in conn.pack_command(*c)])
        # One deadline (the socket timeout) for the whole batch: redis-py's own, per
        # reply, costs a timeout context per command.
        try:
            async with asyncio.timeout(conn.socket_timeout):
                await self._read_replies(conn, batch)
        except TimeoutError as exc:
            raise chained(
                RedisTimeoutError("Timeout reading the replies of a pipeline"), exc
            ) from exc

    async def _read_replies(self, conn: Any, batch: list[Entry]) -> None:
        for _, future, retry in batch:
            try:
                result = await conn.read_response(timeout=math.inf)  # inf: no own deadline
            except NoScriptError as exc:
                if retry is not None:
                    self._retry(future, retry)
                elif not future.done():
                    future.set_exception(exc)
                continue
            except ResponseError as failed:  # this command failed; the connection is fine
                if not future.done():
                    future.set_exception(failed)
                continue
            if not future.done():  # done: the caller was cancelled; the command ran anyway
                future.set_result(result)

    def _retry(self, future: Waiter, retry: Callable[[], Awaitable[Any]]) -> None:
        async def again() -> None:
            try:
                result = await retry()
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(result)

        task = asyncio.get_running_loop().create_task(again())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)


def _fail(batch: list[Entry], exc: Exception) -> None:
    for _, future, _ in batch:
        if not future.done():
            future.set_exception(exc)
