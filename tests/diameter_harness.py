"""An in-process Diameter frontend on real Sessions, a real Ledger and a real Redis,
on the wall clock (the Erlang peer and TCP run in real time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sessions_harness import make_plan, session_config

from chargingd.core.clock import wall_ms
from chargingd.core.config.diameter import DiameterConfig, DiameterPeerConfig
from chargingd.diameter.frontend import DiameterFrontend
from chargingd.ledger import Ledger
from chargingd.sessions.idle import FinalUsage
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions

GW = DiameterPeerConfig(
    name="ims1",
    origin_host="scscf.ims.test",
    realm="ims.test",
    addresses=("127.0.0.1",),
)


def diameter_config(**overrides: Any) -> DiameterConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "bind": "127.0.0.1",
        "port": 0,
        "origin_host": "ocs.chargingd.test",
        "origin_realm": "chargingd.test",
        "request_timeout_s": 1.0,
        "request_retries": 1,
        "peers": (GW,),
    }
    values.update(overrides)
    return DiameterConfig(**values)


@dataclass
class Running:
    frontend: DiameterFrontend
    sessions: Sessions
    ledger: Ledger
    redis: aioredis.Redis

    @property
    def port(self) -> int:
        return self.frontend.port


@contextlib.asynccontextmanager
async def running_frontend(
    redis: aioredis.Redis,
    data_dir: Path,
    *,
    diameter: DiameterConfig | None = None,
    **session_overrides: Any,
) -> AsyncIterator[Running]:
    """Sessions (cutter + reaper running) + the Diameter frontend, ASR/RAR attached."""
    ledger = Ledger(redis, clock_ms=wall_ms)
    await ledger.load_scripts()
    plan = make_plan()
    cfg = session_config(cutter_interval_s=0.2, **session_overrides)
    sessions = Sessions(
        redis=redis,
        ledger=ledger,
        pricer=Pricer({"retail": plan}, default=plan),
        cfg=cfg,
        clock_ms=wall_ms,
        data_dir=data_dir,
    )
    await sessions.store.load_scripts()
    frontend = DiameterFrontend(
        diameter or diameter_config(),
        sessions,
        sessions.store.send,
        validity_time_s=cfg.interim_interval_s,
        session_ttl_s=cfg.session_ttl_s,
        closed_ttl_s=cfg.closed_ttl_s,
        final_usage=FinalUsage.of(sessions),
    )
    await frontend.start()
    sessions.attach_call_cutter(frontend.initiated, owns=frontend.owns)
    sessions.name_source([p.name for p in frontend.cfg.peers], "diameter")
    stop = asyncio.Event()
    loops = asyncio.create_task(sessions.run(stop))
    try:
        yield Running(frontend, sessions, ledger, redis)
    finally:
        stop.set()
        await frontend.stop(grace_s=1.0)
        await asyncio.wait_for(loops, 10)
