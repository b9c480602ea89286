"""The RADIUS component of `chargingd serve`: Sessions + frontend + cutter + loops.

Start: build Sessions (loads the [rating] plans), bind the RADIUS ports (radius/server.py),
attach the Disconnect/CoA client as the call cutter, run the cutter and reaper
loops. Stop: the frontend first (no new packets, queued ones answered within a
grace period), then the session loops, then the Disconnect/CoA socket.

The frontend is handed the process's Sessions wrapped in a MeteredCredit when
[monitoring] is on (counts and latency around each decision, nothing else); its own
counters, the Disconnect/CoA client's and the cutter's join the process's meters as
sources read at report time (monitoring/). Each worker's counters reach the main
process over a pipe (app/workers.py), never through Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from chargingd.core.config import Config
from chargingd.core.redisconn import RedisClient
from chargingd.monitoring import MeteredCredit, ProcessMeters, sources
from chargingd.radius.accesslog import AccessLog
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.kamailio_rpc import KAMAILIO_JSONRPC, KamailioRpcCutter
from chargingd.radius.ports import ensure_ports_free
from chargingd.radius.server import RadiusFrontend, start_radius
from chargingd.sessions.service import Sessions

log = logging.getLogger("chargingd.radius")

FRONTEND_GRACE_S = 2.0
LOOPS_STOP_S = 5.0


class RadiusComponent:
    """RADIUS frontend and the credit-control session loops of one process."""

    name = "radius"

    def __init__(
        self,
        cfg: Config,
        redis: RedisClient,
        sessions: Sessions,
        *,
        role: str,
        meters: ProcessMeters | None = None,
    ) -> None:
        self.cfg = cfg
        self.redis = redis
        self.sessions = sessions
        self.role = role  # "main" or "worker": shown in server.status
        self.meters = meters or ProcessMeters(role)
        self.frontend: RadiusFrontend | None = None
        self.cutter: DynamicAuthClient | None = None
        self.rpc_cutter: KamailioRpcCutter | None = None  # cut_backend kamailio_jsonrpc
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Bind the ports, attach the cutter, start the cutter/reaper loops."""
        # Register the session scripts before the first packet (else the first
        # requests of a burst would all pay for a NOSCRIPT reload).
        await self.sessions.store.load_scripts()
        if self.role == "main":  # workers join the main process's ports on purpose
            radius = self.cfg.radius
            await ensure_ports_free(radius.bind, (radius.auth_port, radius.acct_port))
        credit: Any = self.sessions
        if self.cfg.monitoring.enabled:
            credit = MeteredCredit(self.sessions, self.meters, "radius")
        # [radius] spread = "request", "user" or "ani": every process of [server]
        # workers = N attaches the same program to the ports' SO_REUSEPORT group
        # (radius/ports.py).
        spread = self.cfg.server.workers if self.cfg.radius.spread != "source" else 1
        self.frontend, self.cutter = await start_radius(
            self.cfg.radius,
            credit,
            access_log=self._access_log(),
            spread=spread,
        )
        self.sessions.attach_call_cutter(self.cutter)
        batcher = self.sessions.ledger.batcher
        if batcher is not None:  # no early pipeline while requests wait (ledger/batch.py)
            batcher.backlog = self.frontend.waiting
        await self._attach_rpc_cutter(self.frontend)
        self._add_sources(self.frontend, self.cutter)
        self._tasks = [asyncio.create_task(self.sessions.run(self._stop), name="sessions-loops")]

    async def _attach_rpc_cutter(self, frontend: RadiusFrontend) -> None:
        """Clients cut through Kamailio's JSON-RPC get their own call cutter (the
        others keep the Disconnect/CoA client)."""
        if not any(c.cut_backend == KAMAILIO_JSONRPC for c in self.cfg.radius.clients):
            return
        radius = self.cfg.radius
        self.rpc_cutter = KamailioRpcCutter(
            frontend.clients, timeout_s=radius.coa_timeout_s, retries=radius.coa_retries
        )
        await self.rpc_cutter.start()
        self.sessions.attach_call_cutter(self.rpc_cutter, owns=self.rpc_cutter.owns)
        rpc = self.rpc_cutter
        self.meters.add_source(lambda: sources.kamailio_rpc_samples(rpc.counters.as_dict()))

    def _add_sources(self, frontend: RadiusFrontend, cutter: DynamicAuthClient) -> None:
        """This component's counters, read by the process's meters at report time."""
        sessions = self.sessions
        meters = self.meters
        meters.add_source(lambda: sources.radius_samples(frontend.counters.as_dict()))
        meters.add_source(lambda: sources.dynauth_samples(cutter.counters.as_dict()))
        meters.add_source(
            lambda: sources.cutter_samples(
                sessions.cutter.disconnects_sent, sessions.cutter.disconnects_failed
            )
        )
        meters.add_source(lambda: sources.outage_samples(sessions.outage.totals))
        meters.add_source(
            lambda: [
                ("chargingd_radius_queue_depth", (port,), depth)
                for port, depth in frontend.queue_depths().items()
            ],
            gauges=True,
        )

    def _access_log(self) -> AccessLog | None:
        """[radius] access_log (relative: under [server] data_dir); None when off."""
        if not self.cfg.radius.access_log:
            return None
        path = Path(self.cfg.radius.access_log)
        return AccessLog(path if path.is_absolute() else self.cfg.data_path / path)

    async def stop(self) -> None:
        """Frontend (with grace), then the session loops, then the cutter socket."""
        if self.frontend is not None:
            await self.frontend.stop(grace_s=FRONTEND_GRACE_S)
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=LOOPS_STOP_S)
            for task in late:
                log.warning("%s did not stop in time; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        if self.cutter is not None:
            await self.cutter.close()
        if self.rpc_cutter is not None:
            await self.rpc_cutter.close()

    def counters(self) -> dict[str, Any]:
        """Frontend, Disconnect/CoA client and cutter counters of this process."""
        out: dict[str, Any] = {"pid": os.getpid(), "role": self.role}
        if self.frontend is not None:
            out["auth_port"] = self.frontend.auth_port
            out["acct_port"] = self.frontend.acct_port
            out["frontend"] = self.frontend.counters.as_dict()
            out["drops_by_client"] = self.frontend.drops.as_dict()
        if self.cutter is not None:
            out["dynamic_auth"] = self.cutter.counters.as_dict()
        if self.rpc_cutter is not None:
            out["kamailio_rpc"] = self.rpc_cutter.counters.as_dict()
        cutter = self.sessions.cutter
        out["sessions"] = {
            "disconnects_sent": cutter.disconnects_sent,
            "disconnects_failed": cutter.disconnects_failed,
        }
        return out
