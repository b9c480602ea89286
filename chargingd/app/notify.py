"""The service manager's readiness protocol (systemd's sd_notify), without libsystemd.

Under ``Type=notify`` (contrib/systemd/chargingd.service) systemd sets
``NOTIFY_SOCKET`` and waits for ``READY=1`` before it calls the service started: units
ordered after chargingd (a SIP proxy, a monitoring check) start only once every
component answers, not when the process exists. ``STOPPING=1`` says a stop began;
``STATUS=...`` is the line ``systemctl status`` shows. With ``WatchdogSec=`` systemd
also sets ``WATCHDOG_USEC`` and restarts the service if ``WATCHDOG=1`` stops coming:
the pings are sent from the event loop, so a loop that is stuck (a blocking call, a
busy spin) stops them and the daemon is restarted; its calls are in Redis and go on.

The variables are taken out of the environment when read (as sd_notify's
``unset_environment``): the embedded redis-server, the RADIUS workers and any other
child must not speak for the main process. Without ``NOTIFY_SOCKET`` (``make run``, a
container, a shell) every method does nothing. A message that cannot be sent is
logged once and never stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

log = logging.getLogger(__name__)

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class ServiceNotifier:
    """sd_notify for the main process (``from_environment`` once, at start-up)."""

    def __init__(self, address: str | None, watchdog_s: float | None = None) -> None:
        self.address = address
        # Pinged at half the manager's interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_s = watchdog_s
        self._task: asyncio.Task[None] | None = None
        self._failed = False

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> ServiceNotifier:
        env = os.environ if environ is None else environ
        values = {name: env.pop(name, "") for name in _VARIABLES}
        address = values["NOTIFY_SOCKET"] or None
        watchdog_s = None
        usec, pid = values["WATCHDOG_USEC"], values["WATCHDOG_PID"]
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(address, watchdog_s)

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when there is no manager or it
        could not be sent."""
        if not self.address:
            return False
        path = self.address
        if path.startswith("@"):  # Linux abstract namespace
            path = "\0" + path[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.connect(path)
                s.sendall("\n".join(fields).encode())
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> None:
        """Every component answers: READY=1, and the watchdog's pings start."""
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        if self.watchdog_s is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pings())

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _pings(self) -> None:
        assert self.watchdog_s is not None
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)
