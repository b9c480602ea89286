"""The RADIUS component of `chargingd serve`: Sessions + frontend + cutter + loops.

Start: build Sessions (loads the [rating] plans), bind the RADIUS ports (radius/server.py),
attach the Disconnect/CoA client as the call cutter, run the cutter and reaper
loops. Stop: the frontend first (no new packets, queued ones answered within a
grace period), then the session loops, then the Disconnect/CoA socket.

Every process serving RADIUS (the main one and each worker) publishes its counters
to the Redis hash ``stats:radius`` (field = pid) every ``PUBLISH_INTERVAL_S``, so
the main process's ``server.status`` shows what each worker served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from chargingd.core.clock import ClockMs, wall_ms
from chargingd.core.config import Config
from chargingd.core.loops import run_every
from chargingd.core.redisconn import RedisClient
from chargingd.radius.accesslog import AccessLog
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.intake import ensure_ports_free
from chargingd.radius.server import RadiusFrontend, start_radius
from chargingd.sessions.service import Sessions

log = logging.getLogger("chargingd.radius")

FRONTEND_GRACE_S = 2.0
LOOPS_STOP_S = 5.0
PUBLISH_INTERVAL_S = 1.0
STATS_KEY = "stats:radius"
STALE_STATS_S = 10.0  # a process that has not published for this long is gone


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
        clock_ms: ClockMs = wall_ms,
    ) -> None:
        self.clock_ms = clock_ms
        self.cfg = cfg
        self.redis = redis
        self.sessions = sessions
        self.role = role  # "main" or "worker": shown in the published stats
        self.frontend: RadiusFrontend | None = None
        self.cutter: DynamicAuthClient | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Bind the ports, attach the cutter, start the cutter/reaper and stats loops."""
        # Register the session scripts before the first packet (else the first
        # requests of a burst would all pay for a NOSCRIPT reload).
        await self.sessions.store.load_scripts()
        if self.role == "main":  # workers join the main process's ports on purpose
            radius = self.cfg.radius
            await ensure_ports_free(radius.bind, (radius.auth_port, radius.acct_port))
        self.frontend, self.cutter = await start_radius(
            self.cfg.radius, self.sessions, access_log=self._access_log()
        )
        self.sessions.attach_call_cutter(self.cutter)
        self._tasks = [
            asyncio.create_task(self.sessions.run(self._stop), name="sessions-loops"),
            asyncio.create_task(self._publish_loop(), name="radius-stats"),
        ]

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
        with contextlib.suppress(RedisError, OSError):
            await self.redis.hdel(STATS_KEY, str(os.getpid()))

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
        cutter = self.sessions.cutter
        out["sessions"] = {
            "disconnects_sent": cutter.disconnects_sent,
            "disconnects_failed": cutter.disconnects_failed,
        }
        return out

    async def publish(self) -> None:
        """Write this process's counters to ``stats:radius`` (field = pid)."""
        doc = self.counters() | {"at_ms": self.clock_ms()}
        await self.redis.hset(STATS_KEY, str(os.getpid()), json.dumps(doc))

    async def _publish_quietly(self) -> None:
        try:
            await self.publish()
        except (RedisError, OSError) as exc:  # Redis away: the next pass tries again
            log.debug("cannot publish RADIUS stats: %s", exc)

    async def _publish_loop(self) -> None:
        await run_every(
            self._stop, PUBLISH_INTERVAL_S, self._publish_quietly, log=log, what="radius stats"
        )


async def radius_processes(redis: RedisClient, clock_ms: ClockMs = wall_ms) -> list[dict[str, Any]]:
    """The published counters of every live RADIUS process; stale entries are removed."""
    raw: dict[Any, Any] = await redis.hgetall(STATS_KEY)
    now_ms = clock_ms()
    live: list[dict[str, Any]] = []
    stale: list[Any] = []
    for field, value in raw.items():
        try:
            doc = json.loads(value)
        except ValueError:
            stale.append(field)
            continue
        if now_ms - int(doc.get("at_ms", 0)) > STALE_STATS_S * 1000:
            stale.append(field)
        else:
            live.append(doc)
    if stale:
        await redis.hdel(STATS_KEY, *stale)
    return sorted(live, key=lambda d: (d.get("role") != "main", d.get("pid", 0)))
