"""A `chargingd serve` on a Redis Cluster, for the cluster end-to-end tests: its
config's [redis] lines, and the daemon reading the truth back from the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from radius_e2e_harness import Daemon, Setup
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster as SyncCluster
from redis_cluster import Cluster, Node


class ClusterDaemon(Daemon):
    """A daemon on the cluster: the tests read the truth from the cluster."""

    cluster: Cluster

    def redis(self) -> SyncCluster:  # type: ignore[override]
        return self.cluster.client()

    def async_redis(self) -> Any:
        """A cluster-aware asyncio client (the caller closes it: aclose)."""
        alive = next(n for n in self.cluster.nodes if n.alive)
        return AsyncCluster(host="127.0.0.1", port=alive.port)


def cluster_redis(cluster: Cluster, extra: str = "") -> str:
    """The [redis] lines of a daemon on ``cluster`` (its seed list), then ``extra``."""
    nodes = ", ".join(f'"{seed}"' for seed in cluster.seeds)
    return f"cluster_nodes = [{nodes}]" + (f"\n{extra}" if extra else "")


@contextmanager
def running(
    cluster: Cluster, setup: Setup, log: Path, *, log_tail: int = 20_000
) -> Iterator[ClusterDaemon]:
    """A daemon of ``setup`` on ``cluster``, ready (its Redis a cluster); killed after,
    the end of its log printed (shown when a test fails)."""
    daemon = ClusterDaemon(setup, log)
    daemon.cluster = cluster
    daemon.start()
    try:
        assert daemon.wait_ready()["redis"]["url"].startswith("cluster:")
        yield daemon
    finally:
        daemon.kill()
        print(f"---- daemon log ----\n{daemon.log()[-log_tail:]}")


def account_on(cluster: Cluster, master: Node, prefix: str) -> str:
    """An account name (prefix + a number) whose keys live on ``master``."""
    for n in range(1000):
        name = f"{prefix}{n}"
        if cluster.master_of(f"{{a:{name}}}:acct") is master:
            return name
    raise AssertionError("no account name on that master")
