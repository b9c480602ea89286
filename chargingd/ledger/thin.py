"""A thin Redis connection for the command batcher: an asyncio protocol on hiredis.Reader.

redis-py reads a pipeline's replies with one coroutine per reply, through its parser,
connection and pool layers (docs/performance.md, round 5: 14-16 us a call at 4
concurrent callers, ~5 us at 32-64, against 5 and ~3.3 here). A batch is written at
once; ``data_received`` feeds the bytes to a hiredis.Reader and resolves the batch's
futures in order: no task per batch, no coroutine per reply, one deadline per batch
(the client's socket timeout). A batch holds its connection until its last reply, as
with redis-py's pool: batches in flight at once each have their own, in order on it.
Connections come from the redis-py client's own settings (host and port or unix
socket, HELLO 3 or AUTH with username/password, db SELECT, connect and socket
timeouts, client name, max_connections); ``ThinPool.for_client`` answers None for
what it does not speak (TLS, a credential provider, a custom connection class,
decoded replies) and the batcher keeps redis-py's path.

Errors are redis-py's classes (its parser's table): CommandNotSent when no connection
could be had (nothing left this process; a connect or handshake timeout included),
TimeoutError or ConnectionError once a batch was written (Redis may have run it), a
ResponseError (NoScriptError included) for one command, and an error reply of a
ConnectionError class (LOADING, WRONGPASS) fails the rest of its batch and drops the
connection, as redis-py's read_response raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chargingd.core.chain import chained


class Waiter(Protocol):
    """What a batch entry's reply is given to: an asyncio.Future, or a Slot of a group
    of commands sent together (one future for all of them)."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...

    def set_exception(self, exception: BaseException, /) -> None: ...

    def cancel(self, msg: Any | None = None) -> bool: ...


# A retry for one command after NOSCRIPT (the script is loaded again, then re-run).
Retry = Callable[[], Awaitable[Any]] | None
Entry = tuple[tuple[Any, ...], Waiter, Retry]
# What the batcher does with NOSCRIPT: run the retry, resolve the future with it.
RetryHook = Callable[[Waiter, Callable[[], Awaitable[Any]]], None]


class Group:
    """Commands submitted together (CommandBatcher.submit_group): one future, resolved
    with every command's outcome in order (its reply, or the exception it failed with:
    a reply is never an exception at the top level, hiredis's error replies are raised
    as theirs) once the last is known; cancelled when any of them is (a dropped
    connection, the caller's task). Where a future per command cost its creation, its
    result and its own await in the caller: ~3,000 instructions a command, 7 of a
    Stop's close in one group (docs/performance.md, round 19a)."""

    __slots__ = ("future", "pending", "results")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.results: list[Any] = [None] * count
        self.pending = count

    def settle(self, index: int, outcome: Any) -> None:
        self.results[index] = outcome
        self.pending -= 1
        if self.pending == 0 and not self.future.done():
            self.future.set_result(self.results)


class Slot:
    """One command's place in a Group: a Waiter (done, set_result, set_exception, cancel
    as an asyncio.Future's, for the connection and the batcher)."""

    __slots__ = ("group", "index", "settled")

    def __init__(self, group: Group, index: int) -> None:
        self.group = group
        self.index = index
        self.settled = False

    def done(self) -> bool:
        return self.settled or self.group.future.done()

    def set_result(self, result: Any, /) -> None:
        if self.settled:
            raise asyncio.InvalidStateError("result is already set")
        self.settled = True
        self.group.settle(self.index, result)

    def set_exception(self, exception: BaseException, /) -> None:
        if self.settled:
            raise asyncio.InvalidStateError("result is already set")
        self.settled = True
        self.group.settle(self.index, exception)

    def cancel(self, msg: Any | None = None) -> bool:
        if self.settled:
            return False
        self.settled = True
        return self.group.future.cancel(msg)


_NONE: list[Entry] = []
_PUSH: type = getattr(hiredis, "PushNotification", type(None))  # hiredis >= 3.2
_BAD = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL


class CommandNotSent(RedisConnectionError):
    """No connection could be had: the batch never left this process (unlike a timeout,
    after which Redis may still run it)."""


# RESP headers by count/length (what hiredis writes with sprintf per argument)
_ARRAYS: Final = [f"*{n}\r\n".encode() for n in range(64)]
_HEADS: Final = [f"${n}\r\n".encode() for n in range(512)]
_CRLF: Final = b"\r\n"


def _pack_into(parts: list[bytes], command: tuple[Any, ...]) -> None:
    """Append ``command`` as hiredis.pack_command writes it: the same bytes for
    arguments of exactly bytes, str (UTF-8) or int; any other command (a float, a
    memoryview, an argument no Redis type takes, a str that is not UTF-8, no argument)
    is packed, or refused with its error, by hiredis itself. Built here: hiredis
    formats each argument's header with sprintf (~37,000 instructions per authorize,
    round 10b)."""
    count = len(command)
    if not 0 < count < 64:
        parts.append(hiredis.pack_command(command))
        return
    start = len(parts)
    parts.append(_ARRAYS[count])
    for arg in command:
        kind = type(arg)
        if kind is bytes:
            data: bytes = arg
        elif kind is str:
            text: str = arg
            try:
                data = text.encode()
            except UnicodeEncodeError:  # surrogates: hiredis's own error
                del parts[start:]
                parts.append(hiredis.pack_command(command))
                return
        elif kind is int:
            number: int = arg
            data = str(number).encode()
        else:
            del parts[start:]
            parts.append(hiredis.pack_command(command))
            return
        size = len(data)
        parts.append(_HEADS[size] if size < 512 else f"${size}\r\n".encode())
        parts.append(data)
        parts.append(_CRLF)


def pack_command(command: tuple[Any, ...]) -> bytes:
    """One command as hiredis.pack_command packs it (its error when it cannot)."""
    parts: list[bytes] = []
    _pack_into(parts, command)
    return b"".join(parts)


def _load_packer() -> Callable[[list[Entry]], bytes | None] | None:
    """ledger/_resp.c's pack_batch: None when it is not built (no compiler, `make
    uncompiled`)."""
    try:
        module = importlib.import_module("chargingd.ledger._resp")
    except ImportError:
        return None
    packer: Callable[[list[Entry]], bytes | None] = module.pack_batch
    return packer


# The C packer (ledger/_resp.c): the batch in one pass when every argument is exactly
# bytes, an ASCII str or a 64-bit int, else None (round 12a).
_PACK_C: Final = _load_packer()


def pack_batch(batch: list[Entry]) -> bytes:
    """Every command of ``batch`` packed, one after the other (the first error
    raised: packable then fails only its own command)."""
    if _PACK_C is not None:
        packed = _PACK_C(batch)
        if packed is not None:
            return packed
    parts: list[bytes] = []
    for command, _, _ in batch:
        _pack_into(parts, command)
    return b"".join(parts)


def packable(batch: list[Entry]) -> tuple[list[Entry], bytes]:
    """The entries of ``batch`` whose command hiredis packs, and those commands packed.
    Each other one's future fails with DataError, nothing of it sent: one caller's bad
    argument (None, an int subclass, ...) is its own error, not its whole batch's (the
    batch was neither written nor answered: every caller in it timed out)."""
    kept: list[Entry] = []
    parts: list[bytes] = []
    for entry in batch:
        command, future, _ = entry
        try:
            parts.append(pack_command(command))
        except Exception as exc:
            if not future.done():
                future.set_exception(chained(DataError(f"cannot send {command[0]!r}: {exc}"), exc))
            continue
        kept.append(entry)
    return kept, b"".join(parts)


def _reply_error(message: str) -> Exception:
    """redis-py's exception class for an error reply (NOSCRIPT, WRONGTYPE, LOADING, ...)."""
    return cast(Exception, BaseParser.parse_error(message))  # type: ignore[no-untyped-call]


class Settings:
    """Where and how to connect: read off the redis-py client's connection class."""

    def __init__(self, probe: Any, max_connections: int) -> None:
        unix = isinstance(probe, UnixDomainSocketConnection)
        self.path: str | None = str(probe.path) if unix else None
        self.host: str = "" if unix else str(probe.host)
        self.port: int = 0 if unix else int(probe.port)
        self.where = self.path if self.path is not None else f"{self.host}:{self.port}"
        self.keepalive: bool = not unix and bool(getattr(probe, "socket_keepalive", False))
        options = getattr(probe, "socket_keepalive_options", None)
        self.keepalive_options: dict[int, Any] = dict(options) if isinstance(options, dict) else {}
        self.connect_timeout: float | None = probe.socket_connect_timeout
        self.timeout: float | None = probe.socket_timeout
        self.max_connections = max_connections
        self.username: str | None = probe.username
        self.password: str | None = probe.password
        self.client_name: str | None = probe.client_name
        self.db = int(probe.db or 0)
        self.resp3 = str(probe.protocol) == "3"
        # Redis < 6 has no HELLO: redis-py falls back to RESP2 unless told protocol=3.
        self.may_fall_back = self.resp3 and not getattr(
            probe, "_protocol_specified_explicitly", False
        )

    def handshake(self) -> list[tuple[Any, ...]]:
        """What redis-py's on_connect sends (CLIENT SETINFO aside: informational)."""
        commands: list[tuple[Any, ...]] = []
        auth: tuple[Any, ...] = ()
        if self.username or self.password:
            auth = (self.username or "default", self.password or "")
        if self.resp3:
            commands.append(("HELLO", 3, "AUTH", *auth) if auth else ("HELLO", 3))
        elif auth:
            commands.append(("AUTH", *auth) if self.username else ("AUTH", auth[1]))
        if self.client_name:
            commands.append(("CLIENT", "SETNAME", self.client_name))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def thin_settings(redis: Redis) -> Settings | None:
    """The client's settings, or None when the thin connection does not speak them."""
    pool = redis.connection_pool
    if pool.connection_class not in (Connection, UnixDomainSocketConnection):
        return None  # TLS (SSLConnection) or a custom class: redis-py's path
    if not isinstance(pool.connection_kwargs, dict):
        return None
    probe = pool.connection_class(**pool.connection_kwargs)  # never connected
    if getattr(probe, "credential_provider", None) is not None:
        return None  # credentials fetched (and renewed) by a provider: redis-py's path
    if str(probe.protocol) not in ("2", "3"):
        return None
    if probe.encoder.decode_responses:
        return None  # the batcher's callers read bytes
    return Settings(probe, int(pool.max_connections))


def _resolve(future: Waiter, reply: Any) -> None:
    """A command's reply to its waiter, unless done (the caller was cancelled: the
    command ran anyway); a group's Slot by native calls."""
    if isinstance(future, Slot):
        if not future.done():
            future.set_result(reply)
    elif not future.done():
        future.set_result(reply)


class ThinConnection:
    """One connection (an asyncio protocol, duck-typed): one batch at a time on it."""

    def __init__(self, pool: ThinPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=_reply_error)
        self.batch: list[Entry] = _NONE
        self.index = 0
        self.timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0  # loop time by which the batch in flight must be answered
        self.poller = select.poll()
        self.closed = False
        self.ready = False  # handshake done: a finished batch returns it to the pool
        self.loop = asyncio.get_running_loop()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller.register(sock.fileno(), _BAD)
            if self.pool.settings.keepalive:
                with contextlib.suppress(OSError, AttributeError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                    for option, value in self.pool.settings.keepalive_options.items():
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self._fail(RedisConnectionError("Connection closed by server."), exc)

    def eof_received(self) -> bool:
        return False  # close the transport (connection_lost follows)

    def pause_writing(self) -> None:
        pass  # a batch is written at once; the transport buffers what the socket refuses

    def resume_writing(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        batch = self.batch
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                self._drop(exc)
                return
            if reply is False:
                return
            if isinstance(reply, _PUSH):
                continue  # a RESP3 push (no command's reply): redis-py skips it too
            index = self.index
            if index >= len(batch):
                self._drop(RedisConnectionError("a reply no command of the batch asked for"))
                return
            _, future, retry = batch[index]
            self.index = index + 1
            if isinstance(reply, Exception):
                if isinstance(reply, NoScriptError) and retry is not None:
                    self.pool.retry_hook(future, retry)
                elif isinstance(reply, ResponseError):  # this command failed, the link is fine
                    if not future.done():
                        future.set_exception(reply)
                else:  # a ConnectionError class (LOADING, NOAUTH): redis-py raises it
                    self.index = index
                    self._drop(reply)
                    return
            else:
                _resolve(future, reply)
            if index + 1 == len(batch):
                self._finished()

    # the batcher's side
    def healthy(self) -> bool:
        """Idle and still open: nothing to read (a read event on an idle connection is
        the server's EOF or a stray reply; redis-py's pool checks the same)."""
        return not self.closed and not self.poller.poll(0)

    def send(self, batch: list[Entry]) -> None:
        """Write the batch; its futures resolve as the replies come in. A command that
        cannot be packed (an argument of no type Redis takes) fails alone (packable)."""
        assert self.transport is not None
        try:
            data = pack_batch(batch)
        except Exception:
            batch, data = packable(batch)
            if not batch:
                self.pool.release(self)
                return
        self.batch = batch
        self.index = 0
        timeout = self.pool.settings.timeout
        if timeout is not None:
            # One deadline for the batch. The connection's timer is armed only when it
            # has none (a batch's deadline is never earlier than the one before it):
            # when it fires, a batch still in flight is re-armed at its own deadline.
            self.deadline = self.loop.time() + timeout
            if self.timer is None:
                self.timer = self.loop.call_at(self.deadline, self._timed_out)
        self.transport.write(data)
        self.pool.sent += 1

    def cancel(self) -> None:
        """Cancel the batch's futures and drop the connection (replies may be in flight)."""
        batch, index = self.batch, self.index
        self._close()
        for _, future, _ in batch[index:]:
            future.cancel()

    def _finished(self) -> None:
        self.batch = _NONE  # the timer stays: the next batch's deadline comes later
        if self.ready:
            self.pool.release(self)

    def _timed_out(self) -> None:
        self.timer = None
        if self.batch is _NONE or self.closed:
            return  # idle: the next batch arms it again
        if self.loop.time() < self.deadline:  # a later batch's: its own deadline
            self.timer = self.loop.call_at(self.deadline, self._timed_out)
            return
        self._drop(RedisTimeoutError("Timeout reading the replies of a pipeline"))

    def _drop(self, exc: Exception) -> None:
        """Fail what is left of the batch (Redis may have run it) and close."""
        self._fail(exc, None)
        self._close()

    def _fail(self, exc: Exception, cause: Exception | None) -> None:
        batch, index = self.batch, self.index
        self.batch = _NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if cause is not None:
            exc.__cause__ = cause
        for _, future, _ in batch[index:]:
            if not future.done():
                future.set_exception(exc)

    def _close(self) -> None:
        self.batch = _NONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.closed = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()


class ThinPool:
    """The batcher's connections: idle ones reused (last in, first out), new ones opened
    when every one is busy, up to the client's max_connections."""

    def __init__(self, settings: Settings, retry_hook: RetryHook) -> None:
        self.settings = settings
        self.retry_hook = retry_hook
        self.idle: list[ThinConnection] = []
        self.open: set[ThinConnection] = set()
        # Batches written (round trips; the benchmarks count them: a compiled
        # ThinConnection's methods cannot be wrapped).
        self.sent = 0

    @classmethod
    def for_client(cls, redis: Redis, retry_hook: RetryHook) -> ThinPool | None:
        """A pool on the client's settings, closed with the client's pool; None when the
        client's connections are not ones the thin connection speaks."""
        settings = thin_settings(redis)
        if settings is None:
            return None
        pool = cls(settings, retry_hook)
        _close_with(redis, pool)
        return pool

    def take(self) -> ThinConnection | None:
        """An idle, healthy connection, or None (open one with ``connect``)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.healthy():
                return conn
            conn.cancel()  # nothing of it in flight: just closed
        return None

    def release(self, conn: ThinConnection) -> None:
        if not conn.closed:
            self.idle.append(conn)

    def forget(self, conn: ThinConnection) -> None:
        self.open.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    async def connect(self) -> ThinConnection:
        """A new connection, handshake done; CommandNotSent when none could be had."""
        settings = self.settings
        if len(self.open) >= settings.max_connections:
            raise CommandNotSent("Too many connections")
        resp3 = settings.resp3
        conn = ThinConnection(self)
        self.open.add(conn)
        try:
            await self._open(conn)
            conn.ready = True
        except BaseException as exc:
            conn.cancel()
            if not resp3 or settings.resp3:  # not HELLO unknown (RESP2 again, below)
                if isinstance(exc, RedisConnectionError):
                    raise chained(CommandNotSent(str(exc)), exc) from exc
                if isinstance(exc, (OSError, TimeoutError, RedisTimeoutError)):
                    message = f"Error connecting to {settings.where}: {exc!r}"
                    raise chained(CommandNotSent(message), exc) from exc
                raise
        else:
            return conn
        # HELLO unknown: again, in RESP2. Out of the handler: compiled by mypyc, an
        # `await` inside an `except` block failed (as fused.py's library reload did).
        return await self.connect()

    async def _open(self, conn: ThinConnection) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(settings.connect_timeout):
            if settings.path is not None:
                await loop.create_unix_connection(
                    lambda: cast(asyncio.Protocol, conn), settings.path
                )
            else:
                await loop.create_connection(
                    lambda: cast(asyncio.Protocol, conn), settings.host, settings.port
                )
        handshake = settings.handshake()
        if not handshake:
            return
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in handshake]
        conn.send([(c, f, None) for c, f in zip(handshake, futures, strict=True)])
        try:
            for command, future in zip(handshake, futures, strict=True):
                reply = await future
                if command[0] == "SELECT" and reply != b"OK":
                    raise RedisConnectionError("Invalid Database")
                if command[0] == "HELLO" and reply.get(b"proto") != 3:
                    raise RedisConnectionError("Invalid RESP version")
        except ResponseError as exc:
            message = str(exc).lower().removeprefix("err ")
            if settings.may_fall_back and message.startswith(("unknown command", "noproto")):
                settings.resp3 = False  # Redis < 6: RESP2 from now on, as redis-py does
            raise
        finally:
            for future in futures:  # their errors are the first one's
                if future.done() and not future.cancelled():
                    future.exception()

    def close(self) -> None:
        """Drop every connection; batches in flight are cancelled."""
        for conn in list(self.open):
            conn.cancel()
        self.idle.clear()


def _close_with(redis: Redis, thin: ThinPool) -> None:
    """Close ``thin`` whenever the client's redis-py pool disconnects (Redis.aclose)."""
    pool: Any = redis.connection_pool
    thins: list[ThinPool] | None = getattr(pool, "_chargingd_thin", None)
    if thins is None:
        thins = []
        pool._chargingd_thin = thins
        disconnect = pool.disconnect

        async def disconnect_all(*args: Any, **kwargs: Any) -> None:
            for each in list(thins):
                each.close()
            await disconnect(*args, **kwargs)

        pool.disconnect = disconnect_all
    thins.append(thin)
