"""The CDR exporter on a Redis Cluster: tests/billing/test_exporter.py's dead letters,
unchanged, with a cluster client. The CDR stream (`cdr:stream`) and the dead-letter
stream (`cdr:dead`) live in different slots, so a bad CDR's dead letter and the batch's
acknowledgement cannot be one MULTI there (CROSSSLOT): the dead letters are written
first, then the batch is acknowledged."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from billing.test_exporter import _keys, db, test_undecodable_cdrs_go_to_dead_letters
from cdr_factory import make_cdr
from cluster_daemon import cluster_redis
from radius_e2e_harness import BIN
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis_cluster import Cluster

from chargingd.billing.cdr import CDR_STREAM
from chargingd.billing.db import BillingDB

pytestmark = [pytest.mark.timeout(120)]

__all__ = ["db", "test_undecodable_cdrs_go_to_dead_letters"]


@pytest.fixture
async def redis(cluster: Cluster) -> AsyncIterator[Any]:
    cluster.flush()
    alive = next(n for n in cluster.nodes if n.alive)
    client = RedisCluster(host="127.0.0.1", port=alive.port)
    yield client
    await client.aclose()


def test_the_streams_are_in_two_slots() -> None:
    assert key_slot(CDR_STREAM.encode()) != key_slot(b"cdr:dead")


async def test_export_once_dead_letters_a_bad_cdr_and_acknowledges_the_batch(
    redis: Any, db: BillingDB, pg_url: str, cluster: Cluster, tmp_path: Path
) -> None:
    """`chargingd export --once` on the cluster: the good CDRs stored, the bad one in
    the dead letters, nothing left pending (before: the batch's MULTI failed, CROSSSLOT,
    and the command exited 1 with every entry still pending)."""
    for raw in (make_cdr(1).pack(), b"\xc1 not msgpack", make_cdr(2).pack()):
        await redis.xadd(CDR_STREAM, {"cdr": raw})
    config = tmp_path / "chargingd.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[redis]\n{cluster_redis(cluster)}\n'
                      f'[billing]\ndb_url = "{pg_url}"\n')  # fmt: skip
    done = subprocess.run([str(BIN), "export", "--once", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["handled"], status["exported"], status["dead_letters"]) == (3, 2, 1)
    assert await _keys(db) == [("radius", "call-1"), ("radius", "call-2")]
    (dead,) = await redis.xrange("cdr:dead")
    assert dead[1][b"reason"]
    summary = await redis.xpending(CDR_STREAM, "exporter")
    assert summary["pending"] == 0
