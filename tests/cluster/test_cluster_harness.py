"""The test cluster's own start-up: a port taken between the check and the bind.

Other suites run beside this one on the same machine, so a port found free can be
bound by another process before redis-server binds it. The harness starts the cluster
again on new ports instead of failing an unrelated test with "Address already in use".
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import redis_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_a_port_taken_before_the_bind_starts_the_cluster_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: redis-server's bind fails at once,
    # and a ping to the port is refused at once (a listening socket would accept it and
    # leave the harness's ping waiting for its timeout on a loaded machine)
    taken_port = taken.getsockname()[1]
    real = redis_cluster._free_pair
    handed: list[int] = []

    def ports() -> Iterator[int]:
        yield taken_port  # "free" when checked, bound by someone else at start
        while True:
            yield real()

    it = ports()

    def fake() -> int:
        port = next(it)
        handed.append(port)
        return port

    monkeypatch.setattr(redis_cluster, "_free_pair", fake)
    try:
        cluster = redis_cluster.start_cluster()
        try:
            assert taken_port not in {n.port for n in cluster.nodes}
            assert len(handed) > 6  # a second attempt drew new ports
            with cluster.client() as c:
                assert c.set("k", "v")
                assert c.get("k") == b"v"
        finally:
            cluster.stop()
    finally:
        taken.close()
