"""Revenue assurance on a Redis Cluster: tests/assurance/test_assure_e2e.py's scenario,
unchanged, against a daemon whose [redis] lists the cluster's nodes. Its accounts live
on all three masters (bob, frank, gina on one; alice on another; carol, dave, erin on
the third), so `chargingd mediate`, the exporter, the invoice run and `chargingd
assure` (live sessions, holds, balances and journals read on every master; the CDR
stream and the dead letters in their own slots) run across the cluster: a clean run
finds nothing, and each injected fault is found once, with its money."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from assurance.test_assure_e2e import (  # the same scenario, with this module's daemon
    EXTRA_CONFIG,
    test_clean_traffic_then_one_fault_of_every_kind,
)
from cluster_daemon import ClusterDaemon, cluster_redis
from radius_e2e_harness import write_setup
from redis_cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

__all__ = ["test_clean_traffic_then_one_fault_of_every_kind"]


@pytest.fixture
def daemon(cluster: Cluster, tmp_path: Path, pg_url: str) -> Iterator[ClusterDaemon]:
    cluster.flush()
    setup = write_setup(tmp_path, billing=f'db_url = "{pg_url}"', redis=cluster_redis(cluster))
    # The test drains the CDR stream itself; a dead consumer's entry is never claimed.
    text = setup.config.read_text().replace(
        "run_in_serve = false", "run_in_serve = false\nclaim_idle_ms = 3600000"
    )
    setup.config.write_text(text + EXTRA_CONFIG)
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        assert found.wait_ready()["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        found.kill()
        print(f"---- daemon log ----\n{found.log()}")  # shown only when the test fails
