"""What an operator reads when `chargingd serve` (or a tool) cannot start: the error
names the part that failed and where, not only the socket library's words."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import ports
import pytest
from aiohttp import web
from redis_cluster import _free_pair

from chargingd.app import factory as factory_module
from chargingd.app.factory import Factory
from chargingd.core.config import config_from_dict
from chargingd.core.redisconn import EmbeddedRedis, RedisUnreachable
from chargingd.monitoring.web import HttpBindError, HttpServer


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    return ports.free_port(socket.SOCK_STREAM)


async def test_unreachable_redis_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was "chargingd cannot run: Error 111 connecting to 127.0.0.1:1. Connection refused."
    (and "chargingd invoice: Error 111 ..."): nothing said it was Redis, nor which."""
    monkeypatch.setattr(factory_module, "REDIS_READY_TIMEOUT_S", 0.2)
    port = _closed_port()
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    cfg = config_from_dict({"redis": {"url": url}})
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(RedisUnreachable) as caught:
            await Factory(cfg).open_redis(stack, owner=True)
    text = str(caught.value)
    assert text.startswith(f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0: ")
    assert "s3cret" not in text  # the URL as logs show it
    assert "Connection refused" in text or "Error 111" in text


async def test_unreachable_cluster_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A [redis] cluster_nodes of which no node answers: `chargingd serve` and `chargingd
    export` died with a traceback (redis-py's RedisClusterUnreachableError is not a
    RedisError), where an unreachable redis:// URL says this one line."""
    monkeypatch.setattr(factory_module, "REDIS_READY_TIMEOUT_S", 0.2)
    seeds = [f"127.0.0.1:{_closed_port()}", f"127.0.0.1:{_closed_port()}"]
    cfg = config_from_dict({"redis": {"cluster_nodes": seeds, "connect_timeout_s": 0.2}})
    async with contextlib.AsyncExitStack() as stack:
        with pytest.raises(RedisUnreachable) as caught:
            await Factory(cfg).open_redis(stack, owner=True)
    text = str(caught.value)
    assert text.startswith(f"cannot reach Redis at cluster:{','.join(seeds)}: "), text
    assert "Connection refused" in text or "Error 111" in text


async def test_a_cluster_seed_that_is_a_single_redis_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cluster_nodes` naming a Redis without cluster mode: `chargingd serve` died
    with redis-py's RedisClusterException traceback (no RedisError) and exit code 1."""
    monkeypatch.setattr(factory_module, "REDIS_READY_TIMEOUT_S", 0.2)
    port = _closed_port()
    single = EmbeddedRedis(tmp_path, port=port, appendfsync="no")
    single.start()
    try:
        cfg = config_from_dict({"redis": {"cluster_nodes": [f"127.0.0.1:{port}"]}})
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(RedisUnreachable) as caught:
                await Factory(cfg).open_redis(stack, owner=True)
    finally:
        single.stop()
    text = str(caught.value)
    assert text.startswith(f"cannot reach Redis at cluster:127.0.0.1:{port}: "), text
    assert text.endswith("(a single Redis, not a cluster node: set [redis] url instead)")


async def test_a_url_naming_a_cluster_node_is_named_in_the_error(tmp_path: Path) -> None:
    """`[redis] url` naming a Redis Cluster node (cluster_nodes meant): PING answered, and
    `chargingd serve` then stopped with "chargingd cannot run: 14011 127.0.0.1:24003",
    the bare text of the first MOVED."""
    port = _free_pair()  # (a cluster node's bus port is port + 10000: both free)
    conf = tmp_path / "nodes.conf"
    node = EmbeddedRedis(
        tmp_path,
        port=port,
        appendfsync="no",
        extra_args=("--cluster-enabled", "yes", "--cluster-config-file", str(conf)),
    )
    node.start()
    try:
        cfg = config_from_dict({"redis": {"url": f"redis://127.0.0.1:{port}/0"}})
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(RedisUnreachable) as caught:
                await Factory(cfg).open_redis(stack, owner=True)
    finally:
        node.stop()
    assert str(caught.value) == (
        f"Redis at redis://127.0.0.1:{port}/0 is a Redis Cluster node: list the cluster's"
        " nodes in [redis] cluster_nodes (and leave url empty) instead"
    )


async def test_http_port_in_use_is_named_in_the_error() -> None:
    """Was "[Errno 98] error while attempting to bind on address ('127.0.0.1', 9812):
    address already in use": nothing said it was the [http] listener."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(web.Application(), "127.0.0.1", port, dashboard=False)
        with pytest.raises(HttpBindError) as caught:
            await server.start()
    assert str(caught.value) == (
        f"HTTP port 127.0.0.1:{port} ([http] bind, port: /metrics and the dashboard) "
        "is already in use by another process (another chargingd?)"
    )
