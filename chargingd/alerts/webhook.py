"""Alert webhook: an HTTP POST of JSON per new incident, retried with back-off.

``submit`` never waits: it puts the body on a bounded queue (a full queue drops the
alert, counted and logged) and one task delivers the queue in order. A delivery is
retried on a connection error, a timeout, 429 or 5xx, with exponential back-off and
jitter, ``attempts`` times in all; another 4xx is final (the receiver refused it).
Delivery is at least once: a receiver that answered too late sees the same
``X-Chargingd-Delivery`` id again and should drop the copy. The queue lives in
memory: alerts queued when the daemon stops are lost from the webhook (never from
the Redis stream, where every incident is recorded first).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp

from chargingd import __version__
from chargingd.core.ratelog import RateLimitedLog

log = logging.getLogger("chargingd.alerts")

OK, RETRY, FINAL = "ok", "retry", "final"
_FULL = "alert webhook queue full: alerts dropped from the webhook"


def redact_url(url: str) -> str:
    """scheme://host:port only: a webhook URL may carry a token in its path or query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def signature(secret: str, body: bytes) -> str:
    """The X-Chargingd-Signature header: sha256=HMAC-SHA256(secret, body) in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """A bounded queue of alert bodies and the one task that POSTs them."""

    name = "alerts-webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str = "",
        timeout_s: float = 5.0,
        attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        queue_size: int = 1000,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._full = RateLimitedLog(log)
        self.sent = 0
        self.failed = 0  # given up after the last attempt, or refused (4xx)
        self.dropped = 0  # the queue was full (or the daemon stopped first)
        self.retries = 0

    def submit(self, delivery_id: str, payload: dict[str, Any]) -> bool:
        """Queue one alert for delivery; False (dropped, counted) when the queue is full."""
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        try:
            self._queue.put_nowait((delivery_id, body))
        except asyncio.QueueFull:
            self.dropped += 1
            self._full.failure(_FULL, RuntimeError(f"{self._queue.maxsize} alerts queued"))
            return False
        return True

    def counters(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "retries": self.retries,
            "queued": self._queue.qsize(),
        }

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._task = asyncio.create_task(self._run(), name="alerts-webhook")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Deliver what is queued within ``grace_s``; the rest is dropped (counted)."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), grace_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.dropped += self._queue.qsize()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            delivery_id, body = await self._queue.get()
            try:
                await self._deliver(delivery_id, body)
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: one bad delivery never stops the sender
                self.failed += 1
                log.exception("alert webhook delivery %s failed", delivery_id)
            finally:
                self._queue.task_done()
            if self._full.failing(_FULL) and self._queue.qsize() < self._queue.maxsize // 2:
                self._full.recovered(_FULL)

    async def _deliver(self, delivery_id: str, body: bytes) -> None:
        for attempt in range(1, self.attempts + 1):
            outcome, what, asked_s = await self._post(delivery_id, body)
            if outcome == OK:
                self.sent += 1
                return
            if outcome == FINAL or attempt == self.attempts:
                self.failed += 1
                log.error(
                    "alert webhook %s gave up on %s after %d attempts: %s",
                    redact_url(self.url),
                    delivery_id,
                    attempt,
                    what,
                )
                return
            self.retries += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            delay *= 0.5 + self.jitter() / 2  # jitter: receivers back up together otherwise
            # A receiver that rate-limits (429/503 with Retry-After: Slack, PagerDuty)
            # is asked again no sooner than it said, up to webhook_max_backoff_s.
            delay = max(delay, min(asked_s, self.max_backoff_s))
            log.warning(
                "alert webhook %s: %s; retry %d in %.1fs",
                redact_url(self.url),
                what,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    async def _post(self, delivery_id: str, body: bytes) -> tuple[str, str, float]:
        """(outcome, what went wrong, the seconds the receiver's Retry-After asks)."""
        assert self._session is not None, "start() first"
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"chargingd/{__version__}",
            "X-Chargingd-Delivery": delivery_id,
        }
        if self.secret:
            headers["X-Chargingd-Signature"] = signature(self.secret, body)
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
                asked_s = retry_after_s(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return RETRY, f"{type(exc).__name__}: {exc}", 0.0
        if 200 <= status < 300:
            return OK, "", 0.0
        if status == 429 or status >= 500:
            said = f" (Retry-After {asked_s:g} s)" if asked_s else ""
            return RETRY, f"HTTP {status}{said}", asked_s
        return FINAL, f"HTTP {status}", 0.0


def retry_after_s(value: str | None) -> float:
    """The seconds of a Retry-After header (RFC 9110 10.2.3: delay-seconds, or an
    HTTP-date); 0 when absent, unreadable or past."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        return 0.0
    return max(0.0, when.timestamp() - time.time())
