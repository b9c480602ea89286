"""An in-process admin server on a real Redis, shared by test_admin.py and test_ctl.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from chargingd.admin.methods import AdminMethods
from chargingd.admin.server import AdminServer
from chargingd.app.factory import Factory
from chargingd.app.serve import Runtime
from chargingd.core.config import Config
from chargingd.core.status import StatusRegistry
from chargingd.ledger import Ledger


@dataclass
class Harness:
    server: AdminServer
    ledger: Ledger
    registry: StatusRegistry
    path: Path


@asynccontextmanager
async def running_admin(redis: aioredis.Redis, sock_dir: Path) -> AsyncIterator[Harness]:
    """Start the real admin server (real Ledger, real Redis) on sock_dir/admin.sock."""
    ledger = Ledger(redis)
    await ledger.load_scripts()
    registry = StatusRegistry()
    cfg = Config()
    runtime = Runtime(cfg, Factory(cfg), redis, "test", ledger, registry)
    path = sock_dir / "admin.sock"
    server = AdminServer(
        AdminMethods(ledger, runtime.status),
        path,
        mode=0o660,
        stats=registry.component("admin"),
        grace_s=2.0,
    )
    await server.start()
    try:
        yield Harness(server, ledger, registry, path)
    finally:
        await server.stop()
