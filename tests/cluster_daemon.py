"""A `chargingd serve` on a Redis Cluster, for the cluster end-to-end tests: its
config's [redis] lines, and the daemon reading the truth back from the cluster."""

from __future__ import annotations

from typing import Any

from radius_e2e_harness import Daemon
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster as SyncCluster
from redis_cluster import Cluster


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
