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

import pytest
import redis as syncredis

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
