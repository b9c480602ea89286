"""End to end: the real `chargingd serve` as a subprocess with its embedded Redis (AOF)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chargingd.admin.params import RpcError
from chargingd.admin.server import AdminClient, AdminUnreachable
from chargingd.app.cli import main
from chargingd.core.redisconn import pid_alive

BIN = Path(sys.executable).parent / "chargingd"
READY_TIMEOUT_S = 30.0

pytestmark = pytest.mark.slow


class Daemon:
    """One `chargingd serve` subprocess; its log is printed when a test fails."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, socket_path: Path) -> dict[str, Any]:
        """Poll the admin socket until server.status answers (never a fixed sleep)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}")
            try:
                with AdminClient(socket_path, timeout_s=2.0) as client:
                    status: dict[str, Any] = client.call("server.status")
                    return status
            except (AdminUnreachable, RpcError):
                time.sleep(0.05)
        raise AssertionError("daemon not ready in time")

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout_s: float = 5.0) -> bool:
        """Whether ``text`` shows in the log within ``timeout_s``: the daemon logs off
        its event loop, so a line may follow the answer that came after it by moments."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    daemons: list[Daemon] = []

    def make(config: Path) -> Daemon:
        d = Daemon(config, tmp_path / f"daemon{len(daemons)}.log")
        daemons.append(d)
        return d

    yield make
    for d in daemons:
        d.kill()
        # pytest shows this only for a failing test.
        print(f"---- {d.log_path.name} ----\n{d.log()}")
    pidfile = tmp_path / "data" / "redis" / "redis.pid"
    if pidfile.exists():  # never leave an embedded redis-server behind
        pid = int(pidfile.read_text())
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "ctl", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def ctl_json(config: Path, *args: str) -> Any:
    """`chargingd ctl --json` in-process (cli.main): same code, no interpreter start."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["ctl", "--config", str(config), "--json", *args])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "tmp.toml"
    config.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"
log_level = "info"

[ledger]
sweep_interval_s = 0.2

[demo]
accounts = true

[radius]
# Never bind the real 1812/1813 in tests.
enabled = false
"""
    )
    return config


def test_serve_ctl_restart_keeps_balance(tmp_path: Path, daemon_factory: Any) -> None:
    config = write_config(tmp_path)
    sock = tmp_path / "data" / "chargingd.sock"
    first = daemon_factory(config)
    first.start()
    status = first.wait_ready(sock)
    assert status["redis"]["aof_enabled"] is True
    assert first.wait_log("chargingd ready admin="), first.log()
    assert oct(os.stat(sock).st_mode & 0o777) == "0o660"

    # A second daemon on the same data dir refuses to start and leaves the first alone.
    second = daemon_factory(config)
    second.start()
    assert second.proc is not None and second.proc.wait(timeout=30) == 1
    assert "another chargingd is running" in second.log()

    # Demo accounts exist; create one more and move money through ctl.
    assert ctl_json(config, "account", "get", "alice")["balance"] == "10.00"
    assert ctl_json(config, "account", "get", "bob")["status"] == "suspended"
    created = ctl(
        config, "account", "create", "dora", "--mode", "prepaid", "--currency", "EUR",
        "--balance", "1.00", "--identity", "user:dora",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    topped = ctl(config, "account", "topup", "dora", "2.25", "--txn-id", "e2e-1", "--reason", "x")
    assert topped.returncode == 0, topped.stderr
    assert "3.25 EUR" in topped.stdout
    ctl_json(config, "account", "topup", "alice", "0.50", "--txn-id", "e2e-2")
    hist = ctl_json(config, "account", "history", "dora")
    assert hist["entries"][0]["why"] == "x"
    table = ctl(config, "account", "history", "dora")
    assert table.returncode == 0 and "newest first" in table.stdout

    redis_pid = int((tmp_path / "data" / "redis" / "redis.pid").read_text())
    assert first.terminate() == 0
    assert "chargingd stopped" in first.log()
    assert not sock.exists()
    assert not pid_alive(redis_pid)  # the embedded redis-server stopped with the daemon
    down = ctl(config, "status")
    assert down.returncode == 69 and "is chargingd serve running?" in down.stderr  # EX_UNAVAILABLE

    # Same data dir again: the AOF brings everything back; demo creation is idempotent.
    again = daemon_factory(config)
    again.start()
    again.wait_ready(sock)
    assert ctl_json(config, "account", "get", "dora")["balance"] == "3.25"
    assert ctl_json(config, "account", "get", "alice")["balance"] == "10.50"
    retry = ctl_json(config, "account", "topup", "dora", "2.25", "--txn-id", "e2e-1")
    assert retry["balance"] == "3.25"  # the same txn id applies once, across restarts
    ctl_json(config, "account", "topup", "dora", "1.00", "--txn-id", "e2e-3")

    # SIGKILL leaves a stale socket file and an orphaned redis-server: the next start
    # removes the one, stops the other (its AOF flushed) and loses nothing.
    again.kill()
    assert sock.exists()
    third = daemon_factory(config)
    third.start()
    third.wait_ready(sock)
    assert third.wait_log("stopping orphaned embedded redis-server"), third.log()
    assert ctl_json(config, "account", "get", "dora")["balance"] == "4.25"
    assert third.terminate() == 0


def test_sighup_is_logged_and_ignored(tmp_path: Path, daemon_factory: Any) -> None:
    """`kill -HUP` (an operator expecting a reload) must not end the daemon on the spot:
    its default action left the embedded redis-server running and no clean stop."""
    config = write_config(tmp_path)
    sock = tmp_path / "data" / "chargingd.sock"
    d = daemon_factory(config)
    d.start()
    d.wait_ready(sock)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    assert d.wait_log("SIGHUP ignored: chargingd does not reload its configuration"), d.log()
    assert d.proc.poll() is None
    assert ctl_json(config, "account", "get", "alice")["balance"] == "10.00"
    assert d.terminate() == 0
    assert "chargingd stopped" in d.log()


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[server]\ndata_dir = "{tmp_path}"\nwrkers = 2\n')
    done = subprocess.run(
        [str(BIN), "serve", "--config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode != 0
    assert str(bad) in done.stderr
    assert "server.wrkers" in done.stderr


def test_env_redis_url_overrides_config(tmp_path: Path) -> None:
    from chargingd.core.config import ConfigError, load_config

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('[redis]\nurl = "redis://a:6379/0"\n')
    cfg = load_config(cfg_file, environ={"CHARGINGD_REDIS_URL": "redis://b:6380/1"})
    assert cfg.redis.url == "redis://b:6380/1"
    assert load_config(cfg_file, environ={}).redis.url == "redis://a:6379/0"
    with pytest.raises(ConfigError, match="CHARGINGD_REDIS_URL"):
        load_config(None, environ={"CHARGINGD_REDIS_URL": "http://x"})
