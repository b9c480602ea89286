"""The embedded redis-server's supervisor on a real redis-server: a server that cannot
start again (its AOF unreadable) is retried with back-off and one ERROR line, and is
back with its data once the AOF is; stop() never leaves a server it restarted behind."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import ports
import pytest
import redis as syncredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chargingd.core.redisconn import EmbeddedRedis, EmbeddedSupervisor, exit_reason, pid_alive
from chargingd.core.status import ComponentStats

pytestmark = pytest.mark.timeout(60)


async def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_exit_reasons_read_as_an_operator_says_them() -> None:
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(0) == "exit code 0"


async def test_a_server_that_cannot_start_is_retried_with_backoff_then_restarted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path, appendfsync="always")
    server.start()
    stats = ComponentStats()
    supervisor = EmbeddedSupervisor(server, stats, poll_s=0.05, backoff_s=0.1, backoff_max_s=0.4)
    caplog.set_level(logging.INFO, logger="chargingd.redis")
    try:
        with syncredis.Redis(unix_socket_path=str(server.socket_path)) as r:
            r.set("kept", "1")
        aof = server.dir / "appendonly.aof"
        if not aof.exists():
            pytest.skip("not a Redis 6 AOF (one file)")
        good = aof.read_bytes()
        # The running server writes on to its open file; a start reads this one.
        bad = server.dir / "bad.aof"
        bad.write_bytes(b"this is no AOF\r\n")
        os.replace(bad, aof)
        supervisor.start()
        dead = server.proc
        assert dead is not None
        os.kill(dead.pid, signal.SIGKILL)
        await wait_for(lambda: stats.get("restart_failures") >= 3)
        failing_since = time.monotonic()
        attempts = stats.get("restart_failures")
        await asyncio.sleep(1.0)
        # Back-off: 0.1, 0.2, 0.4, 0.4 ... s between attempts, never a tight loop.
        assert stats.get("restart_failures") - attempts <= 1.0 / 0.4 + 1
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # one per episode
        assert "embedded redis-server restart failed" in errors[0].getMessage()
        assert stats.get("restarts") == 0

        repaired = server.dir / "good.aof"
        repaired.write_bytes(good)
        os.replace(repaired, aof)
        await wait_for(lambda: stats.get("restarts") == 1)
        assert time.monotonic() - failing_since < 5
        with syncredis.Redis(unix_socket_path=str(server.socket_path)) as r:
            assert r.get("kept") == b"1"  # from the AOF
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(f"pid {dead.pid} died (killed by SIGKILL)" in w for w in warnings)
        assert any("restarted as pid" in w and "restart #1" in w for w in warnings)
    finally:
        await supervisor.stop()
        server.stop()


async def test_stop_waits_for_a_restart_under_way_and_restarts_nothing_after(
    tmp_path: Path,
) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    stats = ComponentStats()
    supervisor = EmbeddedSupervisor(server, stats, poll_s=0.01)
    supervisor.start()
    try:
        first = server.proc
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)
        # Told to stop as the death is noticed (a restart may be under way): whatever
        # it started, EmbeddedRedis.stop stops; nothing starts after stop() returned.
        await asyncio.sleep(0.02)
        await supervisor.stop()
        server.stop()
        last = server.proc
        assert last is not None and last.poll() is not None
        await asyncio.sleep(0.2)
        assert server.proc is last and not pid_alive(last.pid)
    finally:
        await supervisor.stop()
        server.stop()


# -- an AOF that loads longer than the start's timeout --------------------------------
LOADED_KEYS = 20_000
# redis-server's key-load-delay (µs per key read from the AOF's RDB part; a sleep, ~100
# µs at least): ~2 s to load, past the 1 s the tests give the start for its first
# answer. A loading server answers (LOADING) every 2 MB it read: values of 1 KB.
SLOW_LOAD = ("--key-load-delay", "50")
VALUE = b"x" * 1024


@pytest.fixture(scope="module")
def large_aof(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory whose AOF (rewritten: its keys in the RDB preamble) holds
    LOADED_KEYS keys, the server stopped."""
    data = tmp_path_factory.mktemp("large-aof")
    server = EmbeddedRedis(data, appendfsync="no")
    server.start()
    try:
        client = syncredis.Redis(unix_socket_path=str(server.socket_path))
        pipe = client.pipeline(transaction=False)
        for first in range(0, LOADED_KEYS, 1000):
            pipe.mset({f"k{n}": VALUE for n in range(first, first + 1000)})
        pipe.execute()
        assert client.dbsize() == LOADED_KEYS

        def rewriting() -> bool:
            info = client.info("persistence")
            return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])

        deadline = time.monotonic() + 30
        while rewriting():  # one the fill set off
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.bgrewriteaof()
        while rewriting():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.close()
    finally:
        server.stop()  # SIGTERM: the AOF is fsynced
    return data


def test_a_start_waits_for_an_aof_loading_longer_than_its_timeout(
    large_aof: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the wait for the first PONG was bounded (10 s): a server still loading
    a large AOF then was SIGTERMed and the start failed, every restart again."""
    server = EmbeddedRedis(large_aof, appendfsync="no", extra_args=SLOW_LOAD)
    caplog.set_level(logging.INFO, logger="chargingd")
    began = time.monotonic()
    try:
        server.start(timeout_s=1.0)
        took = time.monotonic() - began
        client = syncredis.Redis(unix_socket_path=str(server.socket_path))
        assert client.dbsize() == LOADED_KEYS
        client.close()
    finally:
        server.stop()
    assert took > 1.0  # the load outlasted the timeout
    said = [r.getMessage() for r in caplog.records]
    assert any("is loading its AOF" in m for m in said), said
    assert any("loaded its AOF in" in m for m in said), said


async def test_stop_aborts_a_restart_that_is_loading_its_aof(large_aof: Path) -> None:
    """A shutdown during a long load is not held by it: the restart gives up and the
    server it started is stopped; nothing restarts after."""
    server = EmbeddedRedis(large_aof, appendfsync="no", extra_args=SLOW_LOAD)
    await asyncio.to_thread(server.start)
    stats = ComponentStats()
    supervisor = EmbeddedSupervisor(server, stats, poll_s=0.01)
    supervisor.start()
    # No retries of redis-py's own: a LOADING answer is what is looked for.
    client = syncredis.Redis(
        unix_socket_path=str(server.socket_path),
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        first = server.proc
        assert first is not None
        os.kill(first.pid, signal.SIGKILL)

        def loading() -> bool:
            proc = server.proc
            if proc is None or proc is first:
                return False
            try:
                client.ping()
            except (syncredis.BusyLoadingError, syncredis.TimeoutError):
                return True  # LOADING, or taken and not answered: loading (start's view)
            except syncredis.ConnectionError:
                pass
            return False

        await wait_for(loading)
        restarted = server.proc
        assert restarted is not None
        began = time.monotonic()
        await supervisor.stop()
        assert time.monotonic() - began < 1.5  # not the rest of the load (~2.8 s)
        assert restarted.poll() is not None and not pid_alive(restarted.pid)
        assert server.proc is restarted
        assert stats.get("restart_failures") == 0 and stats.get("restarts") == 0
    finally:
        client.close()
        await supervisor.stop()
        server.stop()


def test_an_orphan_listening_on_a_tcp_port_is_stopped_at_start(tmp_path: Path) -> None:
    """A daemon SIGKILLed with [redis] embedded_port set leaves its redis-server
    running, titled "redis-server 127.0.0.1:PORT" (no dir in its command line). The
    next start must stop it: before, it was kept, answered on the socket path, and
    the new server (its port taken) died and was restarted over and over."""
    import socket
    import subprocess
    import sys

    port = ports.free_port(socket.SOCK_STREAM)
    # The orphan: started by a process that then dies without stopping it.
    code = (
        "from pathlib import Path; import os\n"
        "from chargingd.core.redisconn import EmbeddedRedis\n"
        f"r = EmbeddedRedis(Path({str(tmp_path)!r}), port={port})\n"
        "r.start(); os._exit(0)\n"
    )
    # No pipes: the orphan would hold them open.
    subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, check=True)
    orphan = int((tmp_path / "redis" / "redis.pid").read_text())
    server = EmbeddedRedis(tmp_path, port=port)
    try:
        assert pid_alive(orphan)
        server.start()
        assert server.proc is not None
        with syncredis.Redis(unix_socket_path=str(server.socket_path)) as r:
            assert int(r.info("server")["process_id"]) == server.proc.pid
        time.sleep(0.3)
        assert server.proc.poll() is None, "the new server is the one running"
        assert not pid_alive(orphan)
    finally:
        server.stop()
        if pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_data_dir_too_deep_for_the_unix_socket_is_refused_at_once(tmp_path: Path) -> None:
    # An operator's data_dir under a deep path: <data_dir>/redis/redis.sock over the
    # 107 bytes a unix socket path may have. redis-server logged "ready to accept
    # connections" at that path (the kernel binds a truncated name), the daemon waited
    # 10 s for a socket it could never reach and said "did not become ready; see
    # redis.log", whose last word was "ready". Now it says why at once.
    deep = tmp_path / ("d" * max(1, 110 - len(str(tmp_path))))
    server = EmbeddedRedis(deep)
    started = time.monotonic()
    with pytest.raises(RuntimeError) as refused:
        server.start()
    assert time.monotonic() - started < 2.0
    message = str(refused.value)
    assert str(server.socket_path) in message
    assert "107" in message and "data_dir" in message
    assert server.proc is None  # no redis-server was started
