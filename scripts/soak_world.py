"""The world of scripts/money_soak.py: a redis-server, daemon configs, the gateways'
sockets (RADIUS requests to two daemons, RFC 5176 answers), what each call did."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as syncredis
from radius_e2e_harness import SECRET, Daemon, Setup, free_udp_ports

from chargingd.core.redisconn import redis_server_binary
from chargingd.radius import codec as rc

MAPPING = (
    'call_id = "id", account = "account", caller = "from", callee = "to",'
    ' start = "start", answer = "answer", end = "end", billsec = "talk"'
)


@dataclass
class Outcome:
    """What one simulated call did, as its gateway saw it."""

    session_id: str
    account_id: str
    kind: str
    accepted: bool = False
    status: str = ""  # what its CDR must say
    cause: int = 0
    timeout_s: int = 0  # the Session-Timeout of the first answer the gateway got


@dataclass
class World:
    tmp: Path
    redis_socket: Path
    redis_proc: subprocess.Popen[bytes] | None = None
    pg_url: str = ""
    daemons: list[Daemon] = field(default_factory=list)
    coa_port: int = 0
    initial: dict[str, int] = field(default_factory=dict)
    prepaid: set[str] = field(default_factory=set)
    cut_accounts: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    dms: dict[str, asyncio.Event] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    cluster: Any = None  # tests/redis_cluster.Cluster when the soak runs on a cluster
    topped: dict[str, int] = field(default_factory=dict)  # top-ups sent (micros)

    def redis(self) -> Any:
        """A client of the truth: the redis-server, or the cluster (cluster-aware)."""
        if self.cluster is not None:
            return self.cluster.client()
        return syncredis.Redis(unix_socket_path=str(self.redis_socket))

    def redis_section(self) -> str:
        if self.cluster is not None:
            nodes = ", ".join(f'"{seed}"' for seed in self.cluster.seeds)
            return f"cluster_nodes = [{nodes}]"
        return f'url = "unix://{self.redis_socket}"'


# -- infrastructure -------------------------------------------------------------------


def start_redis(world: World) -> None:
    world.redis_proc = subprocess.Popen(
        [
            redis_server_binary(), "--port", "0", "--unixsocket", str(world.redis_socket),
            "--dir", str(world.tmp), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if syncredis.Redis(unix_socket_path=str(world.redis_socket)).ping():
                return
        except (syncredis.ConnectionError, syncredis.BusyLoadingError):
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def write_config(world: World, name: str, *, workers: int, cheap: Path, extra: str = "") -> Setup:
    """A daemon's config file; ``extra``: more TOML tables appended (e.g. [fraud])."""
    auth_port, acct_port = free_udp_ports(2)
    base = world.tmp / name
    base.mkdir()
    tariff = world.tmp / "tariff.toml"
    config = base / "chargingd.toml"
    config.write_text(
        f"""
[server]
data_dir = "{base / "data"}"
workers = {workers}

[redis]
{world.redis_section()}
command_timeout_s = 0.5

[billing]
db_url = "{world.pg_url}"

[export]
run_in_serve = true
block_ms = 100

[invoicing]
dunning_in_serve = false

[rating]
default_plan = "{tariff}"
plans = {{ cheap = "{cheap}" }}

[sessions]
interim_interval_s = 10
stale_factor = 2
reaper_interval_s = 0.5
cutter_interval_s = 0.2
disconnect_backoff_s = 0.2

[radius]
bind = "127.0.0.1"
auth_port = {auth_port}
acct_port = {acct_port}
coa_timeout_s = 0.3
coa_retries = 1

[[radius.clients]]
name = "gw"
address = "127.0.0.1"
secret = "{SECRET.decode()}"
coa_port = {world.coa_port}

[mediation.sources.pbx]
format = "csv"
time_format = "epoch"
mapping = {{ {MAPPING} }}
account_rule = "accountcode"
account_map = {{ {", ".join(f'{a} = "{a}"' for a in sorted(world.initial))} }}
charge = "ledger"
"""
        + extra
    )
    return Setup(config, base / "data", auth_port, acct_port, world.coa_port)


class DisconnectListener(asyncio.DatagramProtocol):
    """The gateways' RFC 5176 side: ACK every CoA and every Disconnect of a call its
    gateway still has (noting which call), NAK one of a call it has hung up already
    (Error-Cause 503 Session Context Not Found, as a NAS answers)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = rc.decode(data)
        except rc.MalformedPacket:
            return
        ack = rc.DISCONNECT_ACK if packet.code == rc.DISCONNECT_REQUEST else rc.COA_ACK
        sid = packet.text(rc.ACCT_SESSION_ID)
        attrs = b""
        if ack == rc.DISCONNECT_ACK:
            if sid in self.world.dms:
                self.world.dms[sid].set()
            else:  # hung up already (play() dropped it before its Stop)
                ack, attrs = rc.DISCONNECT_NAK, rc.attr_u32(rc.ERROR_CAUSE, 503)
        reply = rc.encode_reply(ack, packet.identifier, packet.authenticator, attrs, SECRET)
        assert self.transport is not None
        self.transport.sendto(reply, addr)


class Gateway(asyncio.DatagramProtocol):
    """One gateway socket: a request may go to both daemons; its first answer counts,
    a later one (the other daemon's) is dropped, as a NAS does (RFC 5080 §2.2.2)."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[rc.Packet]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        future = self.waiting.get(data[1])
        if future is not None and not future.done():
            future.set_result(rc.decode(data))

    async def ask(self, packet: bytes, ports: list[int]) -> rc.Packet | None:
        """Send to the first port (and a copy to the others); retransmit on silence."""
        future: asyncio.Future[rc.Packet] = asyncio.get_running_loop().create_future()
        self.waiting[packet[1]] = future
        try:
            for _ in range(8):
                assert self.transport is not None
                for port in ports:
                    self.transport.sendto(packet, ("127.0.0.1", port))
                try:
                    return await asyncio.wait_for(asyncio.shield(future), 2.0)
                except TimeoutError:
                    continue
            return None
        finally:
            del self.waiting[packet[1]]
