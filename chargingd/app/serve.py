"""`chargingd serve`: the daemon lifecycle.

Start order: config -> Redis (embedded or configured) -> ledger scripts -> demo
accounts -> components (each ``async start()``) -> "chargingd ready". SIGTERM/SIGINT
set an event (SIGHUP is logged and ignored: there is no configuration reload);
components stop in reverse order (the admin socket first: it stops accepting and
drains in-flight requests), then Redis closes and the embedded server stops. Add a
component by appending a factory to ``COMPONENTS``.

The embedded redis-server this process started is supervised while it serves
(core/redisconn.py EmbeddedSupervisor: started again from its AOF when it dies); the
supervisor stops as soon as the stop event is set, before anything else stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import uvloop
from redis.exceptions import RedisError

from chargingd.admin.methods import AdminMethods
from chargingd.admin.server import AdminServer, AdminSocketInUse, claim_socket_path
from chargingd.app.demo import create_demo_accounts
from chargingd.app.factory import Factory
from chargingd.app.invoicing import BillingBooks, build_dunning
from chargingd.app.notify import ServiceNotifier
from chargingd.app.workers import WorkerSupervisor, install_signals, remove_signals, serve_worker
from chargingd.billing.cdr import CDR_STREAM
from chargingd.billing.exporter import group_backlog
from chargingd.core.config import Config, ConfigError, load_config
from chargingd.core.exits import EXIT_UNAVAILABLE
from chargingd.core.heap import freeze_after_start
from chargingd.core.logs import setup_logging
from chargingd.core.loops import SERVICE_DOWN, Disabled, run_every
from chargingd.core.ratelog import RateLimitedLog
from chargingd.core.redisconn import EmbeddedRedis, EmbeddedSupervisor, RedisClient, redis_status
from chargingd.core.status import ComponentStats, StatusRegistry
from chargingd.fraud import FraudEvents, FraudOff
from chargingd.ledger import Ledger, LedgerError
from chargingd.monitoring import ProcessMeters
from chargingd.monitoring.monitor import Monitor
from chargingd.monitoring.web import HttpServer, build_app
from chargingd.rating.loaders import TariffLoadError
from chargingd.sessions.pricing import DEFAULT_PLAN, load_pricer
from chargingd.sessions.upgrade import upgrade_and_log

log = logging.getLogger("chargingd.server")

SHUTDOWN_GRACE_S = 5.0  # in-flight admin requests get this long to finish
# server.status's component of the embedded redis-server's supervisor (its restarts).
EMBEDDED_STATS = EmbeddedSupervisor.name


class Component(Protocol):
    """A long-running part of the daemon (admin socket, sweeper, RADIUS front, exporter)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Runtime:
    """What a component factory may use; passed in, never a module-level singleton."""

    cfg: Config
    factory: Factory
    redis: RedisClient
    redis_label: str
    ledger: Ledger
    registry: StatusRegistry
    # This process's meters (monitoring/meters.py), shared by its frontends.
    meters: ProcessMeters = field(default_factory=lambda: ProcessMeters("main"))
    # Where workers reach this daemon's Redis ("" = the configured [redis]).
    redis_url: str = ""
    # Set by build_radius (sessions.Sessions): the admin socket's session methods use it.
    sessions: Any = None
    # Set by build_billing: invoicing on the billing database (admin socket, dunning).
    billing: BillingBooks | None = None
    # Set by build_alerts (alerts.Alerts): the one alert stream of this process.
    alerts: Any = None
    # Set by build_fraud (fraud.Fraud) when [fraud] enabled: the rules of this process.
    fraud: Any = None
    # Set by build_radius / build_monitoring.
    radius: Any = None
    monitor: Monitor | None = None
    # Extra sections of server.status, computed when asked (name -> async provider).
    probes: dict[str, Callable[[], Awaitable[Any]]] = field(default_factory=dict)

    async def status(self) -> dict[str, Any]:
        """The `server.status` answer: uptime, counters, Redis INFO summary."""
        snap = self.registry.snapshot()
        snap["config"] = self.cfg.source
        snap["admin_socket"] = str(self.cfg.admin_socket)
        for name, probe in self.probes.items():
            try:
                snap[name] = await probe()
            except (RedisError, OSError) as exc:
                snap[name] = {"error": str(exc)}
        redis: dict[str, Any] = {"url": self.redis_label}
        try:
            redis.update(await redis_status(self.redis))
        except (RedisError, OSError) as exc:
            redis["error"] = str(exc)
        snap["redis"] = redis
        return snap


ComponentFactory = Callable[[Runtime], Component]


class HoldSweeper:
    """Reclaims expired holds every ledger.sweep_interval_s; errors are logged, never fatal."""

    name = "sweeper"

    def __init__(self, ledger: Ledger, interval_s: float, stats: ComponentStats) -> None:
        self.ledger = ledger
        self.interval_s = interval_s
        self.stats = stats
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = RateLimitedLog(log)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-sweeper")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, SHUTDOWN_GRACE_S)
            except TimeoutError:
                log.warning("hold sweeper did not stop in time; cancelled")

    async def sweep_once(self) -> None:
        try:
            reclaimed = await self.ledger.sweep_expired()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.inc("errors")
            self._failures.failure("hold sweep failed", exc)
            return
        self._failures.recovered("hold sweep failed")
        self.stats.inc("runs")
        self.stats.inc("holds_reclaimed", reclaimed)
        if reclaimed:
            log.info("hold sweep reclaimed %d expired holds", reclaimed)

    async def _run(self) -> None:
        await run_every(self._stop, self.interval_s, self.sweep_once, log=log, what="hold sweep")


def with_workers(rt: Runtime, name: str, local: dict[str, Any]) -> dict[str, Any]:
    """``local`` (this process's counters) plus the worker processes' ``name`` counters
    from their last reports (app/workers.py), summed key by key (nested dicts too):
    with [server] workers > 1 most calls are answered, and their fraud rules run and
    alerts sent, in a worker, which `ctl status` showed as nothing."""
    reports = rt.monitor.host.all_reports() if rt.monitor is not None else []
    for report in reports:
        if report.get("role") == "worker":
            _add_counts(local, (report.get("status") or {}).get(name) or {})
    return local


def _add_counts(total: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, dict):
            _add_counts(total.setdefault(key, {}), value)
        elif isinstance(value, int | float):
            total[key] = total.get(key, 0) + value


def build_alerts(rt: Runtime) -> Component:
    """The alert stream and its webhook sender ([alerts]); started first, stopped last,
    so every other component can raise alerts while it runs."""
    alerts = rt.factory.alerts(rt.redis)
    rt.alerts = alerts

    async def probe() -> Any:
        return with_workers(rt, "alerts", alerts.counters())

    rt.probes["alerts"] = probe
    return alerts


def build_fraud(rt: Runtime) -> Component:
    """The fraud rules ([fraud]) and the CDR-stream consumer of their event rules; off:
    nothing runs, and the consumer group of an earlier run is dropped."""
    group = rt.cfg.fraud.events_group
    fraud = rt.factory.fraud(rt.redis, rt.ledger, rt.alerts)
    if fraud is None:
        return FraudOff(rt.redis, group)
    rt.fraud = fraud

    async def probe() -> Any:
        return with_workers(rt, "fraud", fraud.status())

    rt.probes["fraud"] = probe
    return FraudEvents(fraud, rt.redis, group=group, stats=rt.registry.component("fraud-events"))


def build_sweeper(rt: Runtime) -> Component:
    stats = rt.registry.component("sweeper")
    return HoldSweeper(rt.ledger, rt.cfg.ledger.sweep_interval_s, stats)


def build_admin(rt: Runtime) -> Component:
    rating = rt.cfg.rating
    # Plan ids an account's tariff may name ("" = the default plan); unchecked when
    # this daemon rates nothing (a ledger-only daemon).
    tariffs = set(rating.plans) | ({DEFAULT_PLAN} if rating.default_plan else set())
    methods = AdminMethods(
        rt.ledger,
        rt.status,
        sessions=rt.sessions,
        tariffs=frozenset(tariffs) or None,
        open_books=rt.billing.opener("admin") if rt.billing else None,
        alerts=rt.alerts,
        fraud=rt.fraud,
        stats=rt.monitor.stats if rt.monitor is not None else None,
        # The plans' currencies, known when this daemon rates calls (RADIUS on).
        plan_currencies=(
            {pid: plan.currency for pid, plan in rt.sessions.pricer.plans.items()}
            if rt.sessions is not None
            else None
        ),
    )
    return AdminServer(
        methods,
        rt.cfg.admin_socket,
        mode=int(rt.cfg.admin.socket_mode, 8),
        stats=rt.registry.component("admin"),
        grace_s=SHUTDOWN_GRACE_S,
    )


def build_exporter(rt: Runtime) -> Component:
    """The CDR exporter (cdr:stream -> PostgreSQL), unless [export] run_in_serve = false:
    `chargingd export` drains the stream elsewhere, and server.status shows its
    group's backlog, read from Redis (``export_backlog``), so its lag stays visible."""
    if not rt.cfg.export.run_in_serve:
        redis, group = rt.redis, rt.cfg.export.group
        rt.probes["export_backlog"] = lambda: export_backlog(redis, group)
        return Disabled("exporter", "[export] run_in_serve = false")
    return rt.factory.exporter(rt.redis, stats=rt.registry.component("exporter"))


async def export_backlog(redis: RedisClient, group: str) -> dict[str, Any]:
    """The exporter group's backlog on cdr:stream, whoever runs the exporter."""
    found = await group_backlog(redis, CDR_STREAM, group, time.time())
    if found is None:
        return {"group": group, "state": "no CDR stream or exporter group yet"}
    return {"group": group, "runs": "outside serve (chargingd export)", **found}


def build_radius(rt: Runtime) -> Component:
    """RADIUS frontend + sessions (cutter, reaper), unless [radius] enabled = false."""
    if not rt.cfg.radius.enabled:
        return Disabled("radius", "[radius] enabled = false")
    component = rt.factory.radius(
        rt.redis, rt.ledger, role="main", meters=rt.meters, fraud=rt.fraud
    )
    rt.sessions = component.sessions
    rt.radius = component

    async def probe() -> Any:
        # This host's processes (main first), from their reports (monitoring/host.py).
        reports = rt.monitor.host.all_reports() if rt.monitor is not None else []
        processes = [r["status"] | {"at_ms": r["at_ms"]} for r in reports if r.get("status")]
        return {"local": component.counters(), "processes": processes}

    rt.probes["radius"] = probe
    return component


def build_diameter(rt: Runtime) -> Component:
    """Diameter Credit-Control frontend, when [diameter] enabled = true; it shares the
    RADIUS component's Sessions (built before it), else builds its own."""
    if not rt.cfg.diameter.enabled:
        return Disabled("diameter", "[diameter] enabled = false")
    component = rt.factory.diameter(
        rt.redis, rt.ledger, sessions=rt.sessions, meters=rt.meters, fraud=rt.fraud
    )
    rt.sessions = component.sessions

    async def probe() -> Any:
        return component.counters()

    rt.probes["diameter"] = probe
    return component


def build_monitoring(rt: Runtime) -> Component:
    """Host sums of the processes' counters, the KPI feeder and the cluster sampler."""

    def status() -> dict[str, Any]:
        return rt.radius.counters() if rt.radius is not None else {}

    monitor = rt.factory.monitor(rt.redis, rt.ledger, rt.meters, status=status, alerts=rt.alerts)
    if monitor.enabled and rt.sessions is not None:
        # the CDRs this process writes are counted without decoding them again
        rt.sessions.store.cdr_written = monitor.feeder.remember
    exporter = rt.registry.component("exporter")
    rt.meters.add_source(lambda: exporter_samples(exporter.counters))
    embedded = rt.registry.components.get(EMBEDDED_STATS)
    if embedded is not None:  # the embedded redis-server's supervisor runs here
        rt.meters.add_source(lambda: embedded_redis_samples(embedded.counters))
    rt.monitor = monitor
    return monitor


def exporter_samples(counters: dict[str, int]) -> list[tuple[str, tuple[str, ...], float]]:
    """The exporter's status counters as metric samples."""
    results = {"exported": "exported", "duplicates": "duplicate", "dead_letters": "dead_letter",
               "claimed": "claimed"}  # fmt: skip
    out: list[tuple[str, tuple[str, ...], float]] = [
        ("chargingd_exporter_cdrs_total", (label,), counters.get(name, 0))
        for name, label in results.items()
    ]
    out.append(("chargingd_exporter_errors_total", (), counters.get("errors", 0)))
    return out


def embedded_redis_samples(counters: dict[str, int]) -> list[tuple[str, tuple[str, ...], float]]:
    """The embedded redis-server supervisor's restarts as a metric sample."""
    return [("chargingd_redis_restarts_total", (), counters.get("restarts", 0))]


def build_http(rt: Runtime) -> Component:
    """/metrics and the dashboard ([http]), when enabled."""
    http = rt.cfg.http
    if not http.enabled or rt.monitor is None:
        return Disabled("http", "[http] enabled = false")
    monitor = rt.monitor
    stop = asyncio.Event()
    app = build_app(
        metrics=monitor.metrics_text,
        summary=monitor.summary,
        token=http.token,
        dashboard=http.dashboard,
        stop=stop,
    )
    server = HttpServer(app, http.bind, http.port, dashboard=http.dashboard)

    async def probe() -> Any:
        return {"bind": http.bind, "port": server.port, "dashboard": http.dashboard}

    rt.probes["http"] = probe
    return HttpComponent(server, stop, token=http.token)


class HttpComponent:
    """The HTTP server; on stop, ends the dashboard's event streams first."""

    name = "http"

    def __init__(self, server: HttpServer, stop: asyncio.Event, *, token: str) -> None:
        self.server = server
        self.stop_event = stop
        self.token = token  # what the guard of ``server``'s application checks

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        self.stop_event.set()
        await self.server.stop()


def build_workers(rt: Runtime) -> Component:
    """The N-1 extra RADIUS worker processes of [server] workers = N."""
    extra = rt.cfg.server.workers - 1
    if extra < 1 or not rt.cfg.radius.enabled:
        return Disabled("workers", "[server] workers = 1 or RADIUS off")
    source = rt.cfg.source if rt.cfg.source != "<defaults>" else None
    stats = rt.registry.component("workers")
    host = rt.monitor.host if rt.monitor is not None else None
    radius = rt.cfg.radius
    spread_over = rt.cfg.server.workers if radius.spread != "source" else 1
    supervisor = WorkerSupervisor(
        source, rt.redis_url, extra, stats, host, spread_over, spread_by=radius.spread
    )

    async def probe() -> Any:
        return {"pids": supervisor.pids()}

    rt.probes["workers"] = probe
    return supervisor


def build_billing(rt: Runtime) -> Component:
    """The billing database for the admin socket and dunning (opened on first use)."""
    rt.billing = BillingBooks(rt.factory, rt.ledger)
    return rt.billing


def build_dunner(rt: Runtime) -> Component:
    """Dunning: suspends postpaid accounts with overdue invoices, cutting their calls."""
    assert rt.billing is not None, "build_billing runs first"
    cut = rt.sessions.cut_account if rt.sessions is not None else None
    return build_dunning(rt.cfg, rt.billing, cut, rt.registry.component("dunning"))


# Started in this order, stopped in reverse. The admin socket comes last so that
# "ready" means every component answers, and it stops first on shutdown; RADIUS
# stops after it (answering queued packets) and before Redis closes.
COMPONENTS: list[ComponentFactory] = [
    build_alerts,
    build_fraud,
    build_sweeper,
    build_exporter,
    build_radius,
    build_diameter,
    build_monitoring,
    build_workers,
    build_billing,
    build_dunner,
    build_http,
    build_admin,
]


class Daemon:
    """One chargingd process: owns Redis, the ledger and the components."""

    def __init__(
        self,
        cfg: Config,
        factories: Sequence[ComponentFactory] | None = None,
        notifier: ServiceNotifier | None = None,
    ) -> None:
        self.cfg = cfg
        # systemd's Type=notify (app/notify.py); none outside a service manager
        self.notifier = notifier or ServiceNotifier(None)
        self.factory = Factory(cfg)
        self.factories = list(COMPONENTS if factories is None else factories)
        self.registry = StatusRegistry()
        self.components: list[Component] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until `stop` is set, then shut down in order."""
        # Before touching the data dir: refuse if a live daemon owns the admin socket.
        claim_socket_path(self.cfg.admin_socket)
        async with contextlib.AsyncExitStack() as stack:
            redis = await self.factory.open_redis(stack, owner=True)
            supervisor = self._supervise(redis.embedded)
            if supervisor is not None:
                # Unwound before the server stops: no restart of a server being stopped.
                stack.push_async_callback(supervisor.stop)
            # The record layout: the deployment's choice, stored by this main process
            # (its workers and the tools only read it), before anything builds Sessions.
            await self.factory.agree_records(redis.client, store=True)
            ledger = await self.factory.open_ledger(redis.client)
            self.cfg = self.factory.cfg
            # Calls live across an upgrade from the hash session records (before
            # 6db408c): converted once, here, before anything serves them.
            await upgrade_and_log(redis.client, self.cfg.sessions.lastseen_shards)
            if self.cfg.demo.accounts:
                await create_demo_accounts(ledger)
            rt = Runtime(
                self.cfg,
                self.factory,
                redis.client,
                redis.label,
                ledger,
                self.registry,
                redis_url=redis.url,
            )
            stack.push_async_callback(self._stop_components)
            for factory in self.factories:
                component = factory(rt)
                await component.start()
                self.components.append(component)
            frozen = freeze_after_start()
            log.info("chargingd ready admin=%s redis=%s", self.cfg.admin_socket, redis.label)
            log.debug("%d objects alive after start-up frozen out of the collector", frozen)
            self.notifier.ready(f"ready: admin {self.cfg.admin_socket}, redis {redis.label}")
            stack.push_async_callback(self.notifier.close)
            await stop.wait()
            log.info("chargingd stopping")
            self.notifier.stopping()
            if supervisor is not None:
                # From here on a server that exits is not started again: the daemon is
                # stopping (a service manager may have sent redis-server SIGTERM too).
                await supervisor.stop()
        log.info("chargingd stopped")

    def _supervise(self, embedded: EmbeddedRedis | None) -> EmbeddedSupervisor | None:
        """The restarter of the embedded redis-server this process started (none for a
        configured Redis: chargingd never restarts a Redis it did not start)."""
        if embedded is None:
            return None
        supervisor = EmbeddedSupervisor(embedded, self.registry.component(EMBEDDED_STATS))
        supervisor.start()
        return supervisor

    async def _stop_components(self) -> None:
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("component %s failed to stop cleanly", component.name)
        self.components.clear()


async def serve(cfg: Config) -> None:
    """Run the daemon until SIGTERM or SIGINT (SIGHUP is logged and ignored)."""
    # Before anything starts a child (the embedded redis-server, the workers): the
    # service manager's variables are the main process's alone.
    notifier = ServiceNotifier.from_environment()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    install_signals(loop, stop)
    try:
        await Daemon(cfg, notifier=notifier).run(stop)
    finally:
        remove_signals(loop)


def worker_config(cfg: Config, spread_over: int | None, spread_by: str | None = None) -> Config:
    """A worker's config: the file's, with the ports' spreading the main process chose
    (`--spread-over`, `--spread-by`). The file may have been edited since the main
    process started; a restarted worker whose program differed from its group's would
    send retransmissions to a process that never saw the original."""
    if spread_over is None:
        return cfg
    if spread_over > 1:
        radius = replace(cfg.radius, spread=spread_by or "request")
        server = replace(cfg.server, workers=spread_over)
        return replace(cfg, radius=radius, server=server)
    return replace(cfg, radius=replace(cfg.radius, spread="source"))


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: built-in defaults)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the config and every tariff plan it names as serve would, print a "
        "summary and exit: 0 OK, 2 bad (nothing is started, no Redis is touched)",
    )
    parser.add_argument(
        "--report-fd",
        metavar="FD",
        type=int,
        help="internal: a worker's pipe to the main process (counters, readiness)",
    )
    parser.add_argument(
        "--worker-of",
        metavar="PID",
        type=int,
        help="internal: run as a RADIUS worker of the main process PID "
        "(Redis URL from CHARGINGD_REDIS_URL)",
    )
    parser.add_argument(
        "--spread-over",
        metavar="N",
        type=int,
        help="internal: a worker's share of the RADIUS ports as the main process "
        "started them (N processes by Request Authenticator; 1: the kernel's hash)",
    )
    parser.add_argument(
        "--spread-by",
        choices=("request", "user", "ani"),
        help="internal: with --spread-over N > 1, what picks the process (the main "
        "process's [radius] spread; default request)",
    )


def log_config_warnings(cfg: Config) -> None:
    """What the loader accepted but ignores (a retired key), as startup WARNINGs."""
    for warning in cfg.warnings:
        log.warning("config: %s", warning)


def check(cfg: Config, path: str | None) -> int:
    """`serve --check`: the tariff plans loaded as serve loads them, a summary of what
    serve would start; 0, or 2 when a plan cannot load (the config loaded already).
    Run it before a restart: a daemon that cannot start takes no calls."""
    source = path or "(built-in defaults)"
    try:
        pricer = load_pricer(cfg.rating)
    except TariffLoadError as exc:
        print(f"chargingd serve --check: {source}: {exc}", file=sys.stderr)
        return 2
    for warning in cfg.warnings:
        print(f"warning: {warning}")
    redis = cfg.redis
    if redis.cluster_nodes:
        store = f"Redis Cluster, {len(redis.cluster_nodes)} seed nodes"
    elif redis.url:
        store = "Redis at the configured url"
    else:
        store = f"embedded redis-server under {cfg.server.data_dir}"
    rad = cfg.radius
    radius = (
        f"{rad.bind}:{rad.auth_port} (auth), :{rad.acct_port} (accounting), "
        f"{len(rad.clients)} clients"
        if rad.enabled
        else "off"
    )
    if rad.enabled and not rad.clients:
        radius += " (no [[radius.clients]]: every packet would be dropped)"
    dia = cfg.diameter
    tariffs = ", ".join(
        f"{pid} ({plan.id}, {plan.currency or 'no currency'})"
        for pid, plan in sorted(pricer.plans.items())
    )
    print(f"{source}: configuration OK")
    print(f"  redis:    {store}")
    print(f"  radius:   {radius}")
    print(f"  diameter: {f'{dia.bind}:{dia.port}' if dia.enabled else 'off'}")
    print(f"  tariffs:  {tariffs or 'none (every call would be refused: no plan to rate it)'}")
    print(f"  fraud:    {'on' if cfg.fraud.enabled else 'off'}")
    print(f"  workers:  {cfg.server.workers}")
    return 0


def run(name: str, args: argparse.Namespace) -> int:
    """Entry point of `chargingd serve`: 0 after a clean stop, 1 on failure, 2 bad config,
    69 Redis unreachable at start (the same code as every command's)."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"chargingd serve: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return check(cfg, args.config)
    setup_logging(cfg.server.log_level)
    if not args.worker_of:  # once, not by each worker that loads the file again
        log_config_warnings(cfg)
    try:
        if args.worker_of:
            cfg = worker_config(cfg, args.spread_over, args.spread_by)
            uvloop.run(serve_worker(cfg, args.worker_of, args.report_fd))
        else:
            uvloop.run(serve(cfg))
    except SERVICE_DOWN as exc:
        log.error("chargingd cannot run: %s", exc)
        return EXIT_UNAVAILABLE
    except (
        AdminSocketInUse,
        LedgerError,
        RedisError,
        OSError,
        RuntimeError,
        TariffLoadError,
    ) as exc:
        log.error("chargingd cannot run: %s", exc)
        return 1
    return 0
