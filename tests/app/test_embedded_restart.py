"""The embedded redis-server dies under the real daemon (SIGKILL, as the OOM killer
sends it): the daemon starts it again from its AOF on the same socket, its clients
(redis-py's and the hot path's thin connections, in the main process and a worker)
reconnect on their own, and no money is lost or charged twice. SIGTERM to the daemon
stops the server once, without a restart.

`embedded_appendfsync = "always"`: every write acknowledged was fsynced, so the
balance after the restart is exact (with the default everysec up to ~1 s of writes
may be lost on a SIGKILL of redis-server: docs/operations.md)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from monitoring_harness import ctl, http_get
from prometheus_client.parser import text_string_to_metric_families
from radius_e2e_harness import (
    MICROS_PER_S,
    Call,
    Daemon,
    GatewaySocket,
    Setup,
    radius_processes,
    write_setup,
)

from chargingd.core.money import parse_amount
from chargingd.core.redisconn import pid_alive
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HTTP = "\n[http]\nenabled = true\nport = 0\n"
BACK_WITHIN_S = 10.0


def _setup(tmp_path: Path, workers: int = 1) -> Setup:
    return write_setup(
        tmp_path,
        workers=workers,
        redis='embedded_appendfsync = "always"',
        extra=HTTP,
        # one gateway socket's requests shared by the processes (not by source port)
        radius_options={"spread": "request"} if workers > 1 else None,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    # Two processes: the main one owns (and restarts) the server, the worker only
    # reconnects to it; a packet may be answered by either.
    d = Daemon(_setup(tmp_path, workers=2), tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        _kill_servers(d.setup.data)
        print(f"---- daemon log ----\n{d.log()}")  # shown only when the test fails


def redis_pid(setup: Setup) -> int:
    return int((setup.data / "redis" / "redis.pid").read_text())


def redis_servers(data: Path) -> list[int]:
    """Pids of the live (not zombie) redis-server processes serving ``data``."""
    where = str((data / "redis").resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"redis-server" in cmdline and where in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _kill_servers(data: Path) -> None:
    for pid in redis_servers(data):
        os.kill(pid, signal.SIGTERM)


def balance(d: Daemon, account_id: str) -> tuple[int, int]:
    acc = d.call("account.get", {"id": account_id})
    return parse_amount(acc["balance"]), parse_amount(acc["reserved"])


def accepted_by_pid(d: Daemon) -> dict[int, int]:
    """Access-Accepts per RADIUS process (main and worker) from their last reports."""
    procs = radius_processes(d.call("server.status"))
    return {int(p["pid"]): int(p["frontend"].get("accepted", 0)) for p in procs}


def metric(d: Daemon, name: str) -> float | None:
    for family in text_string_to_metric_families(http_get(d, "/metrics")):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return float(sample.value)
    return None


async def test_killed_embedded_redis_is_restarted_and_nothing_is_lost(daemon: Daemon) -> None:
    d = daemon
    d.create_account("rita", "10.00")
    d.call("account.topup", {"id": "rita", "amount": "5.00", "txn_id": "rita-t1"})
    sock = await GatewaySocket.open()
    try:
        first = Call("er-first", "rita")
        assert (await sock.ask(first.access_request(), d.setup.auth_port)).code == rc.ACCESS_ACCEPT
        start = first.accounting(rc.STATUS_START, 0)
        assert (await sock.ask(start, d.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        counts = accepted_by_pid(d)
        before = redis_pid(d.setup)
        os.kill(before, signal.SIGKILL)
        killed_at = time.monotonic()

        # Within seconds a new call is accepted again (the server is back, and the
        # process that answered reconnected on its own).
        second = Call("er-second", "rita")
        while True:
            answer = await sock.ask(second.access_request(), d.setup.auth_port)
            if answer.code == rc.ACCESS_ACCEPT:
                break
            assert time.monotonic() - killed_at < BACK_WITHIN_S, "no Access-Accept after restart"
            await asyncio.sleep(0.1)
        # Both processes answer again: new calls until each accepted some since.
        i = 0
        while True:
            accepted = accepted_by_pid(d)
            if len(accepted) == 2 and all(n > counts.get(p, 0) for p, n in accepted.items()):
                break
            assert time.monotonic() - killed_at < 4 * BACK_WITHIN_S, accepted
            for _ in range(4):
                i += 1
                again = Call(f"er-more-{i}", "rita")
                answer = await sock.ask(again.access_request(), d.setup.auth_port)
                assert answer.code == rc.ACCESS_ACCEPT
                stop = again.accounting(rc.STATUS_STOP, 0)
                assert (await sock.ask(stop, d.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
            await asyncio.sleep(0.3)

        # The call started before the kill ends: charged once, also when its Stop
        # comes twice (a gateway's retry as a new packet).
        for _ in range(2):
            stop = first.accounting(rc.STATUS_STOP, 30)
            assert (await sock.ask(stop, d.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        stop = second.accounting(rc.STATUS_STOP, 10)
        assert (await sock.ask(stop, d.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()

    after = redis_pid(d.setup)
    assert after != before and pid_alive(after)
    assert redis_servers(d.setup.data) == [after]
    # The account as created and topped up (the AOF), less the two calls, nothing held.
    assert balance(d, "rita") == (15_000_000 - 30 * MICROS_PER_S - 10 * MICROS_PER_S, 0)
    charged = [c for c in d.cdrs() if c.call_id == "er-first"]
    assert [c.charged_micros for c in charged] == [30 * MICROS_PER_S]

    status = d.call("server.status")
    assert status["components"]["embedded-redis"]["restarts"] == 1
    assert "restarts=1" in ctl(d, "status")
    assert metric(d, "chargingd_redis_restarts_total") == 1
    log = d.log()
    died = (
        rf"WARNING chargingd\.redis: embedded redis-server pid {before} died \(killed by SIGKILL\)"
    )
    assert re.search(died, log), "no WARNING line for the death"
    restarted = (
        rf"WARNING chargingd\.redis: embedded redis-server restarted as pid {after} after "
        rf"[0-9.]+ s down \(pid {before} killed by SIGKILL; restart #1\)"
    )
    assert re.search(restarted, log), "no WARNING line for the restart"
    assert "restart failed" not in log


def _starts(setup: Setup) -> int:
    """How many times a redis-server started on the data dir (its own log says)."""
    return (setup.data / "redis" / "redis.log").read_text().count("Redis is starting")


def test_sigterm_stops_the_embedded_server_without_restarting_it(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        status = d.wait_ready()
        # The supervisor runs (its counters are there), nothing restarted yet.
        assert status["components"]["embedded-redis"]["restarts"] == 0
        d.create_account("stan", "1.00")
        pid = redis_pid(setup)
        assert d.terminate() == 0
        # Stopped once by the daemon (its AOF flushed), never started again.
        assert not pid_alive(pid)
        assert redis_servers(setup.data) == []
        assert _starts(setup) == 1
        log = d.log()
        assert "died" not in log and "restarted as" not in log
        assert log.rstrip().endswith("chargingd stopped")
    finally:
        d.kill()
        _kill_servers(setup.data)
        print(f"---- daemon log ----\n{d.log()}")


def test_sigterm_right_after_the_server_died_leaves_no_server(tmp_path: Path) -> None:
    """The daemon told to stop while its supervisor restarts (or is about to restart)
    the server: it exits 0 and no redis-server is left on the data dir, whichever came
    first; the data is intact for the next start."""
    setup = _setup(tmp_path)
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        d.create_account("tess", "3.00")
        os.kill(redis_pid(setup), signal.SIGKILL)
        time.sleep(0.6)  # the supervisor's poll sees the death: a restart may be under way
        assert d.terminate() == 0
        assert redis_servers(setup.data) == []
        again = Daemon(setup, tmp_path / "daemon2.log")
        again.start()
        try:
            again.wait_ready()
            assert balance(again, "tess") == (3_000_000, 0)
        finally:
            again.kill()
            print(f"---- second daemon log ----\n{again.log()}")
    finally:
        d.kill()
        _kill_servers(setup.data)
        print(f"---- daemon log ----\n{d.log()}")
