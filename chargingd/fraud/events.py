"""The event rules' feed: the CDR stream, read through a consumer group of its own.

Every daemon that runs it takes a share of the stream (one consumer each); a CDR is
counted once (the event script remembers the ids it counted, so a re-delivery after
a crash counts nothing twice). Entries a dead consumer left pending are claimed after
``claim_idle_ms``. The exporter trims the stream only below what every group has
acknowledged, so this group keeps up or holds the trim back: when [fraud] is turned
off, ``drop_group`` removes the group so that it no longer does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from redis.exceptions import ResponseError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.loops import run_every
from chargingd.core.redisconn import block_below_timeout
from chargingd.core.status import ComponentStats
from chargingd.fraud.engine import Fraud
from chargingd.fraud.upgrade import upgrade_fraud_keys

log = logging.getLogger("chargingd.fraud")

BATCH = 200
IN_FLIGHT = 32  # CDRs of a batch sent at once (queued in stream order: one pipeline)
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000
CLAIM_INTERVAL_S = 10.0
RETRY_S = 1.0

Entry = tuple[bytes, dict[bytes, bytes]]


class FraudEvents:
    """Reads CDRs for the event rules (spend, short calls, failed attempts, ASR) and
    ends the calls the concurrency rule counts as live."""

    name = "fraud-events"

    def __init__(
        self,
        fraud: Fraud,
        redis: Any,
        *,
        group: str,
        stats: ComponentStats,
        consumer: str = "",
        stream: str = CDR_STREAM,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self.fraud = fraud
        self.redis = redis
        self.group = group
        self.stream = stream
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self.block_ms = block_ms
        self.stats = stats
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._own_pending = True  # first read our own unacknowledged entries (id 0)
        self._last_claim_s = 0.0

    async def start(self) -> None:
        await self.fraud.load_scripts()
        # the keys of the version before the one value (live calls, deny flags)
        await upgrade_fraud_keys(self.redis, self.fraud.clock_ms(), self.fraud.value_ttl_ms)
        await self.ensure_group()
        self._task = asyncio.create_task(self._run(), name="fraud-events")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.block_ms / 1000 + 5)
            except TimeoutError:
                log.warning("fraud events did not stop in time; cancelled")

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's end (CDRs before fraud was on are not
        counted)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(self) -> None:
        await run_every(
            self._stop, 0, self.step, log=log, what="fraud events", retry_s=RETRY_S, retry_max_s=30
        )

    async def step(self, *, block: bool = True) -> int:
        """Read and count one batch (own pending first, then claims, then new)."""
        if self._own_pending:
            entries = await self._read("0", block_ms=None)
            if entries:
                return await self._count(entries)
            self._own_pending = False
        now = time.monotonic()
        if now - self._last_claim_s >= CLAIM_INTERVAL_S:
            self._last_claim_s = now
            claimed = await self._claim()
            if claimed:
                return claimed
        entries = await self._read(">", block_ms=self.block_ms if block else None)
        return await self._count(entries)

    async def _read(self, from_id: str, *, block_ms: int | None) -> list[Entry]:
        if block_ms is not None:  # under the socket timeout: a quiet stream is no error
            block_ms = block_below_timeout(self.redis, block_ms)
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: from_id}, count=BATCH, block=block_ms
        )
        if not reply:
            return []
        entries: list[Entry] = reply[0][1]
        return entries

    async def _claim(self) -> int:
        reply: Any = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=CLAIM_IDLE_MS,
            start_id="0-0",
            count=BATCH,
        )
        entries: list[Entry] = reply[1] if reply else []
        if entries:
            self.stats.inc("claimed", len(entries))
            self._last_claim_s = 0.0  # there may be more
        return await self._count(entries)

    async def _count(self, entries: list[Entry]) -> int:
        """Each CDR through the event rules, then acknowledged (a bad one too: counted).
        Up to IN_FLIGHT CDRs at once, queued in stream order into the tick's pipeline:
        one after the other took a round trip (an event-loop tick) each, and a daemon
        under load counted fewer CDRs a second than its calls ended (docs/fraud-cost.md
        "Nineteenth round"). A CDR counts once whatever its order (fraud_event's dedupe)."""
        if not entries:
            return 0
        cdrs: list[tuple[CDR, str]] = []
        for entry_id, fields in entries:
            raw = fields.get(b"cdr") if fields else None  # None: trimmed meanwhile
            try:
                cdr = CDR.unpack(raw) if raw is not None else None
            except (ValueError, TypeError) as exc:
                log.warning("fraud events: entry %s not a CDR: %s", entry_id.decode(), exc)
                cdr = None
            if cdr is None:
                self.stats.inc("skipped")
            else:
                cdrs.append((cdr, entry_id.decode()))
        for start in range(0, len(cdrs), IN_FLIGHT):
            chunk = cdrs[start : start + IN_FLIGHT]
            done = await asyncio.gather(
                *(self.fraud.cdr(cdr, entry_id) for cdr, entry_id in chunk),
                return_exceptions=True,
            )
            for outcome in done:  # every one ran; the first error fails the batch (retried)
                if isinstance(outcome, BaseException):
                    raise outcome
            self.stats.inc("counted", len(chunk))
        await self.redis.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))
        return len(entries)

    async def drain(self) -> int:
        """Count what the stream holds now (tests): every batch until none is left."""
        total = 0
        while True:
            handled = await self.step(block=False)
            total += handled
            if handled == 0:
                return total


async def drop_group(redis: Any, group: str, stream: str = CDR_STREAM) -> bool:
    """Remove the fraud group (fraud turned off): True when there was one."""
    try:
        return bool(await redis.xgroup_destroy(stream, group))
    except ResponseError:
        return False  # no stream yet


class FraudOff:
    """[fraud] enabled = false: no rules, and no consumer group holding back the trim of
    the CDR stream (one left by an earlier run with fraud on is removed at start)."""

    name = "fraud-events"

    def __init__(self, redis: Any, group: str) -> None:
        self.redis = redis
        self.group = group

    async def start(self) -> None:
        if await drop_group(self.redis, self.group):
            log.warning("fraud off: removed its CDR consumer group %r", self.group)
        else:
            log.info("fraud-events not started ([fraud] enabled = false)")

    async def stop(self) -> None:
        return None
