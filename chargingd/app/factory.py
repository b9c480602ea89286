"""One factory: every entry point builds Redis, the Ledger, Sessions, the billing
database, the exporter and the RADIUS component here, from one Config.

Before this, four entry points built the Ledger and the Redis client by hand and each
forgot a different option (``[ledger] partial_grants`` never reached the Ledger;
``rerate`` trimmed audit trails past ``audit_max_entries``). Every option a component
uses is passed here and nowhere else; tests/app/test_factory.py builds the app from a
config where every option differs from its default and checks where each one lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio import Redis
from redis.exceptions import RedisClusterException, RedisError

from chargingd.alerts import Alerts, build_alerts
from chargingd.app.diameter import DiameterComponent
from chargingd.app.radius import RadiusComponent
from chargingd.billing.db import BillingDB
from chargingd.billing.exporter import Exporter
from chargingd.core.clock import wall_ms
from chargingd.core.config import Config
from chargingd.core.redisconn import (
    CLUSTER_UNAVAILABLE,
    EmbeddedRedis,
    RedisClient,
    RedisUnreachable,
    connect,
    redact_url,
    wait_ready,
)
from chargingd.core.status import ComponentStats
from chargingd.diameter.relay import RelayClient
from chargingd.fraud import Fraud
from chargingd.invoicing import Books
from chargingd.ledger import Ledger
from chargingd.monitoring import ProcessMeters
from chargingd.monitoring.monitor import Monitor
from chargingd.monitoring.windows import KpiStore
from chargingd.sessions.ccapi import CallCutter
from chargingd.sessions.layoutchoice import agree_compact
from chargingd.sessions.service import Sessions, build_sessions

log = logging.getLogger("chargingd.factory")

REDIS_READY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OpenedRedis:
    """A ready Redis client, a label fit for logs, and where workers reach it."""

    client: RedisClient
    label: str
    url: str  # "" = the configured [redis] (workers read it from the config)
    # The embedded redis-server this call started (stopped when the stack unwinds):
    # the daemon supervises it (restarts it when it dies); None for any other Redis.
    embedded: EmbeddedRedis | None = None


class Factory:
    """Builds the components of one process from `cfg`; holds no state of its own."""

    def __init__(self, cfg: Config, *, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.cfg = cfg
        self.clock_ms = clock_ms

    # -- Redis ----------------------------------------------------------------------

    def embedded_redis(self) -> EmbeddedRedis:
        """The embedded redis-server of this data directory ([redis] embedded_*)."""
        r = self.cfg.redis
        return EmbeddedRedis(
            self.cfg.data_path, port=r.embedded_port, appendfsync=r.embedded_appendfsync
        )

    def redis_client(self, url: str | None = None) -> RedisClient:
        """A client for the configured Redis, or for `url` (timeouts from [redis])."""
        return connect(self.cfg.redis, url)

    async def open_redis(self, stack: contextlib.AsyncExitStack, *, owner: bool) -> OpenedRedis:
        """A ready client, closed when `stack` unwinds.

        With no URL and no cluster configured, the embedded server: the daemon
        (`owner`) starts it and stops it at exit; a tool (export, rerate, mediate)
        uses the running daemon's, and starts it only when no daemon runs.
        """
        r = self.cfg.redis
        url: str | None = None
        started: EmbeddedRedis | None = None
        if r.url or r.cluster_nodes:
            label = redact_url(r.url) if r.url else "cluster:" + ",".join(r.cluster_nodes)
        else:
            embedded = self.embedded_redis()
            url = embedded.url
            label = f"embedded:{url}"
            if owner or not embedded.socket_path.exists() or not await _answers(url):
                await asyncio.to_thread(embedded.start)
                stack.callback(embedded.stop)
                started = embedded
        client = self.redis_client(url)
        stack.push_async_callback(client.aclose)
        try:
            await wait_ready(client, REDIS_READY_TIMEOUT_S)
        except _UNREACHABLE as exc:
            hint = ""
            if r.cluster_nodes and "not enabled" in str(exc):
                hint = " (a single Redis, not a cluster node: set [redis] url instead)"
            raise RedisUnreachable(f"cannot reach Redis at {label}: {exc}{hint}") from exc
        if r.url and await _cluster_enabled(client):
            # PING answers on a cluster node; the first keyed command then failed with
            # a bare MOVED ("chargingd cannot run: 14011 127.0.0.1:24003").
            raise RedisUnreachable(
                f"Redis at {label} is a Redis Cluster node: list the cluster's nodes in"
                " [redis] cluster_nodes (and leave url empty) instead"
            )
        return OpenedRedis(client, label, url or r.url, started)

    # -- alerts ------------------------------------------------------------------------

    def alerts(self, redis: RedisClient) -> Alerts:
        """The process's alert stream ([alerts]; the webhook sender starts with it)."""
        return build_alerts(self.cfg.alerts, redis, clock_ms=self.clock_ms)

    def fraud(self, redis: RedisClient, ledger: Ledger, alerts: Alerts | None) -> Fraud | None:
        """The fraud rules ([fraud]); None when off. A call counts as live at most as long
        as a session lives ([sessions] session_ttl_s) when its CDR never comes."""
        if not self.cfg.fraud.enabled:
            return None
        return Fraud(
            self.cfg.fraud,
            redis=redis,
            ledger=ledger,
            alerts=alerts,
            clock_ms=self.clock_ms,
            live_ttl_s=self.cfg.sessions.session_ttl_s,
            single_redis=isinstance(redis, Redis),
        )

    # -- money, sessions, billing ---------------------------------------------------

    def ledger(self, redis: RedisClient) -> Ledger:
        """The Ledger with every [ledger] option it uses (scripts not loaded yet)."""
        lc = self.cfg.ledger
        return Ledger(
            redis,
            clock_ms=self.clock_ms,
            audit_max_entries=lc.audit_max_entries,
            audit_holds=lc.audit_holds,
            txn_ttl_s=lc.txn_ttl_s,
            partial_grants=lc.partial_grants,
            # A new session's hold that Redis runs after its request timed out (a stall)
            # refuses itself: the gateway was told "charging unavailable".
            request_timeout_s=self.cfg.redis.command_timeout_s,
            batch_early=self.cfg.redis.batch_early,
        )

    async def open_ledger(self, redis: RedisClient) -> Ledger:
        """The Ledger with its scripts registered; and the layout of the session record
        this process writes, read from the deployment's choice (``agree_records``), so
        ``cfg`` says it to every Sessions this Factory builds after (every process opens
        its ledger first)."""
        ledger = self.ledger(redis)
        await ledger.load_scripts()
        await self.agree_records(redis)
        return ledger

    async def agree_records(self, redis: RedisClient, *, store: bool = False) -> bool:
        """[sessions] compact_records resolved against the deployment's choice in Redis
        (sessions/layoutchoice.py; ``store``: the daemon's main process, which stores
        it); ``cfg`` updated with it."""
        sc = self.cfg.sessions
        compact = await agree_compact(redis, sc.compact_records, store=store)
        if sc.compact_records != compact:
            self.cfg = replace(self.cfg, sessions=replace(sc, compact_records=compact))
        return compact

    def sessions(
        self,
        redis: RedisClient,
        ledger: Ledger,
        *,
        call_cutter: CallCutter | None = None,
        source: str = "radius",
        fraud: Fraud | None = None,
    ) -> Sessions:
        """Credit control ([sessions], [rating]); a bad tariff file raises TariffLoadError.
        ``fraud``: the process's fraud rules (Factory.fraud), run in authorize."""
        # Sessions is typed for redis.asyncio.Redis; a RedisCluster client serves it the same.
        return build_sessions(
            self.cfg,
            redis=cast(Redis, redis),
            ledger=ledger,
            clock_ms=self.clock_ms,
            call_cutter=call_cutter,
            source=source,
            fraud=fraud,
        )

    def radius(
        self,
        redis: RedisClient,
        ledger: Ledger,
        *,
        role: str,
        meters: ProcessMeters | None = None,
        fraud: Fraud | None = None,
    ) -> RadiusComponent:
        """Sessions for this process + the RADIUS frontend ([radius]), not started;
        ``meters``: the process's (one per process, shared with the other frontends)."""
        sessions = self.sessions(redis, ledger, fraud=fraud)
        return RadiusComponent(self.cfg, redis, sessions, role=role, meters=meters)

    def diameter(
        self,
        redis: RedisClient,
        ledger: Ledger,
        *,
        sessions: Sessions | None = None,
        meters: ProcessMeters | None = None,
        fraud: Fraud | None = None,
    ) -> DiameterComponent:
        """The Diameter frontend ([diameter]) on the process's Sessions (shared with
        RADIUS when given; else its own, and it runs the session loops), not started."""
        own = sessions is None
        if sessions is None:
            sessions = self.sessions(redis, ledger, source="diameter", fraud=fraud)
        return DiameterComponent(self.cfg, redis, sessions, run_loops=own, meters=meters)

    def monitor(
        self,
        redis: RedisClient,
        ledger: Ledger,
        meters: ProcessMeters,
        *,
        status: Callable[[], dict[str, Any]],
        alerts: Alerts | None = None,
    ) -> Monitor:
        """The main process's monitoring ([monitoring], [export] group names; its KPI
        alert rules raise into ``alerts``), not started."""
        return Monitor(
            self.cfg, redis, ledger, meters, status=status, alerts=alerts, clock_ms=self.clock_ms
        )

    def kpi_store(self, redis: RedisClient) -> KpiStore:
        """The KPI windows (a worker adds its authorize counts there)."""
        return KpiStore(redis, max_groups=self.cfg.monitoring.max_groups, clock_ms=self.clock_ms)

    def diameter_relay(self, redis: RedisClient) -> RelayClient:
        """For a process without the Diameter listener (a RADIUS worker): ASR/RAR of
        Diameter sessions go through Redis to the process holding the peer's link."""
        d = self.cfg.diameter
        return RelayClient(redis, timeout_s=d.request_timeout_s * (d.request_retries + 2))

    async def billing_db(self) -> BillingDB:
        """The billing database ([billing]: a URL, else the embedded PostgreSQL)."""
        return await BillingDB.from_config(self.cfg)

    def books(self, db: BillingDB, ledger: Ledger | None, *, who: str) -> Books:
        """Invoicing ([invoicing]) on this database and ledger, on the factory's clock."""
        return Books(self.cfg.invoicing, db, ledger, clock=self._clock, who=who)

    def _clock(self) -> datetime:
        return datetime.fromtimestamp(self.clock_ms() / 1000, UTC)

    def exporter(
        self,
        redis: RedisClient,
        *,
        db: BillingDB | None = None,
        stats: ComponentStats | None = None,
    ) -> Exporter:
        """The CDR exporter ([export]; its database from [billing] unless `db` is given)."""
        return Exporter(redis, self.cfg, db=db, stats=stats)


# Redis down; for a cluster also none of its nodes answering (RedisClusterUnreachableError
# is no RedisError: `chargingd serve` and the tools died with its traceback), or a seed
# that is no cluster node (RedisClusterException, no RedisError either: the same).
_UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisError,
    OSError,
    RedisClusterException,
    *CLUSTER_UNAVAILABLE,
)


async def _cluster_enabled(client: Any) -> bool:
    """Is the Redis behind a (non-cluster) client a Redis Cluster node? False when it
    does not say (INFO refused by an ACL, an old server)."""
    try:
        info = await client.info("cluster")
    except RedisError:
        return False
    return bool(info.get("cluster_enabled"))


async def _answers(url: str) -> bool:
    """Does a Redis answer at `url` (the daemon's embedded one, if it runs)?"""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
