"""The CDR exporter on a Redis Cluster: tests/billing/test_exporter.py's dead letters,
unchanged, with a cluster client. The CDR stream (`cdr:stream`) and the dead-letter
stream (`cdr:dead`) live in different slots, so a bad CDR's dead letter and the batch's
acknowledgement cannot be one MULTI there (CROSSSLOT): the dead letters are written
first, then the batch is acknowledged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from billing.test_exporter import db, test_undecodable_cdrs_go_to_dead_letters
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis_cluster import Cluster

from chargingd.billing.cdr import CDR_STREAM

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
