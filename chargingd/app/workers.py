"""Worker processes: `[server] workers = N` serves RADIUS from N processes.

The main process owns Redis (embedded or not), the admin socket, the sweeper and
the exporter, and runs its own RADIUS frontend; it starts N-1 workers with
``python -m chargingd serve --config PATH --worker-of MAIN_PID`` (a fresh
interpreter, never a fork of a running event loop). A worker runs only RADIUS +
sessions against the main process's Redis (URL passed in CHARGINGD_REDIS_URL, so a
password never shows in `ps`), with its own fraud rules and alert sender when
[fraud] is on (their state and the alerts' incidents are in Redis, shared). All call
state is in Redis, so the kernel may hand any packet to any process (SO_REUSEPORT). A
worker that dies is restarted with exponential back-off; SIGTERM to the main process
stops them all. A worker whose main process has gone stops by itself.

Each worker gets a pipe to the main process (``--report-fd``): every
``[monitoring] report_interval_s`` it writes its counters and status there, and a
first report once its RADIUS ports are bound (that is how ``start`` knows it
serves). The main process sums them (monitoring/host.py) for /metrics and
``server.status``; the pipe's end (EOF) retires a dead worker's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from typing import Any

from chargingd.alerts import Alerts
from chargingd.app.factory import Factory
from chargingd.app.radius import RadiusComponent
from chargingd.core.config import REDIS_URL_ENV, Config
from chargingd.core.heap import freeze_after_start
from chargingd.core.loops import run_every
from chargingd.core.redisconn import wait_ready
from chargingd.core.status import ComponentStats
from chargingd.fraud import Fraud
from chargingd.monitoring import ProcessMeters, ProcessReporter, ReportSender, receive_reports
from chargingd.monitoring.host import HostView

log = logging.getLogger("chargingd.workers")

RESTART_BACKOFF_S = 0.5  # first restart delay, doubled per quick death
RESTART_BACKOFF_MAX_S = 30.0
HEALTHY_AFTER_S = 30.0  # a worker that lived this long resets the back-off
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL after this long
PARENT_CHECK_S = 1.0
READY_TIMEOUT_S = 30.0  # start() waits this long for the workers to serve


class WorkerSupervisor:
    """Starts, restarts and stops the N-1 extra worker processes."""

    name = "workers"

    def __init__(
        self,
        config_path: str | None,
        redis_url: str,
        count: int,
        stats: ComponentStats,
        host: HostView | None = None,
        spread_over: int = 1,
        spread_by: str = "request",
    ) -> None:
        self.config_path = config_path
        # The main process's [radius] spread divisor (radius/ports.py), passed on the
        # command line: a worker restarted after the file's `workers` or `spread` was
        # edited must attach the group's program, not one of the new values.
        self.spread_over = spread_over
        self.spread_by = spread_by if spread_by != "source" else "request"
        self.host = host or HostView(dict)  # the workers' reports land here
        self.redis_url = redis_url
        self.count = count
        self.stats = stats
        self.procs: dict[int, asyncio.subprocess.Process] = {}  # slot -> process
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._readers: set[asyncio.Task[None]] = set()

    def argv(self, report_fd: int | None = None) -> list[str]:
        """The worker's command line."""
        cmd = [sys.executable, "-m", "chargingd", "serve"]
        if self.config_path:
            cmd += ["--config", self.config_path]
        if report_fd is not None:
            cmd += ["--report-fd", str(report_fd)]
        cmd += ["--worker-of", str(os.getpid()), "--spread-over", str(self.spread_over)]
        return [*cmd, "--spread-by", self.spread_by]

    async def start(self) -> None:
        """Spawn every worker and wait (bounded) until they serve; each slot gets a
        task that restarts its worker when it dies."""
        for slot in range(self.count):
            await self._spawn(slot)
        await self._wait_serving(READY_TIMEOUT_S)
        for slot in range(self.count):
            self._tasks.append(asyncio.create_task(self._watch(slot), name=f"worker-{slot}"))
        self.stats.set("configured", self.count)

    async def _wait_serving(self, timeout_s: float) -> None:
        """Until every worker reported that it serves (it has bound the ports)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.returncode is not None for p in self.procs.values()):
                log.error("a worker exited while starting (see its log lines above)")
                return
            if all(self.host.serving(p.pid) for p in self.procs.values()):
                return
            await asyncio.sleep(0.05)
        log.warning("workers not serving after %.0f s; going on", timeout_s)

    async def _spawn(self, slot: int) -> None:
        env = dict(os.environ)
        if self.redis_url:
            env[REDIS_URL_ENV] = self.redis_url
        read_fd, write_fd = os.pipe()
        # Own session: a terminal's Ctrl-C reaches only the main process, which then
        # stops the workers itself (no restart race); stdout/stderr are inherited.
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(write_fd),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the worker holds it now: its exit is our EOF
        self.procs[slot] = proc
        pid = proc.pid
        reader = asyncio.create_task(
            receive_reports(
                read_fd, lambda doc: self.host.update(pid, doc), lambda: self.host.retire(pid)
            ),
            name=f"worker-reports-{pid}",
        )
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        self.stats.inc("started")
        log.info("worker %d started pid=%d", slot, proc.pid)

    async def _watch(self, slot: int) -> None:
        backoff_s = RESTART_BACKOFF_S
        while True:
            proc = self.procs[slot]
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            self.stats.inc("deaths")
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                backoff_s = RESTART_BACKOFF_S
            log.error(
                "worker %d pid=%d exited with %s; restarting in %.1f s",
                slot,
                proc.pid,
                code,
                backoff_s,
            )
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RESTART_BACKOFF_MAX_S)
            if self._stopping:
                return
            try:
                await self._spawn(slot)
            except OSError as exc:
                log.error("worker %d could not be started: %s", slot, exc)
                continue
            self.stats.inc("restarts")

    def pids(self) -> list[int]:
        """Pids of the workers running now."""
        return [p.pid for p in self.procs.values() if p.returncode is None]

    async def stop(self) -> None:
        """SIGTERM every worker, wait, SIGKILL the ones still running after the timeout."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = [p for p in self.procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not running:
            return
        _, late = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in running], timeout=STOP_TIMEOUT_S
        )
        if late:
            for proc in running:
                if proc.returncode is None:
                    log.warning("worker pid=%d did not stop in time; killed", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        # The pipes reach EOF once the workers are gone: their last reports are kept.
        if self._readers:
            await asyncio.wait(set(self._readers), timeout=STOP_TIMEOUT_S)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop the process cleanly; SIGHUP is logged and ignored.

    chargingd has no configuration reload. SIGHUP's default action would end the
    process on the spot: no clean stop, the embedded redis-server and PostgreSQL left
    running, live calls unanswered until the next start. An operator used to `kill
    -HUP` reloading a daemon is told to restart instead."""
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _hangup)


def remove_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (*STOP_SIGNALS, signal.SIGHUP):
        loop.remove_signal_handler(sig)


def _hangup() -> None:
    logging.getLogger("chargingd.server").warning(
        "SIGHUP ignored: chargingd does not reload its configuration; restart it "
        "(SIGTERM, then serve again) to apply a changed file"
    )


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    """Stop when the main process is gone (it cannot SIGTERM us if it was killed)."""

    async def check() -> None:
        if os.getppid() != parent_pid:
            log.error("main process %d is gone; worker stopping", parent_pid)
            stop.set()

    await run_every(stop, PARENT_CHECK_S, check, log=log, what="parent watch")


async def serve_worker(cfg: Config, parent_pid: int, report_fd: int | None = None) -> None:
    """A worker process: RADIUS + sessions against the main process's Redis; its
    counters go to the main process through ``report_fd``."""
    stop = asyncio.Event()
    install_signals(asyncio.get_running_loop(), stop)
    factory = Factory(cfg)
    client = factory.redis_client()
    sender = ReportSender(report_fd) if report_fd is not None else None
    try:
        await wait_ready(client, 10.0)
        ledger = await factory.open_ledger(client)
        meters = ProcessMeters("worker")
        alerts = factory.alerts(client) if cfg.fraud.enabled else None
        fraud = factory.fraud(client, ledger, alerts)
        if fraud is not None:
            await fraud.load_scripts()
        component = factory.radius(client, ledger, role="worker", meters=meters, fraud=fraud)
        if cfg.diameter.enabled:
            # The Diameter listener is the main process's: cuts of its sessions that
            # this worker's cutter claims are relayed there (diameter/relay.py).
            names = {p.name for p in cfg.diameter.peers}
            component.sessions.attach_call_cutter(
                factory.diameter_relay(client), owns=lambda ref: ref.client in names
            )
            component.sessions.name_source(names, "diameter")
        reporter = ProcessReporter(
            meters,
            status=functools.partial(_worker_status, component, fraud, alerts),
            store=factory.kpi_store(client) if cfg.monitoring.enabled else None,
            sink=sender.send if sender is not None else None,
            interval_s=cfg.monitoring.report_interval_s,
        )
        if sender is not None:
            await sender.open()
        if alerts is not None:
            await alerts.start()
        await component.start()
        freeze_after_start()
        reporter.serving = True
        reporter.send()  # at once: the main process waits for it to call us ready
        log.info("chargingd worker ready pid=%d main=%d", os.getpid(), parent_pid)
        report_task = asyncio.create_task(reporter.run(stop), name="metrics-report")
        try:
            await _watch_parent(parent_pid, stop)
            await stop.wait()
        finally:
            await component.stop()
            if alerts is not None:
                await alerts.stop()
            await report_task
            await _last_report(reporter)
            log.info("chargingd worker stopped pid=%d", os.getpid())
    finally:
        if sender is not None:
            sender.close()
        await client.aclose()


def _worker_status(
    component: RadiusComponent, fraud: Fraud | None, alerts: Alerts | None
) -> dict[str, Any]:
    """What the worker reports to the main process: its RADIUS counters and, with
    [fraud] on, its rules' and alert sender's counters (the main process's `fraud` and
    `alerts` status sum them: the calls a worker answers are checked, refused and
    blocked there, and their alerts raised and POSTed there)."""
    status: dict[str, Any] = component.counters()
    if fraud is not None:
        status["fraud"] = fraud.status()
    if alerts is not None:
        status["alerts"] = alerts.counters()
    return status


async def _last_report(reporter: ProcessReporter) -> None:
    """The final counters (requests answered during the stop grace included)."""
    reporter.send()
    try:
        await reporter.flush_kpis()
    except Exception as exc:  # Redis gone at shutdown: said, not fatal
        log.warning("last KPI counts not written: %s", exc)
