"""End to end: `[server] workers = 2` - two processes share the RADIUS ports.

The real daemon as a subprocess; calls come from many UDP sockets, and from ONE
socket: with [radius] spread = "request" the processes share the ports by Request
Authenticator (radius/ports.py),
not by source port, so both serve a share of one gateway socket's requests, and a
retransmission reaches the process that answered the original (its duplicate cache).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from radius_e2e_harness import MICROS_PER_S, Call, Daemon, GatewaySocket, write_setup

from chargingd.app.serve import configure_parser, worker_config
from chargingd.app.workers import WorkerSupervisor
from chargingd.core.config import Config, RadiusConfig, ServerConfig
from chargingd.core.money import format_amount, parse_amount
from chargingd.core.status import ComponentStats
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRANT_MICROS = 75 * MICROS_PER_S  # first grant: interim 60 s + margin 15 s


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    setup = write_setup(tmp_path, workers=2, radius_options={"spread": "request"})
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        status = d.wait_ready()
        assert len(status["workers"]["pids"]) == 1
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")  # shown only when the test fails


async def wait_processes(daemon: Daemon, check: Any, timeout_s: float = 30.0) -> list[Any]:
    """Poll server.status until check(radius processes) holds; returns them."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await asyncio.to_thread(daemon.call, "server.status")
        procs = status["radius"]["processes"]
        if check(procs):
            return list(procs)
        if time.monotonic() > deadline:
            raise AssertionError(f"RADIUS processes never matched: {procs}")
        await asyncio.sleep(0.2)


async def authorize(daemon: Daemon, sock: GatewaySocket, call: Call) -> bool:
    answer = await sock.ask(call.access_request(), daemon.setup.auth_port, timeout_s=5.0)
    if answer.code == rc.ACCESS_REJECT:
        assert answer.cisco_value(rc.H323_RETURN_CODE) == "4"  # insufficient credit
        return False
    assert answer.code == rc.ACCESS_ACCEPT
    return True


async def talk(daemon: Daemon, sock: GatewaySocket, call: Call, usage_s: int) -> None:
    """Start, two Interim-Updates, Stop at usage_s (within the first grant)."""
    port = daemon.setup.acct_port
    for status, usage in (
        (rc.STATUS_START, 0),
        (rc.STATUS_INTERIM, usage_s // 3),
        (rc.STATUS_INTERIM, 2 * usage_s // 3),
        (rc.STATUS_STOP, usage_s),
    ):
        answer = await sock.ask(call.accounting(status, usage), port, timeout_s=5.0)
        assert answer.code == rc.ACCOUNTING_RESPONSE


async def sample_balance(daemon: Daemon, account_id: str, stop: asyncio.Event) -> list[int]:
    seen = []
    while not stop.is_set():
        acc = await asyncio.to_thread(daemon.call, "account.get", {"id": account_id})
        seen.append(parse_amount(acc["balance"]))
        await asyncio.sleep(0.02)
    return seen


async def test_200_simultaneous_calls_on_one_prepaid_account(daemon: Daemon) -> None:
    funded = 30  # the balance pays exactly 30 first grants: the other 170 are refused
    daemon.create_account("hot", format_amount(funded * GRANT_MICROS))
    calls = [Call(f"hot-{i}", "hot") for i in range(200)]
    socks = [await GatewaySocket.open() for _ in calls]
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_balance(daemon, "hot", stop))
    try:
        granted = await asyncio.gather(
            *(authorize(daemon, s, c) for s, c in zip(socks, calls, strict=True))
        )
        live = [(s, c) for s, c, ok in zip(socks, calls, granted, strict=True) if ok]
        assert len(live) == funded
        usage = {c.session_id: 9 + i % 6 for i, (_, c) in enumerate(live)}
        await asyncio.gather(*(talk(daemon, s, c, usage[c.session_id]) for s, c in live))
    finally:
        stop.set()
        balances = await sampler
        for s in socks:
            s.close()
    assert balances and min(balances) >= 0
    for _ in range(100):
        cdrs = [c for c in daemon.cdrs() if c.account_id == "hot"]
        if len(cdrs) >= funded:
            break
        await asyncio.sleep(0.05)
    assert sorted(c.call_id for c in cdrs) == sorted(usage)  # exactly one CDR per call
    assert all(c.cost_micros == usage[c.call_id] * MICROS_PER_S for c in cdrs)
    acc = daemon.call("account.get", {"id": "hot"})
    total = sum(c.cost_micros for c in cdrs)
    assert parse_amount(acc["debits"]) == total
    assert parse_amount(acc["balance"]) == funded * GRANT_MICROS - total >= 0
    assert parse_amount(acc["reserved"]) == 0 and acc["live_sessions"] == 0
    # Both processes served packets (counters published to Redis every second: wait
    # for the publication that counts them all, not the first one after the calls).
    sent = 200 + 4 * funded
    procs = await wait_processes(
        daemon,
        lambda ps: (
            len(ps) == 2
            and all(p["frontend"]["accounted"] for p in ps)
            and sum(p["frontend"]["received"] for p in ps) >= sent
        ),
    )
    assert sorted(p["role"] for p in procs) == ["main", "worker"]
    await one_gateway_socket(daemon, procs)


async def one_gateway_socket(daemon: Daemon, before: list[Any]) -> None:
    """A gateway sending from one socket: both processes answer a share, and a
    retransmission is answered from the cache (same reply, no second reservation)."""
    count = 24
    daemon.create_account("one", format_amount(count * GRANT_MICROS))
    was = {p["pid"]: p["frontend"] for p in before}
    sock = await GatewaySocket.open()
    try:
        requests = [Call(f"one-{i}", "one").access_request() for i in range(count)]
        for packet in requests:
            answer = await sock.ask(packet, daemon.setup.auth_port, timeout_s=5.0)
            assert answer.code == rc.ACCESS_ACCEPT
        replies = sock.proto.inbox
        last = answer.raw
        sock.transport.sendto(requests[-1], ("127.0.0.1", daemon.setup.auth_port))
        assert await asyncio.wait_for(replies.get(), 5.0) == last  # the same bytes
    finally:
        sock.close()

    def counted(ps: list[Any]) -> bool:
        new = [(p["frontend"], was.get(p["pid"], {})) for p in ps]
        return (
            len(ps) == 2
            and sum(now["received"] - old.get("received", 0) for now, old in new) >= count + 1
        )

    procs = await wait_processes(daemon, counted)
    shares = [p["frontend"]["accepted"] - was[p["pid"]]["accepted"] for p in procs]
    assert all(shares) and sum(shares) == count, shares  # both processes answered a share
    dups = sum(p["frontend"]["duplicates"] - was[p["pid"]]["duplicates"] for p in procs)
    assert dups >= 1
    acc = daemon.call("account.get", {"id": "one"})
    assert parse_amount(acc["reserved"]) == count * GRANT_MICROS  # one grant per call
    assert acc["live_sessions"] == count


async def test_killed_worker_is_restarted_and_calls_keep_working(daemon: Daemon) -> None:
    daemon.create_account("kate", "100.00")
    (old,) = daemon.call("server.status")["workers"]["pids"]
    await wait_processes(daemon, lambda ps: old in [p["pid"] for p in ps])
    os.kill(old, signal.SIGKILL)
    new = None
    deadline = time.monotonic() + 30  # a loaded machine (parallel suites) starts it late
    while time.monotonic() < deadline:
        pids = daemon.call("server.status")["workers"]["pids"]
        if pids and pids[0] != old:
            new = pids[0]
            break
        await asyncio.sleep(0.05)
    assert new is not None, "worker not restarted"
    await wait_processes(daemon, lambda ps: new in [p["pid"] for p in ps])  # serving
    calls = [Call(f"kate-{i}", "kate") for i in range(40)]
    socks = [await GatewaySocket.open() for _ in calls]
    try:
        assert all(
            await asyncio.gather(
                *(authorize(daemon, s, c) for s, c in zip(socks, calls, strict=True))
            )
        )
        await asyncio.gather(*(talk(daemon, s, c, 6) for s, c in zip(socks, calls, strict=True)))
    finally:
        for s in socks:
            s.close()
    await wait_processes(
        daemon,
        lambda ps: any(p["pid"] == new and p["frontend"]["received"] for p in ps),
    )
    acc = daemon.call("account.get", {"id": "kate"})
    assert parse_amount(acc["debits"]) == 40 * 6 * MICROS_PER_S
    assert daemon.wait_log(f"pid={old} exited with -9; restarting"), daemon.log()
    assert daemon.call("server.status")["components"]["workers"]["restarts"] == 1
    # SIGTERM stops the main process and its worker; exit code 0.
    assert daemon.terminate() == 0
    assert daemon.wait_log(f"chargingd worker stopped pid={new}"), daemon.log()


def test_a_restarted_worker_spreads_as_the_main_process_started() -> None:
    """The worker's command line carries the main process's divisor; the file's
    `workers`/`spread`, edited since, do not change a restarted worker's program."""
    supervisor = WorkerSupervisor("/etc/c.toml", "", 1, ComponentStats(), spread_over=2)
    parser = argparse.ArgumentParser()
    configure_parser("serve", parser)
    args = parser.parse_args(supervisor.argv(7)[4:])
    assert (args.worker_of, args.report_fd, args.spread_over) == (os.getpid(), 7, 2)
    edited = Config(server=ServerConfig(workers=4), radius=RadiusConfig(spread="source"))
    started = worker_config(edited, args.spread_over)
    assert (started.server.workers, started.radius.spread) == (2, "request")
    hashed = worker_config(Config(radius=RadiusConfig(spread="request")), 1)
    assert hashed.radius.spread == "source"
    # By User-Name: the worker's program hashes the attribute the main process chose.
    by_user = WorkerSupervisor(
        "/etc/c.toml", "", 1, ComponentStats(), spread_over=2, spread_by="user"
    )
    args = parser.parse_args(by_user.argv(7)[4:])
    assert (args.spread_over, args.spread_by) == (2, "user")
    started = worker_config(edited, args.spread_over, args.spread_by)
    assert (started.server.workers, started.radius.spread) == (2, "user")
    assert worker_config(edited, None) is edited  # an older main process: the file's
