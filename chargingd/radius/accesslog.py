"""The optional RADIUS access log: one line per answered request, written in batches.

A synchronous log line per request costs about as much as the rest of a request's
Python work ([radius] access_log is empty by default). When a path is set, requests
append a tuple to a buffer; the buffer is formatted and written with one write()
every `flush_s` or once it holds `max_lines`. Lines carry no secrets and no packet
contents: time, port, client, session id, user, outcome, time in the daemon.

    2026-12-05T02:43:11.250Z auth cisco-gw sid=CONF-1 user=alice accept 1.9ms
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("chargingd.aaa")

Entry = tuple[float, str, str, str, str, str, float]


class AccessLog:
    """Buffered access log lines, appended to `path` (created with mode 0640)."""

    def __init__(
        self,
        path: Path,
        *,
        flush_s: float = 1.0,
        max_lines: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.flush_s = flush_s
        self.max_lines = max_lines
        self._clock = clock
        self._entries: list[Entry] = []
        self._fd = -1
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failures = 0

    def open(self) -> None:
        """Open the file (its directory is created); OSError when it cannot be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def add(
        self, port: str, client: str, session_id: str, user: str, outcome: str, elapsed_s: float
    ) -> None:
        """Record one answered request (cheap: formatting waits for the flush)."""
        self._entries.append(
            (self._clock(), port, client, session_id, user, outcome, elapsed_s * 1000)
        )
        if len(self._entries) >= self.max_lines:
            self.flush()

    def flush(self) -> None:
        """Write every buffered line with one write(); a failure is logged, not raised."""
        entries, self._entries = self._entries, []
        if not entries or self._fd < 0:
            return
        data = "".join(_line(e) for e in entries).encode("utf-8", "replace")
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self.failures += 1
            log.warning("access log %s: %d lines lost: %s", self.path, len(entries), exc)
            return
        self.written += len(entries)

    def start(self) -> None:
        """Open the file and flush every `flush_s` in the background."""
        self.open()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="access-log")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            self.flush()

    async def close(self) -> None:
        """Stop the background flushes, write what is left, close the file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _line(entry: Entry) -> str:
    at, port, client, session_id, user, outcome, elapsed_ms = entry
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return (
        f"{stamp.replace('+00:00', 'Z')} {port} {client} sid={_safe(session_id)} "
        f"user={_safe(user)} {outcome} {elapsed_ms:.1f}ms\n"
    )


def _safe(text: str) -> str:
    """One token: no spaces or control characters (a gateway chooses these strings)."""
    if text.isprintable() and " " not in text:
        return text or "-"
    return "".join(c if c.isprintable() and c != " " else "_" for c in text) or "-"
