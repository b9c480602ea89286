"""The Diameter component of `chargingd serve`: the Credit-Control frontend on Sessions.

It shares the process's Sessions with RADIUS when RADIUS runs (one cutter, one
reaper; the cut router sends each session's cut to the frontend of its client),
and runs the session loops itself when RADIUS is off. Start: bind, attach the
ASR/RAR sender to the cut router. Stop: answer running CCRs within a grace
period, DPR every peer, then the session loops it runs.

One listener, in the main process: a peer keeps one long-lived TCP connection, so
SO_REUSEPORT would give one worker all of a peer's traffic and the others none;
and the ASR for a session must leave on the connection of its peer, which a
worker's cutter could not reach. RADIUS workers' cutters hand Diameter sessions
on to the main process (sessions stay in Redis, any process may claim them; see
``relay.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chargingd.core.config import Config
from chargingd.core.redisconn import RedisClient
from chargingd.diameter.frontend import DiameterFrontend
from chargingd.diameter.relay import RelayServer
from chargingd.monitoring import MeteredCredit, ProcessMeters
from chargingd.sessions.ccapi import QuotaControl
from chargingd.sessions.idle import FinalUsage
from chargingd.sessions.service import Sessions

log = logging.getLogger("chargingd.diameter")

GRACE_S = 2.0
LOOPS_STOP_S = 5.0


class DiameterComponent:
    """Diameter frontend of the main process (+ the session loops when RADIUS is off)."""

    name = "diameter"

    def __init__(
        self,
        cfg: Config,
        redis: RedisClient,
        sessions: Sessions,
        *,
        run_loops: bool,
        meters: ProcessMeters | None = None,
    ) -> None:
        self.cfg = cfg
        self.redis = redis
        self.sessions = sessions
        self.run_loops = run_loops
        s = cfg.sessions
        credit: QuotaControl = sessions
        if meters is not None and cfg.monitoring.enabled:
            credit = MeteredCredit(sessions, meters, "diameter")
        self.frontend = DiameterFrontend(
            cfg.diameter,
            credit,
            sessions.store.send,  # one pipeline per loop tick with sessions' commands
            validity_time_s=s.interim_interval_s,
            session_ttl_s=s.session_ttl_s,
            closed_ttl_s=s.closed_ttl_s,
            final_usage=FinalUsage.of(sessions),
        )
        self.relay = RelayServer(
            redis, self.frontend.initiated, peers_open=self.frontend.server.open_peer_names
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.sessions.store.load_scripts()
        await self.frontend.start()
        self.sessions.attach_call_cutter(self.frontend.initiated, owns=self.frontend.owns)
        self.sessions.name_source((p.name for p in self.cfg.diameter.peers), "diameter")
        self._tasks.append(asyncio.create_task(self.relay.run(self._stop), name="diameter-relay"))
        if self.run_loops:
            self._tasks.append(
                asyncio.create_task(self.sessions.run(self._stop), name="sessions-loops")
            )

    async def stop(self) -> None:
        await self.frontend.stop(GRACE_S)
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=LOOPS_STOP_S)
            for task in late:
                log.warning("%s did not stop in time; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()

    def counters(self) -> dict[str, Any]:
        return self.frontend.counters() | {"relayed": self.relay.served}
