"""A `chargingd serve` on a Redis Cluster, for the cluster end-to-end tests: its
config's [redis] lines, and the daemon reading the truth back from the cluster."""

from __future__ import annotations

from radius_e2e_harness import Daemon
from redis.cluster import RedisCluster as SyncCluster
from redis_cluster import Cluster


class ClusterDaemon(Daemon):
    """A daemon on the cluster: the tests read the truth from the cluster."""

    cluster: Cluster

    def redis(self) -> SyncCluster:  # type: ignore[override]
        return self.cluster.client()


def cluster_redis(cluster: Cluster, extra: str = "") -> str:
    """The [redis] lines of a daemon on ``cluster`` (its seed list), then ``extra``."""
    nodes = ", ".join(f'"{seed}"' for seed in cluster.seeds)
    return f"cluster_nodes = [{nodes}]" + (f"\n{extra}" if extra else "")
