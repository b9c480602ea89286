"""The real `chargingd serve` with RADIUS, as a subprocess: config, packets, a gateway.

Shared by test_radius_e2e.py and test_workers_e2e.py. The daemon runs its embedded
Redis under tmp_path; the test reads the ledger and cdr:stream from that Redis and
operates the daemon over its admin socket, like an operator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as syncredis
import redis.asyncio as aioredis
from ports import free_ports

from chargingd.admin.params import RpcError
from chargingd.admin.server import AdminClient, AdminUnreachable
from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.redisconn import pid_alive
from chargingd.radius import codec as rc

BIN = Path(sys.executable).parent / "chargingd"
SECRET = b"e2e-secret"
READY_TIMEOUT_S = 30.0

# A flat tariff: 0.01 per second (0.60 per minute, 1 s increments) to +44, so a
# call's cost is usage_s x 10_000 micros whatever the time of day.
TARIFF = """
[tariff]
id = "e2e"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
UK = ["44"]

[rates.FLAT]
connect_fee = "0"
rate = "0.60"
unit = "60s"
increment = "1s"

[plans.FLAT]
[[plans.FLAT.rates]]
destinations = ["UK"]
rate = "FLAT"

[[profiles]]
subject = "*any"
plan = "FLAT"
from = 2020-01-01T00:00:00Z
"""
MICROS_PER_S = 10_000  # what one second costs under TARIFF


def free_udp_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, outside the ephemeral range (tests/ports.py)."""
    return free_ports(count, socket.SOCK_DGRAM)


@dataclass
class Setup:
    config: Path
    data: Path
    auth_port: int
    acct_port: int
    coa_port: int

    @property
    def admin_socket(self) -> Path:
        return self.data / "chargingd.sock"

    @property
    def redis_socket(self) -> Path:
        return self.data / "redis" / "redis.sock"


def _toml_lines(values: dict[str, Any]) -> str:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, str):
            text = f'"{value}"'
        else:
            text = str(value)
        out.append(f"{key} = {text}")
    return "\n".join(out)


def write_setup(
    tmp_path: Path,
    *,
    workers: int = 1,
    radius: bool = True,
    extra: str = "",
    invoicing: str = "dunning_in_serve = false",
    billing: str = "",
    redis: str = "",
    export: str = "run_in_serve = false",
    sessions: str = "",
    session_options: dict[str, Any] | None = None,
    radius_options: dict[str, Any] | None = None,
    top: str = "",
    tariff_text: str = TARIFF,
) -> Setup:
    """Config + tariff in tmp_path: RADIUS on free ports, one client (127.0.0.1).

    ``extra`` adds keys to that client, ``sessions`` to [sessions]; ``invoicing``,
    ``billing``, ``redis`` and ``export`` are the bodies of those sections (dunning is
    off by default: it would start an embedded PostgreSQL under tmp_path; no [redis]:
    the embedded redis-server). ``session_options`` / ``radius_options`` override the
    [sessions] / [radius] values written here; ``top`` goes before [server]."""
    auth_port, acct_port, coa_port = free_udp_ports(3)
    # No [redis] table unless asked: a test may append its own (TOML: one table each).
    redis_section = f"[redis]\n{redis}\n\n" if redis else ""
    sessions_values: dict[str, Any] = {"cutter_interval_s": 0.2, "disconnect_backoff_s": 0.2}
    sessions_values.update(session_options or {})
    radius_values: dict[str, Any] = {"coa_timeout_s": 0.5, "coa_retries": 1}
    radius_values.update(radius_options or {})
    tariff = tmp_path / "tariff.toml"
    tariff.write_text(tariff_text)
    data = tmp_path / "data"
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f"""{top}
[server]
data_dir = "{data}"
workers = {workers}

{redis_section}[export]
{export}

[invoicing]
{invoicing}

[billing]
{billing}

[rating]
default_plan = "{tariff}"

[sessions]
{_toml_lines(sessions_values)}
{sessions}

[radius]
enabled = {str(radius).lower()}
bind = "127.0.0.1"
auth_port = {auth_port}
acct_port = {acct_port}
{_toml_lines(radius_values)}

[[radius.clients]]
name = "gw"
address = "127.0.0.1"
secret = "{SECRET.decode()}"
coa_port = {coa_port}
{extra}
"""
    )
    return Setup(config, data, auth_port, acct_port, coa_port)


class Daemon:
    """One `chargingd serve` subprocess; `log()` is printed by the fixture on teardown."""

    def __init__(self, setup: Setup, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.setup = setup
        self.log_path = log_path
        self.env = env or {}  # added to this process's environment
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "--config", str(self.setup.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
            )

    def wait_ready(self) -> dict[str, Any]:
        """Poll server.status until it answers (never a fixed sleep)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}")
            try:
                return self.call("server.status")  # type: ignore[no-any-return]
            except (AdminUnreachable, RpcError):
                time.sleep(0.05)
        raise AssertionError("daemon not ready in time")

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with AdminClient(self.setup.admin_socket, timeout_s=10.0) as client:
            return client.call(method, params or {})

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pidfile = self.setup.data / "redis" / "redis.pid"
        if pidfile.exists():  # never leave an embedded redis-server behind
            pid = int(pidfile.read_text())
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, text: str, timeout_s: float = 5.0) -> bool:
        """Whether ``text`` shows in the log within ``timeout_s``: the daemon logs off
        the request path, so a line may follow the answer that caused it by moments."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def redis(self) -> syncredis.Redis:
        return syncredis.Redis(unix_socket_path=str(self.setup.redis_socket))

    def async_redis(self) -> Any:
        """An asyncio client of the daemon's Redis (the caller closes it: aclose)."""
        return aioredis.Redis(unix_socket_path=str(self.setup.redis_socket))

    def cdrs(self) -> list[CDR]:
        with self.redis() as r:
            return [CDR.unpack(f[b"cdr"]) for _, f in r.xrange(CDR_STREAM)]

    def create_account(self, account_id: str, balance: str, **more: Any) -> dict[str, Any]:
        params = {
            "id": account_id,
            "mode": "prepaid",
            "currency": "EUR",
            "balance": balance,
            "identities": [f"user:{account_id}"],
        }
        return self.call("account.create", params | more)  # type: ignore[no-any-return]


@dataclass
class Call:
    """The packets of one call from a Cisco-like gateway (codec-built, secret SECRET)."""

    session_id: str
    user: str
    called: str = "00442079460000"
    calling: str = "+4930111111"
    ident: int = 0
    attrs: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.attrs = b"".join(
            (
                rc.attr_bytes(rc.USER_NAME, self.user.encode()),
                rc.attr_bytes(rc.CALLING_STATION_ID, self.calling.encode()),
                rc.attr_bytes(rc.CALLED_STATION_ID, self.called.encode()),
                rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
                rc.attr_bytes(rc.ACCT_SESSION_ID, self.session_id.encode()),
                rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=" + self.session_id.encode()),
            )
        )

    def _next(self) -> int:
        self.ident = (self.ident + 1) % 256
        return self.ident

    def access_request(self) -> bytes:
        return rc.encode_access_request(self._next(), os.urandom(16), self.attrs, SECRET)

    def accounting(
        self, status: int, usage_s: int, *, event_s: int = 0, cause_hex: str = ""
    ) -> bytes:
        """``event_s``: an Event-Timestamp (RFC 2869 §5.3) when not 0; ``cause_hex``:
        an h323-disconnect-cause (Q.850 in hex, as Cisco sends it)."""
        extra = rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        extra += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
        if event_s:
            extra += rc.attr_u32(rc.EVENT_TIMESTAMP, event_s)
        if cause_hex:
            cause = b"h323-disconnect-cause=" + cause_hex.encode()
            extra += rc.cisco_vsa(rc.H323_DISCONNECT_CAUSE, cause)
        return rc.encode_request(rc.ACCOUNTING_REQUEST, self._next(), self.attrs + extra, SECRET)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.inbox.put_nowait(data)


class GatewaySocket:
    """One UDP socket of the gateway: request, wait for the answer, retransmit on loss."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Client) -> None:
        self.transport = transport
        self.proto = proto

    @classmethod
    async def open(cls) -> GatewaySocket:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
        return cls(transport, proto)

    async def ask(self, packet: bytes, port: int, *, timeout_s: float = 2.0) -> rc.Packet:
        """Send and wait for the answer; retransmits the same bytes (RFC 5080) on loss."""
        for _ in range(5):
            self.transport.sendto(packet, ("127.0.0.1", port))
            try:
                data = await asyncio.wait_for(self.proto.inbox.get(), timeout_s)
            except TimeoutError:
                continue
            return rc.decode(data)
        raise AssertionError(f"no answer from 127.0.0.1:{port}")

    def close(self) -> None:
        self.transport.close()


@contextlib.contextmanager
def serving(setup: Setup, log_path: Path) -> Iterator[Daemon]:
    """`chargingd serve` of ``setup``, ready; killed after (its log printed: pytest
    shows it only when the test fails)."""
    d = Daemon(setup, log_path)
    d.start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")


def cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """One `chargingd COMMAND --config SETUP ARGS...` run (its output captured)."""
    return subprocess.run(
        [str(BIN), *args[:1], "--config", str(setup.config), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def radius_processes(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-process RADIUS counters of a server.status answer."""
    procs: list[dict[str, Any]] = status["radius"]["processes"]
    return procs
