"""The daemon's parts in-process: component lifecycle, hold sweeper, demo accounts, drain."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from admin_harness import running_admin
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chargingd.admin.server import AsyncAdminClient
from chargingd.app.demo import create_demo_accounts
from chargingd.app.serve import COMPONENTS, Daemon, HoldSweeper, Runtime
from chargingd.core.config import Config, config_from_dict
from chargingd.core.money import parse_amount
from chargingd.core.redisconn import EmbeddedRedis, redact_url
from chargingd.core.status import ComponentStats
from chargingd.ledger import Ledger, Mode, Status
from chargingd.sessions.record import SessionRecord


async def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Recorder:
    """A component that records its lifecycle, as a RADIUS front or exporter would run."""

    def __init__(self, name: str, events: list[str], rt: Runtime) -> None:
        self.name = name
        self.events = events
        self.stats = rt.registry.component(name)

    async def start(self) -> None:
        self.events.append(f"start {self.name}")
        self.stats.inc("started")

    async def stop(self) -> None:
        self.events.append(f"stop {self.name}")


async def test_daemon_starts_components_in_order_and_stops_in_reverse(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    cfg = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path)},
            "redis": {"url": redis_server.url},
            "demo": {"accounts": True},
            "radius": {"enabled": False},  # never bind the real 1812/1813 in tests
        }
    )
    events: list[str] = []
    factories = [
        lambda rt: Recorder("radius", events, rt),
        *COMPONENTS,
        lambda rt: Recorder("exporter", events, rt),
    ]
    daemon = Daemon(cfg, factories)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_for(lambda: len(daemon.components) == len(factories))
    async with AsyncAdminClient(cfg.admin_socket) as client:
        status = await client.call("server.status", {})
        alice = await client.call("account.get", {"id": "alice"})
    assert status["components"]["radius"] == {"started": 1}
    assert status["redis"]["url"] == redis_server.url
    assert alice["balance"] == "10.00"
    stop.set()
    # A bound, not a pace: stopping closes the embedded PostgreSQL (pg_ctl -w stop),
    # which took more than 10 s at a load average of 9.
    await asyncio.wait_for(task, 60)
    assert events == ["start radius", "start exporter", "stop exporter", "stop radius"]
    assert not cfg.admin_socket.exists()


async def test_sweeper_reclaims_and_counts(redis: aioredis.Redis) -> None:
    now_ms = [1_000_000]
    ledger = Ledger(redis, clock_ms=lambda: now_ms[0])
    await ledger.load_scripts()
    await ledger.create_account(
        "alice", mode=Mode.PREPAID, currency="EUR", balance_micros=parse_amount("5"), who="t"
    )
    grant = await ledger.reserve("alice", "call-1", parse_amount("1"), lease_ms=1000)
    assert grant.ok
    stats = ComponentStats()
    sweeper = HoldSweeper(ledger, 0.01, stats)
    now_ms[0] += 60_000  # well past the lease and the hold index's padding
    await sweeper.start()
    await wait_for(lambda: stats.get("holds_reclaimed") == 1)
    await sweeper.stop()
    assert stats.get("runs") >= 1 and stats.get("errors") == 0
    assert (await ledger.get_account("alice")).reserved_micros == 0


async def test_sweeper_errors_are_logged_never_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No retries: each sweep fails at once instead of backing off inside redis-py.
    dead = aioredis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"), retry=Retry(NoBackoff(), 0)
    )
    stats = ComponentStats()
    sweeper = HoldSweeper(Ledger(dead), 0.01, stats)
    await sweeper.start()
    await wait_for(lambda: stats.get("errors") >= 3)
    await sweeper.stop()
    await dead.aclose()
    assert "hold sweep failed" in caplog.text


async def test_demo_accounts_are_created_once(redis: aioredis.Redis) -> None:
    ledger = Ledger(redis)
    await ledger.load_scripts()
    assert await create_demo_accounts(ledger) == ["alice", "acme", "bob"]
    await ledger.topup("alice", parse_amount("1"), txn_id="t1", who="t")
    assert await create_demo_accounts(ledger) == []
    alice = await ledger.get_account("alice")
    assert alice.balance_micros == parse_amount("11.00")
    assert alice.identities == ("user:alice", "ani:+4930111111")
    assert (await ledger.get_account("acme")).credit_limit_micros == parse_amount("500")
    assert (await ledger.get_account("bob")).status is Status.SUSPENDED
    assert await ledger.find_account("ani:+4930111111") == "alice"


async def test_stop_drains_an_in_flight_request(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, tmp_path: Path
) -> None:
    pauser = aioredis.Redis.from_url(redis_server.url)
    async with running_admin(redis, tmp_path) as harness:
        stats = harness.registry.component("admin")
        async with AsyncAdminClient(harness.path) as client:
            await client.call("account.list", {})
            # A real slow request: Redis itself holds every client for 1 s (long enough
            # that a loaded machine still stops the server while it is in flight; under
            # the 2 s grace of the harness).
            await pauser.execute_command("CLIENT", "PAUSE", 1000, "ALL")  # type: ignore[no-untyped-call]
            call = asyncio.create_task(client.call("account.list", {}))
            await wait_for(lambda: stats.get("requests") == 2)
            assert not call.done()  # in flight when the stop begins
            started = time.monotonic()
            await harness.server.stop()
            assert time.monotonic() - started >= 0.1  # stop waited for it
            assert (await call) == {"cursor": 0, "accounts": []}
    await pauser.aclose()


def test_redact_url() -> None:
    assert redact_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:secret@host:6379") == "redis://:***@host:6379"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_default_config_has_sweeper_and_admin() -> None:
    cfg = dataclasses.replace(Config())
    assert cfg.admin.socket_mode == "0660"
    assert len(COMPONENTS) >= 2


async def test_old_session_records_are_upgraded_before_the_components_start(
    redis_server: EmbeddedRedis,
    redis: aioredis.Redis,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A call live across the upgrade from the hash records (before 6db408c): its
    record is converted before anything serves it (tests/sessions/test_upgrade.py
    drives such calls to their CDRs)."""
    old = {"session_id": "s1", "account_id": "acc1", "user_name": "alice", "caller": "",
           "callee": "+4930123456", "destination": "DE_BERLIN", "plan": "retail",
           "currency": "EUR", "gateway": "10.0.0.1", "client": "gw1",
           "auth_ms": 1_767_225_600_000, "state": "live"}  # fmt: skip
    await redis.hset("{a:acc1}:s:s1", mapping=old)
    await redis.expire("{a:acc1}:s:s1", 600)
    cfg = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path)},
            "redis": {"url": redis_server.url},
            "radius": {"enabled": False},
        }
    )
    seen: list[tuple[int, bytes | None]] = []

    class Probe:
        name = "probe"

        async def start(self) -> None:
            seen.append((await redis.exists("{a:acc1}:s:s1"), await redis.get("{a:acc1}:r:s1")))

        async def stop(self) -> None:
            pass

    daemon = Daemon(cfg, [lambda rt: Probe()])
    stop = asyncio.Event()
    caplog.set_level("INFO", "chargingd.sessions.upgrade")
    task = asyncio.create_task(daemon.run(stop))
    await wait_for(lambda: bool(daemon.components))
    stop.set()
    await asyncio.wait_for(task, 60)
    ((old_left, blob),) = seen
    assert old_left == 0 and blob is not None
    rec = SessionRecord.unpack("acc1", "s1", blob)
    assert (rec.callee, rec.auth_ms, rec.state) == ("+4930123456", 1_767_225_600_000, "live")
    assert "upgraded 1 live session records" in caplog.text
