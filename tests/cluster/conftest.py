"""What the Redis Cluster tests share: a local cluster per test module (3 masters with
replicas on loopback ports, tests/redis_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as found:
        yield found
