"""The failures of scripts/money_soak.py --cluster: what an operator's Redis Cluster
does to the daemons in the middle of traffic (tests/redis_cluster.py's 3 masters with a
replica each, cluster-node-timeout 1 s).

- daemon B SIGKILLed and restarted;
- the master of a busy account paused (SIGSTOP) for a few seconds: longer than the
  node timeout, so its replica is promoted while it sleeps and it comes back a replica;
- a slot of busy accounts migrated to another master key by key while their calls run
  (ASK redirections, TRYAGAIN for scripts whose keys are split for a moment);
- a master SIGKILLed (the one of the CDR stream), its replica promoted;
- a graceful CLUSTER FAILOVER of another master;
- all along, top-ups over daemon A's admin socket, each sent twice (one txn id).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import redis as syncredis
from redis.cluster import key_slot
from redis_cluster import Cluster, Node

from chargingd.admin.params import RpcError
from chargingd.admin.server import AdminUnreachable
from chargingd.billing.cdr import CDR_STREAM


def _id(node: Node) -> str:
    with node.client() as c:
        return str(c.execute_command("CLUSTER", "MYID").decode())


def owner(cluster: Cluster, slot: int) -> Node:
    """The master serving `slot` now, as the cluster's live nodes say."""
    for node in cluster.masters():
        with node.client() as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(n for n in cluster.nodes if n.port == port)
    raise AssertionError(f"no master serves slot {slot}")


def migrate_slot(cluster: Cluster, slot: int, pause_s: float = 0.05) -> tuple[Node, Node, int]:
    """Move `slot` to another master, one key at a time with a pause between keys
    (what `redis-cli --cluster reshard` does, slowly): returns (from, to, keys moved)."""
    src = owner(cluster, slot)
    dst = next(m for m in cluster.masters() if m.port != src.port)
    src_id, dst_id = _id(src), _id(dst)
    with dst.client() as d, src.client() as s:
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            time.sleep(pause_s)
    for node in [dst, src] + [m for m in cluster.masters() if m.port not in (src.port, dst.port)]:
        with node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
    return src, dst, moved


def graceful_failover(cluster: Cluster, master: Node, timeout_s: float = 30.0) -> Node:
    """CLUSTER FAILOVER on `master`'s replica; returns it once it is master."""
    master_id = _id(master)
    replica = None
    for node in cluster.nodes:
        if not node.alive or node is master:
            continue
        with node.client() as c:
            info = c.info("replication")
            nodes = c.execute_command("CLUSTER", "NODES").decode()
        mine = next(line for line in nodes.splitlines() if "myself" in line)
        if info["role"] == "slave" and mine.split()[3] == master_id:
            replica = node
            break
    if replica is None:
        raise AssertionError(f"{master.address} has no replica")
    with replica.client() as c:
        c.execute_command("CLUSTER", "FAILOVER")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(syncredis.RedisError), replica.client() as c:
            if c.info("replication")["role"] == "master":
                cluster.wait_healthy(timeout_s)
                return replica
        time.sleep(0.05)
    raise AssertionError("CLUSTER FAILOVER did not complete: " + cluster.describe())


async def topups(world: Any, stop: asyncio.Event) -> None:
    """Top-ups through daemon A's admin socket all along the failures, each sent twice
    with its transaction id (applied once) and again until answered (Redis unavailable,
    daemon busy): world.topped is what the ledger must say."""
    daemon = world.daemons[0]
    accounts = sorted(a for a in world.initial if a.startswith(("rich", "post")))
    n = 0
    while not stop.is_set():
        account = accounts[n % len(accounts)]
        params = {"id": account, "amount": "0.25", "txn_id": f"soak-topup-{n}"}
        for _ in range(2):
            for _ in range(120):
                try:
                    await asyncio.to_thread(daemon.call, "account.topup", params)
                    break
                except (RpcError, AdminUnreachable):
                    await asyncio.sleep(0.5)
            else:
                world.events.append(f"top-up {params['txn_id']} never answered")
        world.topped[account] = world.topped.get(account, 0) + 250_000
        n += 1
        await asyncio.sleep(0.3)
    world.events.append(f"{n} top-ups sent (each twice)")


async def chaos(world: Any, start_s: float) -> None:
    """The sequence above, with top-ups beside; each step noted in world.events."""
    stop = asyncio.Event()
    topping = asyncio.create_task(topups(world, stop))
    try:
        await _failures(world, start_s)
    finally:
        stop.set()
        await topping


async def _failures(world: Any, start_s: float) -> None:
    cluster: Cluster = world.cluster
    note = world.events.append
    await asyncio.sleep(start_s)
    b = world.daemons[1]
    note(f"{time.strftime('%X')} SIGKILL daemon B")
    b.proc.kill()
    b.proc.wait()
    await asyncio.sleep(1.0)
    b.start()
    await asyncio.to_thread(b.wait_ready)
    note(f"{time.strftime('%X')} daemon B restarted")
    await asyncio.sleep(1.0)

    busy = "rich0"
    paused = await asyncio.to_thread(owner, cluster, key_slot(f"{{a:{busy}}}".encode()))
    assert paused.proc is not None
    note(f"{time.strftime('%X')} SIGSTOP master {paused.address} ({busy}'s) 3 s")
    os.kill(paused.proc.pid, signal.SIGSTOP)
    await asyncio.sleep(3.0)
    os.kill(paused.proc.pid, signal.SIGCONT)
    began = time.monotonic()
    await asyncio.to_thread(cluster.wait_healthy, 30.0)
    note(f"{time.strftime('%X')} SIGCONT; cluster healthy {time.monotonic() - began:.1f} s later")
    await asyncio.sleep(2.0)

    for account in ("rich1", "poor1"):
        slot = key_slot(f"{{a:{account}}}".encode())
        began = time.monotonic()
        src, dst, moved = await asyncio.to_thread(migrate_slot, cluster, slot)
        note(
            f"{time.strftime('%X')} slot {slot} ({account}) {src.address} -> {dst.address}:"
            f" {moved} keys in {time.monotonic() - began:.1f} s"
        )
    await asyncio.sleep(2.0)

    victim = await asyncio.to_thread(owner, cluster, key_slot(CDR_STREAM.encode()))
    began = time.monotonic()
    note(f"{time.strftime('%X')} SIGKILL master {victim.address} (the CDR stream's)")
    promoted = await asyncio.to_thread(cluster.fail_over, victim)
    note(
        f"{time.strftime('%X')} {promoted.address} promoted {time.monotonic() - began:.1f} s later"
    )
    await asyncio.sleep(2.0)

    others = [m for m in await asyncio.to_thread(cluster.masters) if m.port != promoted.port]
    for master in others:
        with contextlib.suppress(AssertionError):  # one without a replica (paused one's)
            began = time.monotonic()
            new = await asyncio.to_thread(graceful_failover, cluster, master)
            note(
                f"{time.strftime('%X')} CLUSTER FAILOVER {master.address} -> {new.address}"
                f" {time.monotonic() - began:.1f} s"
            )
            break
