"""A Redis outage under traffic: the real daemon logs each kind of failure once per
interval with a count and once on recovery, not a line per request nor a traceback per
pass (issue 9 finding 8). Redis is a redis-server this test starts, stops and restarts."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import ports
import pytest
from radius_e2e_harness import Call, Daemon, GatewaySocket, write_setup

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

OUTAGE_REQUESTS = 300
OUTAGE_S = 3.0  # 15 passes of the cutter and the reaper (0.2 s)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, EmbeddedRedis]]:
    setup = write_setup(tmp_path)
    redis = EmbeddedRedis(setup.data, appendfsync="always")
    redis.start()
    with open(setup.config, "a") as fh:
        fh.write(f'\n[redis]\nurl = "{redis.url}"\ncommand_timeout_s = 0.5\n')
        fh.write("connect_timeout_s = 0.5\n")
    text = setup.config.read_text().replace(
        "[sessions]\n", "[sessions]\nreaper_interval_s = 0.2\n", 1
    )
    setup.config.write_text(text)
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        yield d, redis
    finally:
        print(f"---- daemon log ----\n{d.log()}")
        d.kill()
        redis.stop()


def _count(log: str, pattern: str) -> int:
    return len(re.findall(pattern, log))


async def _wait_for(daemon: Daemon, pattern: str, timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if re.search(pattern, daemon.log()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line matching {pattern!r}")


async def test_outage_logs_once_per_kind_and_once_on_recovery(
    daemon: tuple[Daemon, EmbeddedRedis],
) -> None:
    d, redis = daemon
    d.create_account("olga", "100.00")
    sock = await GatewaySocket.open()
    try:
        live = Call("outage-live", "olga")
        assert (await sock.ask(live.access_request(), d.setup.auth_port)).code == rc.ACCESS_ACCEPT
        await sock.ask(live.accounting(rc.STATUS_START, 0), d.setup.acct_port)
        redis.stop()
        loop = asyncio.get_running_loop()
        until = loop.time() + OUTAGE_S
        i = 0
        while i < OUTAGE_REQUESTS or loop.time() < until:
            refused = await sock.ask(
                Call(f"outage-{i}", "olga").access_request(), d.setup.auth_port
            )
            assert refused.code == rc.ACCESS_REJECT
            if i % 10 == 0:  # accounting during the outage is spooled and acknowledged
                answer = await sock.ask(
                    live.accounting(rc.STATUS_INTERIM, i // 10), d.setup.acct_port
                )
                assert answer.code == rc.ACCOUNTING_RESPONSE
            i += 1
        # Background loops (cutter, reaper every 0.2 s) fail meanwhile too.
        await _wait_for(d, r"reaper pass failed: ")
        await _wait_for(d, r"cutter pass failed: ")
        redis.start()
        after = Call("outage-after", "olga")
        for _ in range(100):  # the client reconnects on its own
            answer = await sock.ask(after.access_request(), d.setup.auth_port)
            if answer.code == rc.ACCESS_ACCEPT:
                break
            await asyncio.sleep(0.1)
        assert answer.code == rc.ACCESS_ACCEPT
        await sock.ask(live.accounting(rc.STATUS_STOP, 40), d.setup.acct_port)
        await _wait_for(d, r"redis unreachable at authorize: recovered after \d+ failures")
        await _wait_for(d, r"redis unreachable at accounting: recovered after \d+ failures")
        await _wait_for(d, r"reaper pass failed: recovered after \d+ failures")
        await _wait_for(d, r"cutter pass failed: recovered after \d+ failures")
        await _wait_for(d, r"spool replay stopped: recovered after \d+ failures")
    finally:
        sock.close()
    log = d.log()
    # 300 refused requests, 30 spooled reports, dozens of failed passes: a handful of
    # lines. Each kind logs its first failure, one more per 10 s of outage, its recovery.
    authorize_lines = _count(log, r"redis unreachable at authorize: ")
    assert 2 <= authorize_lines <= 4, authorize_lines
    assert 2 <= _count(log, r"redis unreachable at accounting: ") <= 4
    assert 2 <= _count(log, r"reaper pass failed: ") <= 4
    assert 2 <= _count(log, r"cutter pass failed: ") <= 4
    # The reaper retries the spool every pass: stopped replays are counted, not listed.
    assert 1 <= _count(log, r"spool replay stopped") <= 4
    assert _count(log, r"Traceback") == 0  # Redis being away needs no traceback
    assert len(log.splitlines()) < 80
    total = int(re.search(r"at authorize: recovered after (\d+) failures", log).group(1))  # type: ignore[union-attr]
    assert total >= OUTAGE_REQUESTS


@pytest.fixture
def diameter_daemon(tmp_path: Path) -> Iterator[tuple[Daemon, EmbeddedRedis]]:
    """The daemon with the Diameter frontend on: its relay server polls Redis for
    ASR/RAR queued by other processes (diameter/relay.py), once a second."""
    port = ports.free_port(socket.SOCK_STREAM)
    setup = write_setup(
        tmp_path,
        extra=f"""
[diameter]
enabled = true
bind = "127.0.0.1"
port = {port}

[[diameter.peers]]
name = "ims1"
origin_host = "scscf.ims.test"
realm = "ims.test"
addresses = ["127.0.0.1"]
""",
    )
    redis = EmbeddedRedis(setup.data, appendfsync="always")
    redis.start()
    with open(setup.config, "a") as fh:
        fh.write(f'\n[redis]\nurl = "{redis.url}"\ncommand_timeout_s = 0.5\n')
        fh.write("connect_timeout_s = 0.5\n")
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        yield d, redis
    finally:
        print(f"---- daemon log ----\n{d.log()}")
        d.kill()
        redis.stop()


async def test_diameter_relay_outage_logs_once_and_on_recovery(
    diameter_daemon: tuple[Daemon, EmbeddedRedis],
) -> None:
    """The relay server's poll failed once a second during an outage and logged each
    failure (a line a second for as long as Redis is away, no recovery line)."""
    d, redis = diameter_daemon
    await _wait_for(d, r"Diameter on 127\.0\.0\.1:")
    redis.stop()
    await _wait_for(d, r"relay queue unavailable: ")
    await asyncio.sleep(5.0)  # five polls or more fail meanwhile
    redis.start()
    await _wait_for(d, r"relay queue unavailable: recovered after \d+ failures")
    lines = _count(d.log(), r"relay queue unavailable: ")
    assert lines == 2, lines  # the first failure and the recovery (10 s interval)
