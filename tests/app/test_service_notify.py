"""systemd's readiness protocol (app/notify.py, contrib/systemd/chargingd.service): the
real `chargingd serve` tells a unix datagram socket READY=1 once it answers, pings the
watchdog from its event loop, says STOPPING=1 on SIGTERM, and keeps the variables from
its children (the embedded redis-server)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO
from radius_e2e_harness import BIN, Daemon, write_setup

from chargingd.app.notify import ServiceNotifier

pytestmark = pytest.mark.slow
UNIT = REPO / "contrib" / "systemd" / "chargingd.service"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end: a bound unix datagram socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def messages(sock: socket.socket, until: str, timeout_s: float) -> list[dict[str, str]]:
    """The datagrams received (each as its KEY=value fields) until one holds ``until``."""
    out: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        fields = dict(line.split("=", 1) for line in data.split("\n") if line)
        out.append(fields)
        if until in data:
            return out
    raise AssertionError(f"no {until!r} within {timeout_s} s; got {out}")


def test_no_manager_sends_nothing() -> None:
    env = {"PATH": "/bin"}
    notifier = ServiceNotifier.from_environment(env)
    assert notifier.address is None and notifier.watchdog_s is None
    assert notifier.send("READY=1") is False


def test_the_variables_are_taken_from_the_environment(manager: socket.socket) -> None:
    path = manager.getsockname()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = ServiceNotifier.from_environment(env)
    assert env == {}  # no child inherits them
    assert notifier.watchdog_s == 3.0
    assert notifier.send("STATUS=x") is True
    assert manager.recv(100) == b"STATUS=x"


def test_a_watchdog_meant_for_another_pid_is_not_pinged(manager: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": manager.getsockname(), "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}
    assert ServiceNotifier.from_environment(env).watchdog_s is None


def test_an_abstract_socket_is_reached() -> None:
    name = f"chargingd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert ServiceNotifier(f"@{name}").send("READY=1")
        assert sock.recv(100) == b"READY=1"


def test_a_manager_gone_is_logged_once_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = ServiceNotifier(str(tmp_path / "nobody.sock"))
    assert notifier.send("READY=1") is False
    assert notifier.send("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "service manager" in r.getMessage()]) == 1


def test_serve_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, manager: socket.socket
) -> None:
    setup = write_setup(tmp_path)
    env = {"NOTIFY_SOCKET": manager.getsockname(), "WATCHDOG_USEC": "400000"}
    daemon = Daemon(setup, tmp_path / "daemon.log", env=env)
    daemon.start()
    assert daemon.proc is not None
    try:
        ready = messages(manager, "READY=1", 60)[-1]
        # READY=1 comes once every component answers: the admin socket at once
        status = daemon.call("server.status")
        assert status["redis"]["url"].startswith("embedded:")
        assert status["radius"]["processes"]  # RADIUS bound and counted
        assert ready["MAINPID"] == str(daemon.proc.pid)
        assert "admin" in ready["STATUS"] and "redis" in ready["STATUS"]
        # the watchdog every 0.2 s (half of WATCHDOG_USEC), from the running loop
        pings = messages(manager, "WATCHDOG=1", 2) + messages(manager, "WATCHDOG=1", 2)
        assert sum("WATCHDOG" in m for m in pings) >= 2
        # the embedded redis-server was started without the manager's variables
        redis_pid = int((setup.data / "redis" / "redis.pid").read_text())
        environ = Path(f"/proc/{redis_pid}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith((b"NOTIFY_SOCKET=", b"WATCHDOG_")) for v in environ)
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = messages(manager, "STOPPING=1", 30)[-1]
        assert stopping["STOPPING"] == "1"
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.kill()
        print(daemon.log())


def test_serve_without_a_manager_runs_as_before(tmp_path: Path) -> None:
    """No NOTIFY_SOCKET (make run, a container): nothing sent, nothing logged about it."""
    setup = write_setup(tmp_path)
    daemon = Daemon(setup, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        assert daemon.terminate() == 0
        assert "service manager" not in daemon.log()
    finally:
        daemon.kill()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_shipped_unit_file_is_valid(tmp_path: Path) -> None:
    """contrib/systemd/chargingd.service as systemd reads it (its ExecStart pointed at
    this checkout's chargingd, the path an install would have)."""
    text = UNIT.read_text()
    assert re.search(r"^Type=notify$", text, re.M)
    assert re.search(r"^RestartPreventExitStatus=2$", text, re.M)  # bad config: no loop
    unit = tmp_path / "chargingd.service"
    unit.write_text(text.replace("/opt/chargingd/.venv/bin/chargingd", str(BIN)))
    run = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in run.stderr.splitlines() if "chargingd.service" in line]
    assert not ours, ours
