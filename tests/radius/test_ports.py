"""A second daemon must not join RADIUS ports another program holds (SO_REUSEPORT)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from radius_e2e_harness import Daemon, write_setup

from chargingd.radius.ports import PortInUse, bind_udp, ensure_ports_free


def _holder(port: int) -> socket.socket:
    """What another chargingd looks like to the kernel: SO_REUSEPORT on the port."""
    return bind_udp("127.0.0.1", port)


async def test_probe_refuses_a_port_held_with_reuseport() -> None:
    holder = _holder(0)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            await ensure_ports_free("127.0.0.1", (port,), wait_s=0.3, step_s=0.1)
    finally:
        holder.close()
    await ensure_ports_free("127.0.0.1", (port, 0), wait_s=0)  # free again: no error


def test_serve_refuses_to_share_its_radius_port(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)
    holder = _holder(setup.auth_port)
    daemon = Daemon(setup, tmp_path / "d.log")
    try:
        daemon.start()
        assert daemon.proc is not None
        try:
            code = daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None  # it started and shares the port: the bug
        assert code == 1, daemon.log()
        assert f"RADIUS port 127.0.0.1:{setup.auth_port} is already in use" in daemon.log()
        assert "chargingd ready" not in daemon.log()
    finally:
        holder.close()
        daemon.kill()  # SIGTERM, and never leave the embedded redis-server behind
