"""The real `chargingd serve` on a real Redis Cluster (3 masters + 3 replicas).

The end-to-end flows of tests/radius/test_daemon_e2e.py, unchanged, against a daemon
whose [redis] lists the cluster's nodes (the step-by-step session path; every key of
an account in its {a:ACCOUNT} slot, the global indexes and streams in their own):
a whole call with interims (one CDR, the exact debit), a cut for credit by
Disconnect-Request, an operator kill and an account suspension through the admin
socket and ctl, a top-up moving a limited call's deadline (CoA). The daemon also
runs its CDR exporter into PostgreSQL, checked here.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cluster_daemon import ClusterDaemon, cluster_redis
from radius.test_daemon_e2e import (  # the same flows, with this module's `shared`
    daemon,
    gateway,
    test_call_authorize_interims_stop_one_cdr_exact_debit,
    test_call_without_money_is_cut_by_disconnect_request,
    test_operator_kill_through_ctl_sends_disconnect,
    test_silent_gateway_does_not_hold_up_the_admin_socket,
    test_suspending_an_account_cuts_its_live_calls,
    test_topup_moves_the_deadline_of_a_limited_call,
)
from radius_e2e_harness import BIN, Call, Daemon, GatewaySocket, write_setup
from redis_cluster import Cluster

from chargingd.ledger.keys import acct_key
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

__all__ = [
    "daemon",
    "gateway",
    "test_call_authorize_interims_stop_one_cdr_exact_debit",
    "test_call_without_money_is_cut_by_disconnect_request",
    "test_operator_kill_through_ctl_sends_disconnect",
    "test_silent_gateway_does_not_hold_up_the_admin_socket",
    "test_suspending_an_account_cuts_its_live_calls",
    "test_topup_moves_the_deadline_of_a_limited_call",
]


@pytest.fixture(scope="module")
def shared(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, pg_billing_db: str
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("cluster-e2e")
    setup = write_setup(
        tmp,
        redis=cluster_redis(cluster),
        export="run_in_serve = true\nblock_ms = 100",
        billing=f'db_url = "{pg_billing_db}"',
    )
    found = ClusterDaemon(setup, tmp / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        status = found.wait_ready()
        assert status["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        found.kill()


async def test_cdrs_reach_postgresql_through_the_exporter(
    daemon: Daemon, pg_billing_db: str
) -> None:
    daemon.create_account("xena", "10.00")
    sock = await GatewaySocket.open()
    calls = [Call(f"cluster-xena-{i}", "xena") for i in range(3)]
    try:
        for n, call in enumerate(calls):
            accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
            assert accept.code == rc.ACCESS_ACCEPT
            await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
            await sock.ask(call.accounting(rc.STATUS_STOP, 10 + n), daemon.setup.acct_port)
    finally:
        sock.close()

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_billing_db) as conn:
            cur = conn.execute(
                "SELECT call_id, duration_s FROM cdrs WHERE account_id = 'xena' ORDER BY call_id"
            )
            return list(cur.fetchall())

    for _ in range(300):
        if len(await asyncio.to_thread(rows)) == 3:
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(rows) == [(c.session_id, 10 + n) for n, c in enumerate(calls)]
    status = daemon.call("server.status")
    assert status["components"]["exporter"]["exported"] >= 3
    # The KPI feeder reads the same stream on the cluster (docs/monitoring.md).
    for _ in range(300):
        kpis = daemon.call("stats.kpi", {"window": "5m"})["windows"]["5m"]["all"]["all"]
        if kpis["answered"] >= 3:
            break
        await asyncio.sleep(0.05)
    assert kpis["answered"] >= 3 and kpis["talk_s"] >= 10 + 11 + 12

    # The ledger scripts journal every movement in the account's own slot on the
    # cluster too, and the exporter copies the journal (docs/assurance.md).
    def journal() -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_billing_db) as conn:
            cur = conn.execute(
                "SELECT kind, ref, amount_micros FROM ledger_journal WHERE account_id = 'xena'"
                " ORDER BY entry_ms, entry_seq"
            )
            return list(cur.fetchall())

    expected = [("open", "", 0)] + [
        ("debit", c.session_id, -(10 + n) * 10_000) for n, c in enumerate(calls)
    ]
    for _ in range(300):
        if len(await asyncio.to_thread(journal)) >= len(expected):
            break
        await asyncio.sleep(0.05)
    assert await asyncio.to_thread(journal) == expected


def test_admin_socket_reads_and_writes_on_the_cluster(daemon: Daemon, tmp_path: Path) -> None:
    created = daemon.create_account("yuri", "5.00")
    assert created["id"] == "yuri"
    topped = daemon.call("account.topup", {"id": "yuri", "amount": "2.50", "txn_id": "t-yuri"})
    again = daemon.call("account.topup", {"id": "yuri", "amount": "2.50", "txn_id": "t-yuri"})
    assert topped["balance"] == again["balance"] == "7.50"  # the same txn id: applied once
    listed = daemon.call("account.list", {})
    assert "yuri" in [a["id"] for a in listed["accounts"]]
    assert daemon.call("session.list", {"account": "yuri"})["sessions"] == []


def test_account_listing_pages_over_accounts_on_every_master(daemon: Daemon) -> None:
    """account.list (`ctl account list`) pages the account index: every account once,
    whichever master holds it; account.history reads each one's audit on its master."""
    cluster = daemon.cluster  # type: ignore[attr-defined]
    made = [f"list-{n:02d}" for n in range(40)]
    for account_id in made:
        daemon.create_account(account_id, "1.00")
    assert len({cluster.master_of(acct_key(a)).port for a in made}) == 3
    seen: list[str] = []
    cursor = 0
    while True:
        page = daemon.call("account.list", {"cursor": cursor, "count": 7})
        seen += [a["id"] for a in page["accounts"] if a["id"].startswith("list-")]
        cursor = page["cursor"]
        if cursor == 0:
            break
    assert sorted(seen) == made  # each once
    shown = subprocess.run([str(BIN), "ctl", "--config", str(daemon.setup.config), "--json",
                            "account", "list", "--count", "1000"], capture_output=True,
                           text=True, timeout=30, check=True)  # fmt: skip
    listed = json.loads(shown.stdout)
    assert set(made) <= {a["id"] for a in listed["accounts"]}
    for account_id in (made[0], made[-1]):
        (entry,) = daemon.call("account.history", {"id": account_id})["entries"]
        assert (entry["what"], entry["after"]["balance"]) == ("create", "1.00")


def test_status_sums_the_redis_of_every_node(daemon: Daemon) -> None:
    """server.status (`ctl status`) on a cluster: memory and clients of all six nodes
    (before: INFO went to one node, a sixth of the cluster)."""
    cluster = daemon.cluster  # type: ignore[attr-defined]
    largest = 0
    for node in cluster.nodes:
        with node.client() as c:
            largest = max(largest, int(c.info("memory")["used_memory"]))
    redis = daemon.call("server.status")["redis"]
    assert redis["used_memory_bytes"] > 3 * largest // 2, (redis, largest)
    assert (redis["nodes"], redis["masters"], redis["nodes_down"]) == (6, 3, 0), redis
    assert redis["connected_clients"] >= 6 and redis["version"]
    shown = subprocess.run([str(BIN), "ctl", "--config", str(daemon.setup.config), "status"],
                           capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert "redis nodes" in shown.stdout and "redis used_memory_bytes" in shown.stdout


def test_the_cluster_is_three_masters_with_a_replica_each(cluster: Cluster) -> None:
    assert len(cluster.masters()) == 3 and len(cluster.seeds) == 6
    with cluster.client() as c:
        shards = c.execute_command("CLUSTER", "SLOTS")  # [start, end, master, replica...]
    assert sum(shard[1] - shard[0] + 1 for shard in shards) == 16384
    assert sorted(len(shard) - 2 for shard in shards) == [2, 2, 2]  # master + 1 replica
